"""What a test reads of a running process from /proc (Linux): descriptors, memory, children."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def children(pid: int, module: str) -> list[int]:
    """Child processes of `pid` started as `python -m <module>`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if ppid == pid and [b"-m", module.encode()] == argv[1:3]:
            found.append(int(entry.name))
    return found


class PeakSampler:
    """Samples a process's descriptors and RSS in a thread; `peak_fds`/`peak_rss_mb` at the end."""

    def __init__(self, pid: int, every_s: float = 0.1):
        self.pid, self._every_s = pid, every_s
        self.peak_fds, self.peak_rss_mb = 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                self.peak_fds = max(self.peak_fds, open_descriptors(self.pid))
                self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.pid))
            except OSError:
                return  # the process is gone: the test sees it die
            if self._stop.wait(self._every_s):
                return
