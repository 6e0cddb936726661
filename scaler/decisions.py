"""The scaler's decision records: what /status keeps and the dashboard words as sentences."""

from __future__ import annotations

import time

from scaler.plan import Actions
from scaler.policies import Decision, Observation


def decision_record(
    at: float,
    policy: str,
    obs: Observation | None,
    decision: Decision | None,
    actions: Actions | None,
) -> dict:
    """One /status decision: what was seen, the rule that decided and why, what was done.

    {"at": epoch s, "time": "HH:MM:SS", "policy", "ok": false when a read or an action failed,
     "code": the rule ("drain-projection", "keep-up", "idle", "overloaded", ..., or
     "<what>-error"), "reason": one line for people, "desired", "raw": the count before the
     quiet period and the limits, "inputs": {visible, in_flight,
     capacity, warm, arrival_rate_img_s, steady_rate_img_s, throughput_img_s, idle_s,
     ready_in_s: [...]}, "facts": the rule's own numbers, "actions": {start: [ids], launch: n,
     stop: [ids], terminate: [ids]}, "text": the log line}
    """
    record: dict = {
        "at": round(at, 3),
        "time": time.strftime("%H:%M:%S", time.localtime(at)),
        "policy": policy,
        "ok": True,  # a failed tick or action says so over this record (scaler.service)
        "code": decision.code if decision else "",
        "reason": decision.reason if decision else "",
        "desired": decision.desired if decision else None,
        "raw": decision.raw if decision else None,  # what the load alone asked for
        "inputs": None,
        "facts": dict(decision.facts) if decision else {},
        "actions": None,
    }
    if obs is not None:
        record["inputs"] = {
            "visible": obs.visible,
            "in_flight": obs.in_flight,
            "capacity": obs.capacity,
            "warm": obs.warm,
            "arrival_rate_img_s": round(obs.arrival_rate_img_s, 3),
            "steady_rate_img_s": round(obs.steady_rate_img_s, 3),
            "throughput_img_s": round(obs.throughput_img_s, 3),
            "idle_s": round(obs.idle_s, 1),
            "ready_in_s": [round(r, 1) for r in obs.ready_in_s],
            "paid_left_s": [round(r, 1) for r in obs.paid_left_s],
        }
    if actions is not None:
        record["actions"] = {
            "start": list(actions.start),
            "launch": actions.launch,
            "stop": list(actions.stop),
            "terminate": list(actions.terminate),
            "spares": actions.spares,
        }
    return record
