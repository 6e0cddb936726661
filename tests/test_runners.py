"""The process runner with real processes: a stand-in worker traps SIGTERM like the real one."""

from __future__ import annotations

import os
import sys

import pytest

from runtime.settings import Settings
from scaler.runners import make_runner as make_runner_from
from scaler.runners.base import InstanceView
from scaler.runners.process import ProcessRunner
from tests.support.clock import Clock
from tests.support.stand_in_worker import STAND_IN, marks
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e  # starts processes


@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    out = tmp_path / "out"
    out.mkdir()
    return script, out


def make_runner(stand_in, mode="drain", **kwargs) -> ProcessRunner:
    script, out = stand_in
    env = {**os.environ, "MARK": "from-runner"}
    return ProcessRunner(env, [sys.executable, str(script), str(out), mode], **kwargs)


def running(iid: str, launched_at: float = 0.0, restarted: bool = False) -> InstanceView:
    return InstanceView(iid, "running", launched_at, restarted)


def test_one_worker_per_running_instance(stand_in):
    _, out = stand_in
    runner = make_runner(stand_in)
    try:
        fleet = [running("i-a"), running("i-b"), InstanceView("i-c", "stopped")]
        runner.reconcile(fleet)
        pids = runner.workers()
        assert set(pids) == {"i-a", "i-b"}
        for iid in ("i-a", "i-b"):
            (started,) = wait_until(lambda iid=iid: marks(out, iid, "started"), f"{iid} started")
            assert started.name == f"{iid}.{pids[iid]}.started"
            assert started.read_text() == "from-runner"  # the given environment is passed on
        runner.reconcile(fleet)
        runner.reconcile(fleet)
        assert runner.workers() == pids  # no duplicates on later ticks
        assert len(marks(out, "i-a", "started")) == 1
    finally:
        runner.close()


def test_stopped_instance_worker_drains_without_blocking_the_tick(stand_in):
    _, out = stand_in
    runner = make_runner(stand_in)
    try:
        runner.reconcile([running("i-a"), running("i-b")])
        wait_until(lambda: marks(out, "i-a", "started"), "i-a started")
        pid = runner.workers()["i-a"]
        runner.reconcile([InstanceView("i-a", "stopping"), running("i-b")])
        assert set(runner.workers()) == {"i-b"}
        assert runner.draining() == {"i-a": pid}
        wait_until(lambda: marks(out, "i-a", "drained"), "i-a drained")
        # A terminated instance vanishes from the listing; its worker drains the same way.
        wait_until(lambda: marks(out, "i-b", "started"), "i-b started")
        runner.reconcile([])
        wait_until(lambda: marks(out, "i-b", "drained"), "i-b drained")
        wait_until(lambda: (runner.reconcile([]), not runner.draining())[1], "workers reaped")
        assert runner.workers() == {}
    finally:
        runner.close()


def test_a_restarted_instance_waits_for_its_old_worker_to_exit(stand_in):
    _, out = stand_in
    runner = make_runner(stand_in, mode="stubborn", drain_timeout_s=3600)
    try:
        runner.reconcile([running("i-a")])
        wait_until(lambda: marks(out, "i-a", "started"), "i-a started")
        old = runner.workers()["i-a"]
        runner.reconcile([InstanceView("i-a", "stopped")])
        runner.reconcile([running("i-a", restarted=True)])
        # The stubborn worker is still draining: a second one would break one-per-instance.
        assert runner.workers() == {} and runner.draining() == {"i-a": old}
        os.kill(old, 9)
        wait_until(lambda: (runner.reconcile([running("i-a")]), runner.workers())[1], "restart")
        assert runner.workers()["i-a"] != old
    finally:
        runner.close()


def test_boot_delay_differs_for_new_and_restarted_instances(stand_in):
    clock = Clock(1_000.0)
    runner = make_runner(stand_in, boot_delay_new_s=40, boot_delay_start_s=10, clock=clock)
    try:
        fleet = [running("i-new", launched_at=1_000.0), running("i-old", 1_000.0, restarted=True)]
        runner.reconcile(fleet)
        assert runner.workers() == {}
        clock.now = 1_009.9
        runner.reconcile(fleet)
        assert runner.workers() == {}
        clock.now = 1_010.0
        runner.reconcile(fleet)
        assert set(runner.workers()) == {"i-old"}
        clock.now = 1_040.0
        runner.reconcile(fleet)
        assert set(runner.workers()) == {"i-new", "i-old"}
    finally:
        runner.close()


def test_a_worker_that_ignores_sigterm_is_killed_after_the_drain_timeout(stand_in):
    _, out = stand_in
    clock = Clock()
    runner = make_runner(stand_in, mode="stubborn", drain_timeout_s=30, clock=clock)
    try:
        runner.reconcile([running("i-a")])
        wait_until(lambda: marks(out, "i-a", "started"), "i-a started")
        process = runner._workers["i-a"]  # noqa: SLF001 - to read its exit status
        runner.reconcile([])
        clock.now += 29
        runner.reconcile([])
        assert process.poll() is None  # still inside its drain time
        clock.now += 1
        runner.reconcile([])
        assert wait_until(lambda: process.poll() is not None, "SIGKILL")
        assert process.returncode == -9
        assert not marks(out, "i-a", "drained")
        runner.reconcile([])
        assert runner.draining() == {}
    finally:
        runner.close()


def test_a_crashed_worker_is_replaced_after_a_pause(stand_in):
    _, out = stand_in
    clock = Clock()
    runner = make_runner(stand_in, clock=clock)
    try:
        runner.reconcile([running("i-a")])
        wait_until(lambda: marks(out, "i-a", "started"), "i-a started")
        first = runner._workers["i-a"]  # noqa: SLF001
        first.kill()
        first.wait()
        runner.reconcile([running("i-a")])
        assert runner.workers() == {}  # not in a tight loop
        clock.now += 5
        runner.reconcile([running("i-a")])
        assert set(runner.workers()) == {"i-a"} and runner.workers()["i-a"] != first.pid
    finally:
        runner.close()


def test_close_drains_every_worker(stand_in):
    _, out = stand_in
    runner = make_runner(stand_in)
    runner.reconcile([running("i-a"), running("i-b")])
    for iid in ("i-a", "i-b"):
        wait_until(lambda iid=iid: marks(out, iid, "started"), f"{iid} started")
    runner.close()
    assert runner.workers() == {} and runner.draining() == {}
    assert marks(out, "i-a", "drained") and marks(out, "i-b", "drained")


def test_an_unstartable_command_is_logged_not_raised(tmp_path):
    runner = ProcessRunner({}, [str(tmp_path / "no-such-worker")])
    runner.reconcile([running("i-a")])
    assert runner.workers() == {}
    runner.close()


def test_make_runner_follows_the_runner_setting():
    assert make_runner_from(Settings(runner="none"), {}) is None
    runner = make_runner_from(Settings(runner="process", visibility_timeout_s=45), {"A": "b"})
    assert isinstance(runner, ProcessRunner)
    assert runner._drain_timeout_s == 45.0  # noqa: SLF001
    runner.close()
