"""The machine a run measured, and the CPU seconds each process spent in a timed window."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def describe() -> dict:
    import torch  # only for its version: the harness itself runs no model

    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads); None means this process."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of stat (utime, stime), counted after the ")" that ends the name.
    return (int(fields[11]) + int(fields[12])) * _TICK_S


class CpuMeter:
    """CPU seconds per named process between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]):
        self._pids = pids
        self._before: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._before = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        return {
            name: round(cpu_seconds(pid) - self._before[name], 2)
            for name, pid in self._pids.items()
        }
