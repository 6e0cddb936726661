"""Print pyproject.toml's dependencies as requirement lines, for `pip install -r` in an image.

Images install dependencies from pyproject.toml alone, before the source is copied, so that a
code change does not rebuild the dependency layers. `--only` and `--exclude` split the list:
the worker installs torch from PyTorch's own index first; the web image leaves torch out.

    python requirements.py pyproject.toml --only torch,torchvision
    python requirements.py pyproject.toml --exclude torch,torchvision,timm
"""

from __future__ import annotations

import argparse
import re
import sys

import tomllib

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: dict, only: set[str], exclude: set[str]) -> list[str]:
    lines = []
    for requirement in pyproject["project"]["dependencies"]:
        match = _NAME.match(requirement)
        if match is None:
            raise ValueError(f"cannot read requirement {requirement!r}")
        name = _canonical(match.group(1))
        if (only and name not in only) or name in exclude:
            continue
        lines.append(requirement)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--only", default="", help="comma-separated names to keep")
    parser.add_argument("--exclude", default="", help="comma-separated names to drop")
    args = parser.parse_args(argv)
    with open(args.pyproject, "rb") as file:
        pyproject = tomllib.load(file)
    only = {_canonical(n) for n in args.only.split(",") if n.strip()}
    exclude = {_canonical(n) for n in args.exclude.split(",") if n.strip()}
    print("\n".join(requirements(pyproject, only, exclude)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
