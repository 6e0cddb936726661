"""The machine a run measured, and where its CPU went during a timed window.

On a shared machine the absolute numbers move with other people's load, so every timed window
also records the CPU seconds of each of our processes and of everything else on the machine.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
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


def worker_image_mb(image: str | None = None) -> float | None:
    """The worker image's size in MB where one was built on this machine (`make images`), else
    None: what every new instance pulls (issue 23's goal, <= 700 MB)."""
    import docker

    image = image or os.environ.get("WORKER_IMAGE", "elastic-classifier-worker:latest")
    try:
        size = docker.from_env(timeout=5).images.get(image).attrs["Size"]
    except docker.errors.DockerException:  # no engine here, or the image was not built
        return None
    return round(size / 1e6)


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


def runnable_wait_seconds(pid: int) -> float:
    """Seconds the process's live threads spent ready to run but without a core."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total_ns += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total_ns / 1e9


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (including time stolen by the hypervisor)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) * _TICK_S


@dataclass(frozen=True)
class CpuWindow:
    wall_s: float
    cpu_s: dict[str, float]  # per named process
    wait_s: dict[str, float]  # per named process: runnable but not running
    others_s: float  # busy CPU seconds of every process not named (other people's load)

    def as_dict(self) -> dict:
        return {
            "cpu_s": {k: round(v, 2) for k, v in self.cpu_s.items()},
            "runnable_wait_s": {k: round(v, 2) for k, v in self.wait_s.items()},
            "others_cpu_s": round(self.others_s, 2),
            "wall_s": round(self.wall_s, 2),
        }


class CpuMeter:
    """CPU seconds per named process, and of the rest of the machine, between start and stop."""

    def __init__(self, pids: dict[str, int | None]):
        self._pids = pids
        self._cpu: dict[str, float] = {}
        self._wait: dict[str, float] = {}
        self._busy = self._started = 0.0

    def start(self) -> CpuMeter:
        self._cpu = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._wait = self._waits()
        self._busy, self._started = machine_busy_seconds(), time.perf_counter()
        return self

    def stop(self) -> CpuWindow:
        wall_s = time.perf_counter() - self._started
        busy = machine_busy_seconds() - self._busy
        cpu = {name: cpu_seconds(pid) - self._cpu[name] for name, pid in self._pids.items()}
        wait = {name: value - self._wait[name] for name, value in self._waits().items()}
        return CpuWindow(wall_s, cpu, wait, max(0.0, busy - sum(cpu.values())))

    def _waits(self) -> dict[str, float]:
        return {
            name: runnable_wait_seconds(pid if pid is not None else os.getpid())
            for name, pid in self._pids.items()
        }
