"""`python -m tests.support.file_trace MODULE`: run `python -m MODULE` and record which of the
project's files run code, by thread, between SIGUSR1 and SIGUSR2 (written as JSON to
FILE_TRACE_OUT at SIGUSR2). tests/test_upload_path.py traces one upload through the real web and
worker processes with it.

The profiler is installed before any thread starts (Python 3.11 cannot add one to a running
thread), and does nothing but return while no window is open.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import threading
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2]) + os.sep

_VENV = ROOT + ".venv" + os.sep
_window = threading.Event()
_seen: set[tuple[str, str]] = set()


def _profile(frame, event, arg):
    if event == "call" and _window.is_set():
        path = frame.f_code.co_filename
        if path.startswith(ROOT) and not path.startswith(_VENV):
            _seen.add((threading.current_thread().name, path[len(ROOT) :]))


def _open(signum, frame) -> None:
    _seen.clear()
    _window.set()


def _close(signum, frame) -> None:
    _window.clear()
    by_thread: dict[str, list[str]] = {}
    for thread, path in sorted(_seen):
        by_thread.setdefault(thread, []).append(path)
    Path(os.environ["FILE_TRACE_OUT"]).write_text(json.dumps(by_thread))


def main() -> None:
    module = sys.argv[1]
    signal.signal(signal.SIGUSR1, _open)
    signal.signal(signal.SIGUSR2, _close)
    threading.setprofile(_profile)
    sys.setprofile(_profile)
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
