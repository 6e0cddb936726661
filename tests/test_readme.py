"""The README's promises that can drift: its commands, the paths and settings it names, the table.

Every line of every code block in the README is a command a newcomer will paste. Each kind is
checked against the real thing: make targets against the Makefile, `python -m` commands are
parsed by the real module's argument parser (and `--help` run), curl commands run as written
against the real web app on a free port (a stand-in gateway answers instead of the workers), pip
installs name the project's own dependencies. A command of a kind not listed here fails the test,
so a new README command needs a check.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from runtime.settings import Settings, markdown_table
from tests.conftest import ROOT, free_port
from tests.support.fake_gateway import FakeGateway
from tests.support.readme import README, README_BASE, code_blocks, shell_commands
from web.app import create_app

SETTINGS_DOC = (ROOT / "docs" / "settings.md").read_text()


def test_readme_starts_with_make_up_and_make_test():
    assert code_blocks(README)[0] == ["make up", "make test"]


def test_readme_stays_short():
    assert len(README.splitlines()) <= 120


def test_settings_table_is_current():
    assert markdown_table() in SETTINGS_DOC


def test_every_linked_or_named_path_exists():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    named = re.findall(r"`((?:images|docs|run1|\.run|\.venv)/[^`\s]*)`", README)
    paths = [p for p in links + named if not p.startswith("http")]
    assert links, "the README links its docs pages"
    missing = [p for p in paths if not (ROOT / p).exists() and not p.startswith(("run1", ".run"))]
    assert not missing, f"README names paths that do not exist: {missing}"


def test_every_setting_named_is_a_real_setting():
    names = set(re.findall(r"`(?:[A-Z_]+=\w+ )?([A-Z][A-Z0-9_]{3,})`", README))
    known = {name.upper() for name in Settings.__dataclass_fields__}
    assert names and names <= known, names - known


# ---- each kind of command, checked as written ----------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web_base():
    """The real web app (validation hooks, routes) over real HTTP; the gateway is a stand-in."""
    app = create_app(Settings(), gateway=FakeGateway(), ready=lambda: None, status=lambda: {})
    server = make_server("127.0.0.1", free_port(), app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _with_base(argv: list[str], base: str) -> list[str]:
    return [a.replace(README_BASE, base) for a in argv]


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))


def _check_make(argv, base):
    assert argv[1] in _make_targets(), argv


def _check_python_module(argv, base):
    # `.venv/bin/python -m MODULE ARGS`: the module's own parser accepts the arguments as
    # written, and its --help runs in this venv (the README's interpreter).
    assert argv[1] == "-m", argv
    module, args = argv[2], argv[3:]
    if module == "venv":
        assert args == [".venv"]  # the venv the Makefile uses
        return
    if module == "pip":
        assert args[:1] == ["install"], args
        wanted = {a for a in args[1:] if not a.startswith("-") and not a.startswith("http")}
        required = importlib.metadata.requires("elastic-classifier") or []
        deps = {re.split(r"[<>=!\[ ;]", d)[0] for d in required if "extra ==" not in d}
        assert wanted and wanted <= deps, f"pre-installs must be the project's own: {wanted}"
        return
    if module == "loadgen":
        from loadgen.cli import build_parser

        parsed = build_parser().parse_args(args)
        assert (ROOT / parsed.image_folder).is_dir()
    help_run = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert help_run.returncode == 0, help_run.stderr


def _check_curl(argv, base):
    answer = subprocess.run(
        [*_with_base(argv, base), "--silent", "--show-error", "--fail-with-body"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert answer.returncode == 0, (argv, answer.stdout, answer.stderr)
    assert "tabby" in answer.stdout


def _check_open(argv, base):
    # Not run (it would start a browser); the address it opens must serve the page.
    import urllib.request

    with urllib.request.urlopen(_with_base(argv, base)[1], timeout=10) as page:  # noqa: S310
        assert page.status == 200 and b"<html" in page.read()


CHECKS = {
    "make": _check_make,
    "python3": _check_python_module,
    ".venv/bin/python": _check_python_module,
    "curl": _check_curl,
    "xdg-open": _check_open,
}


@pytest.mark.e2e  # starts processes
@pytest.mark.parametrize("argv", shell_commands(), ids=shlex.join)
def test_readme_command_runs_as_written(argv, web_base):
    check = CHECKS.get(argv[0])
    assert check is not None, f"no check for README command {shlex.join(argv)!r}: add one"
    check(argv, web_base)


def test_see_it_scale_uses_unique_uploads():
    scale = README.split("## See it scale", 1)[1].split("\n## ", 1)[0]
    commands = [c for block in code_blocks(scale) for c in block]
    assert any(c.startswith(".venv/bin/python -m loadgen --unique") for c in commands), commands
