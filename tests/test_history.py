"""The web tier's status history: what a reloaded page draws its charts from."""

from __future__ import annotations

import falcon.testing

from runtime.settings import Settings
from tests.support.clock import Clock
from web.app import create_app
from web.history import StatusHistory


def status(visible: int, running: int, decisions=()) -> dict:
    return {
        "queue": {"visible": visible, "in_flight": 0, "dlq": 0},
        "fleet": {"pending": 0, "running": running, "stopping": 0, "stopped": 0},
        "decisions": list(decisions),
    }


def test_samples_cover_the_window_and_age_out():
    clock = Clock()
    history = StatusHistory(window_s=10, interval_s=2, clock=clock)
    for i in range(8):
        history.record(status(visible=i, running=i % 3))
        clock.now += 2
    doc = history.document()
    assert [s["visible"] for s in doc["samples"]] == [3, 4, 5, 6, 7]  # the last 10 s only
    assert doc["samples"][-1]["fleet"]["running"] == 7 % 3
    assert doc["samples"][-1]["t"] == 1_014.0
    assert (doc["window_s"], doc["interval_s"]) == (10, 2)


def test_each_decision_is_kept_once_and_ages_out_with_the_window():
    clock = Clock()
    history = StatusHistory(window_s=10, interval_s=2, clock=clock)
    record = {"at": clock.now + 0.5, "text": "desired=2", "desired": 2}
    later = {"at": clock.now + 11, "text": "desired=3", "desired": 3}
    for _ in range(3):  # the scaler repeats its recent decisions in every snapshot
        history.record(status(5, 1, [record, later]))
        clock.now += 2
    assert history.document()["decisions"] == [record, later]
    clock.now += 10
    history.record(status(0, 0))
    assert history.document()["decisions"] == [later]  # the first aged out with the window


def test_served_at_status_history():
    history = StatusHistory()
    history.record(status(4, 2))
    app = create_app(
        Settings(), gateway=None, ready=lambda: None, status=lambda: {}, history=history
    )
    answer = falcon.testing.TestClient(app).simulate_get("/status/history")
    assert answer.status_code == 200
    assert answer.json["samples"][0]["visible"] == 4
    assert answer.json["samples"][0]["fleet"]["running"] == 2
