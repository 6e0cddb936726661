"""Local processes as instances: one worker process per running fleet instance.

Emulated EC2 (moto) changes state at once, so this runner adds what a real machine would do:
an optional boot delay before the worker starts, and a drain when the instance goes away
(SIGTERM, the worker finishes its batch; SIGKILL if it has not exited by the drain timeout).
No call here waits for a worker: a tick must never stall on a slow drain.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from scaler.runners.base import InstanceView

log = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-m", "worker")
DRAIN_TIMEOUT_S = 30.0
RESTART_DELAY_S = 5.0  # a worker that dies on its own is restarted, but not in a tight loop


_PR_SET_PDEATHSIG = 1


def _term_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM it when the scaler dies, even by SIGKILL.

    Why: a scaler killed -9 cannot drain its workers; a restarted scaler starts new ones for
    the same instances, and the old ones would run on as orphans. With this they drain (warm
    stop: the batch in hand is finished) the moment their scaler is gone. Linux only.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the scaler died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Draining:
    process: subprocess.Popen
    kill_at: float
    killed: bool = False


class ProcessRunner:
    def __init__(
        self,
        env: Mapping[str, str],
        command: Sequence[str] = WORKER_COMMAND,
        *,
        boot_delay_new_s: float = 0.0,
        boot_delay_start_s: float = 0.0,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        cwd: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._env = dict(env)
        self._command = list(command)
        self._delay = {False: boot_delay_new_s, True: boot_delay_start_s}
        self._drain_timeout_s = drain_timeout_s
        self._cwd = cwd
        self._clock = clock
        self._workers: dict[str, subprocess.Popen] = {}
        self._draining: dict[str, _Draining] = {}
        self._not_before: dict[str, float] = {}  # restart holds after a crash
        self._booting: set[str] = set()

    def workers(self) -> dict[str, int]:
        """instance id -> pid of the live worker serving it."""
        return {iid: p.pid for iid, p in self._workers.items()}

    def draining(self) -> dict[str, int]:
        """instance id -> pid of a worker told to stop that has not exited yet."""
        return {iid: d.process.pid for iid, d in self._draining.items()}

    def reconcile(self, instances: list[InstanceView]) -> None:
        now = self._clock()
        self._reap(now)
        running = {i.instance_id: i for i in instances if i.state == "running"}
        for iid in list(self._workers):
            if iid not in running:
                self._drain(iid, now)
        for iid, instance in running.items():
            process = self._workers.get(iid)
            if process is not None and process.poll() is not None:
                log.warning("worker for %s exited by itself (rc %s)", iid, process.returncode)
                del self._workers[iid]
                self._not_before[iid] = now + RESTART_DELAY_S
            elif process is None:
                self._maybe_start(instance, now)
        # Forget instances that are gone, so their ids do not pile up.
        for iid in set(self._not_before) - set(running):
            del self._not_before[iid]
        self._booting &= set(running)

    def _maybe_start(self, instance: InstanceView, now: float) -> None:
        iid = instance.instance_id
        if iid in self._draining:
            return  # a machine does not run again before its last shutdown finished
        ready_at = max(
            instance.launched_at + self._delay[instance.restarted], self._not_before.get(iid, 0.0)
        )
        if now < ready_at:
            if iid not in self._booting:
                self._booting.add(iid)
                log.info("instance %s booting; worker starts in %.1fs", iid, ready_at - now)
            return
        self._booting.discard(iid)
        try:
            process = subprocess.Popen(
                self._command,
                env={**self._env, "INSTANCE_ID": iid},
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                # Own session: a Ctrl-C at the terminal reaches the scaler, which drains in order.
                start_new_session=True,
                preexec_fn=partial(_term_with_parent, os.getpid()),
            )
        except OSError as error:
            log.error("cannot start worker for %s: %s", iid, error)
            self._not_before[iid] = now + RESTART_DELAY_S
            return
        self._workers[iid] = process
        log.info("worker for %s started (pid %d)", iid, process.pid)

    def _drain(self, iid: str, now: float) -> None:
        process = self._workers.pop(iid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            log.info("worker for %s draining (pid %d)", iid, process.pid)
        self._draining[iid] = _Draining(process, kill_at=now + self._drain_timeout_s)

    def _reap(self, now: float) -> None:
        for iid, entry in list(self._draining.items()):
            if entry.process.poll() is not None:
                log.info("worker for %s exited (rc %s)", iid, entry.process.returncode)
                del self._draining[iid]
            elif now >= entry.kill_at and not entry.killed:
                log.warning("worker for %s still running after drain timeout; SIGKILL", iid)
                entry.process.kill()
                entry.killed = True

    def close(self) -> None:
        """SIGTERM every worker, wait up to the drain timeout, SIGKILL whatever remains."""
        now = self._clock()
        for iid in list(self._workers):
            self._drain(iid, now)
        deadline = time.monotonic() + self._drain_timeout_s
        for entry in self._draining.values():
            try:
                entry.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not drain in time; SIGKILL", entry.process.pid)
                entry.process.kill()
                entry.process.wait()
        self._draining.clear()
