"""The README's promises that can drift: its first commands, and the settings table."""

from __future__ import annotations

from runtime.settings import markdown_table
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
SETTINGS_DOC = (ROOT / "docs" / "settings.md").read_text()


def test_readme_starts_with_make_up_and_make_test():
    block = README.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make up", "make test"]


def test_settings_table_is_current():
    assert markdown_table() in SETTINGS_DOC
