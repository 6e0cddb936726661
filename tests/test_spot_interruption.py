"""A Spot interruption notice mid-burst loses nothing (issue 24 item 2).

The stack is real (moto over HTTP, a web process, the scaler launching Spot instances with local
worker processes: tests/chaos.py's, without its faults); every worker watches the tests' IMDSv2
stand-in, which serves an interruption
notice to the workers alive while a burst is being answered. Those workers stop receiving,
finish or give back what they hold and exit; the scaler terminates their instances and launches
the replacement in the same decision; every request gets exactly one answer.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from runtime.resources import NOTICE_AT_TAG
from tests.chaos import ChaosStack, Tally, ask
from tests.http_client import stem, variants
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e  # starts processes

BURST = 160


class DecisionWatch:
    """Every decision record /status shows while the test runs (it keeps only the last few)."""

    def __init__(self, url: str):
        self.url, self.seen, self._stop = url, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.2):
            try:
                decisions = requests.get(self.url, timeout=10).json()["decisions"]
            except (requests.RequestException, ValueError, KeyError):
                continue
            for record in decisions:
                self.seen[(record["at"], record["text"])] = record

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join()
        return sorted(self.seen.values(), key=lambda record: record["at"])


def _tags(ec2, iid: str) -> dict[str, str]:
    reply = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in reply.get("Tags", [])}


def _noticed(stack: ChaosStack) -> list[str]:
    """The fleet's instances (terminated ones too) whose worker reported a notice."""
    return [i for i in stack.instances() if NOTICE_AT_TAG in _tags(stack.ec2, i)]


@pytest.mark.timeout(600)
def test_an_interruption_notice_mid_burst_loses_and_duplicates_nothing(moto_endpoint, tmp_path):
    stack = ChaosStack(
        moto_endpoint,
        tmp_path,
        FLEET_MARKET="spot",
        # A local launch is ready in seconds: with the 40 s default the policy would rightly
        # let the survivor clear the burst alone, and there would be no replacement to see.
        EXPECTED_BOOT_NEW_S="2",
    )
    images = variants(BURST)
    tally = Tally()
    try:
        stack.start(webs=1)
        watch = DecisionWatch(f"http://127.0.0.1:{stack.status_port}/status")
        until = time.monotonic() + 300
        with ThreadPoolExecutor(max_workers=BURST) as pool:
            futures = []
            for name, data in images:
                request_id = os.urandom(16).hex()
                tally.sent[request_id] = (name, data)
                futures.append(pool.submit(ask, stack.urls, request_id, name, data, tally, until))
            # Mid-burst: workers are answering and most of the burst still waits.
            wait_until(lambda: len(tally.answers) >= 10, "the first answers", 240, 0.05)
            assert stack.imds.give_notice() >= 1  # the tokens of the workers running now
            wait_until(lambda: _noticed(stack), "a worker to report its notice", 60)
            for future in futures:
                future.result()
        noticed = _noticed(stack)
        decisions = watch.stop()
        counts = {"lost": 0, "duplicated": 0}
        counts["lost"] = sum(1 for i in tally.sent if not tally.answers.get(i))
        counts["duplicated"] = sum(1 for bodies in tally.answers.values() if len(bodies) > 1)
        right = all(
            stem(body["filename"]) == stem(tally.sent[i][0])
            for i, bodies in tally.answers.items()
            for body in bodies
        )
        scaler_log = (tmp_path / "scaler.log").read_text()
    finally:
        stack.stop()
    print("interruption report:", counts, "noticed:", noticed)
    assert counts == {"lost": 0, "duplicated": 0}, counts
    assert right
    # The workers under notice left by themselves, on the notice.
    assert "notice of spot interruption" in scaler_log
    # The decision that saw the notice terminated those instances and launched their
    # replacement at once: the instance was not waited for.
    replaced = [d for d in decisions if d.get("notice")]
    assert replaced, [d["text"] for d in decisions]
    assert {iid for d in replaced for iid in d["notice"]} <= set(noticed)
    first = replaced[0]
    assert set(first["notice"]) <= set(first["actions"]["terminate"])
    assert first["actions"]["launch"] >= 1, first["text"]
    assert all("spot" in note for note in first.get("launched", ["spot"]))
