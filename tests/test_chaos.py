"""Chaos with the scaler running (issue 11 item 3): lost 0, duplicated 0, wrong labels 0, for
interactive and asynchronous uploads alike (issue 27), and for batch jobs: each finished, one
row per image, none twice (issue 26).

`make test` runs a short version (CHAOS_S, 75 s of faults); `make soak` runs it for 10 minutes.
Expected labels come from the same model run in this process on the same bytes.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from runtime.settings import Settings
from tests.chaos import FAULTS, ChaosStack, Tally, ask, ask_async, ask_job
from tests.http_client import variants

CHAOS_S = float(os.environ.get("CHAOS_S", "75"))
SEED = int(os.environ.get("CHAOS_SEED", "11"))


def _reference_labels(images: list[tuple[str, bytes]]) -> dict[bytes, str]:
    from worker.imaging import decode
    from worker.models import load_classifier

    settings = Settings()
    classifier = load_classifier(
        settings.model, settings.preprocess, 1, optimize=settings.model_optimize
    )
    tensors = [classifier.prepare(decode(data)) for _, data in images]
    return {
        data: top5[0][0]
        for (_, data), top5 in zip(images, classifier.classify(tensors), strict=True)
    }


def _wait(condition, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


# The faults, then up to 300 s for the last answers and 270 s for the fleet to drain.
@pytest.mark.timeout(int(CHAOS_S) + 900)
def test_chaos_with_the_scaler_running_loses_nothing(moto_endpoint, tmp_path):
    rng = random.Random(SEED)
    images = variants(30)
    expected = _reference_labels(images)
    stack = ChaosStack(moto_endpoint, tmp_path)
    tally, stop = Tally(), threading.Event()

    def chaos():
        order = []
        while not stop.wait(rng.uniform(3.0, 6.0)):
            if not order:
                order = list(FAULTS)
                rng.shuffle(order)
            fault = order.pop()
            if not stack.one_fault(rng, fault):  # nothing running to hit: try it again later
                order.insert(0, fault)

    try:
        stack.start()
        started = time.monotonic()
        until = started + CHAOS_S + 300  # every request has this long to get its answer
        chaos_thread = threading.Thread(target=chaos, name="chaos", daemon=True)
        chaos_thread.start()
        with ThreadPoolExecutor(max_workers=96) as pool:
            futures = []
            while time.monotonic() - started < CHAOS_S:
                for _ in range(rng.randint(6, 18)):  # a burst; some bytes repeat (cache hits)
                    request_id = os.urandom(16).hex()
                    name, data = rng.choice(images)
                    tally.sent[request_id] = (name, data)
                    # A quarter of the clients ask asynchronously and read their result later.
                    client = ask_async if rng.random() < 0.25 else ask
                    futures.append(
                        pool.submit(client, stack.urls, request_id, name, data, tally, until)
                    )
                if rng.random() < 0.5:  # a batch job of a few images beside the burst
                    picked = rng.sample(images, rng.randint(3, 8))
                    members = [(f"{i:02d}-{name}", data) for i, (name, data) in enumerate(picked)]
                    futures.append(pool.submit(ask_job, stack.urls, members, tally, until))
                time.sleep(rng.uniform(2.0, 8.0))  # idle
            stop.set()
            chaos_thread.join()
            for future in futures:
                future.result()
        counts = {**tally.counts(expected), **tally.job_counts(expected)}
        # Idle again: the scaler takes the fleet to 0 running, and every worker drains.
        fleet_idle = _wait(lambda: not stack.instances("pending", "running"), 180)
        no_workers = _wait(lambda: not stack.worker_pids(), 90)
        report = {
            **counts,
            "faults": dict(stack.events),
            "statuses": {str(k): v for k, v in tally.statuses.items()},
            "fleet_idle": fleet_idle,
            "orphan_workers": len(stack.worker_pids()),
            "chaos_s": CHAOS_S,
        }
        print("chaos report:", json.dumps(report, sort_keys=True))
        (tmp_path / "chaos-report.json").write_text(json.dumps(report, indent=2))
    finally:
        stop.set()
        stack.stop()
    assert counts["lost"] == 0, report
    assert counts["duplicated"] == 0 and counts["misdirected"] == 0, report
    assert counts["wrong_labels"] == 0, report
    # Every batch job finished with one row per member, none twice, none mislabelled, none failed.
    assert counts["jobs"] > 0 and counts["jobs_unfinished"] == 0, report
    assert counts["job_rows_missing"] == counts["job_rows_duplicated"] == 0, report
    assert counts["job_wrong_labels"] == counts["job_rows_failed"] == 0, report
    assert fleet_idle and no_workers, report
    assert set(stack.events) == set(FAULTS), report  # every kind of fault happened
