"""argparse pieces every command line of the project shares (loadgen, the simulator): one-line
errors instead of argparse's usage block, and number types that refuse nan, inf and the sign."""

from __future__ import annotations

import argparse
import math

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line instead of argparse's usage block, like every other bad-input message.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def number(kind=float):
    """An argparse type: a finite number of `kind` (int or float)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def positive(kind=float):
    """An argparse type: a finite number of `kind` above 0."""
    return _bounded(kind, lambda value: value > 0, "must be > 0")


def non_negative(kind=float):
    """An argparse type: a finite number of `kind`, 0 or more."""
    return _bounded(kind, lambda value: value >= 0, "must be >= 0")


def _bounded(kind, ok, rule: str):
    as_number = number(kind)

    def parse(text: str):
        value = as_number(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse
