"""`python -m scaler.sim.unseen DIR [--seed N]`: write the unseen traces as CSV files in DIR.

One file per shape (scaler.sim.unseen.SHAPES), arrival times in seconds under the header `t`,
for `python -m scaler.sim --trace DIR/sine.csv ...`. The same seed writes the same files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtime.cli import OneLineParser
from scaler.sim.unseen import SHAPES, unseen_traces


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m scaler.sim.unseen", description=__doc__)
    parser.add_argument("dir", type=Path, help="folder to write the CSV files in (made if missing)")
    parser.add_argument("--seed", type=int, default=1, help="RNG seed of the draws")
    args = parser.parse_args(argv)
    try:
        args.dir.mkdir(parents=True, exist_ok=True)
        for trace in unseen_traces(args.seed):
            lines = ["t", *(f"{t:.3f}" for t in trace.arrivals)]
            (args.dir / f"{trace.name}.csv").write_text("\n".join(lines) + "\n")
    except OSError as error:
        parser.exit(2, f"{parser.prog}: error: {args.dir}: {error.strerror or error}\n")
    print(f"wrote {len(SHAPES)} traces to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
