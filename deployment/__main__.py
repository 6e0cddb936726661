"""`python -m deployment`: plan, deploy or tear down the service on real AWS."""

from __future__ import annotations

import argparse
import sys

from deployment.cli import add_commands
from runtime.logs import setup_logging
from runtime.settings import ConfigError, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployment", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"deployment: {error}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format, tier="deployment")
    return args.run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
