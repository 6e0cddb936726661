"""The README's code blocks as the commands a newcomer pastes (tests/test_readme.py checks each
kind; the compose test runs the curl lines against the compose stack)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()
README_BASE = "http://127.0.0.1:3000"


def code_blocks(text: str) -> list[list[str]]:
    """Each shell block's commands: comments dropped, backslash continuations joined.

    A block fenced as ```text (the diagram) is not shell and is left out.
    """
    blocks = []
    for lang, body in re.findall(r"^```([a-z]*)\n(.*?)^```", text, flags=re.M | re.S):
        if lang == "text":
            continue
        joined = body.replace("\\\n", " ")
        lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
        blocks.append([line for line in lines if line and not line.startswith("#")])
    return blocks


def shell_commands() -> list[list[str]]:
    return [shlex.split(line) for block in code_blocks(README) for line in block]
