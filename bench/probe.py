"""The AWS emulator's cost per call: the floor under every hop of an upload.

Each kind of call an upload makes is timed alone, one at a time, on the quiet stack: its p50
latency, the emulator's CPU per call, and the client's (boto3) CPU per call.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from bench.machine import cpu_seconds

RESULT_JSON = b'{"id":"' + b"0" * 32 + b'","label":"tabby","top5":[' + b"0" * 400 + b"]}"


@dataclass(frozen=True)
class CallCost:
    p50_ms: float
    emulator_cpu_ms: float
    client_cpu_ms: float

    def as_dict(self) -> dict:
        return {
            "p50_ms": round(self.p50_ms, 1),
            "emulator_cpu_ms": round(self.emulator_cpu_ms, 1),
            "client_cpu_ms": round(self.client_cpu_ms, 1),
        }


def aws_call_costs(
    s3, sqs, moto_pid: int, bucket: str, queue_name: str, photo: bytes, calls: int
) -> dict[str, dict]:
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    keys = [f"probe/{i}" for i in range(calls)]
    costs: dict[str, CallCost] = {}
    try:
        costs["s3_put_photo"] = _cost(
            moto_pid, keys, lambda k: s3.put_object(Bucket=bucket, Key=k, Body=photo)
        )
        costs["s3_get_photo"] = _cost(
            moto_pid, keys, lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read()
        )
        costs["s3_put_result"] = _cost(
            moto_pid, keys, lambda k: s3.put_object(Bucket=bucket, Key=k, Body=RESULT_JSON)
        )
        costs["sqs_send"] = _cost(
            moto_pid, keys, lambda k: sqs.send_message(QueueUrl=queue_url, MessageBody=k * 20)
        )
        receipts: list[str] = []
        costs["sqs_receive"] = _cost(
            moto_pid, keys, lambda k: receipts.extend(_receive_one(sqs, queue_url))
        )
        costs["sqs_delete"] = _cost(
            moto_pid,
            receipts,
            lambda r: sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=r),
        )
    finally:
        sqs.delete_queue(QueueUrl=queue_url)
    return {name: cost.as_dict() for name, cost in costs.items()}


def _receive_one(sqs, queue_url: str) -> list[str]:
    messages = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1
    ).get("Messages", [])
    return [m["ReceiptHandle"] for m in messages]


def _cost(moto_pid: int, items: list, call) -> CallCost:
    latencies = []
    moto_before, client_before = cpu_seconds(moto_pid), time.thread_time()
    for item in items:
        started = time.perf_counter()
        call(item)
        latencies.append(time.perf_counter() - started)
    count = max(1, len(items))
    return CallCost(
        p50_ms=statistics.median(latencies) * 1e3 if latencies else float("nan"),
        emulator_cpu_ms=(cpu_seconds(moto_pid) - moto_before) * 1e3 / count,
        client_cpu_ms=(time.thread_time() - client_before) * 1e3 / count,
    )
