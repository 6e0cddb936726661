"""A stand-in for `python -m worker` that the runners start: it marks its start and its drain in
files (`<instance id>.<pid>.started`, `.drained`) and traps SIGTERM like the real worker, or
ignores it (mode "stubborn")."""

from __future__ import annotations

from pathlib import Path

STAND_IN = """
import os, signal, sys, time
from pathlib import Path

out, mode = Path(sys.argv[1]), sys.argv[2]
me = f"{os.environ['INSTANCE_ID']}.{os.getpid()}"

def on_term(signum, frame):
    if mode == "stubborn":
        return
    (out / f"{me}.drained").write_text("")
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
(out / f"{me}.started").write_text(os.environ.get("MARK", ""))
while True:
    time.sleep(0.05)
"""


def marks(out: Path, iid: str, kind: str) -> list[Path]:
    return sorted(out.glob(f"{iid}.*.{kind}"))
