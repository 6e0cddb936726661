"""Counts the AWS requests one process actually sends, by service and operation.

A botocore `before-send` hook on each client made by runtime.clients: it fires once per HTTP
attempt, so a retried call counts each time it was sent, as AWS bills it. The counts feed the
tiers' /metrics and, through runtime.costs, the money figures in /status.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping

from prometheus_client.core import CounterMetricFamily

# S3's request classes: these bill at the PUT rate, DELETE is free, the rest at the GET rate.
_S3_PUT = frozenset(
    {
        "PutObject",
        "CopyObject",
        "PostObject",
        "ListObjects",
        "ListObjectsV2",
        "ListBuckets",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "PutBucketLifecycleConfiguration",
        "CreateBucket",
    }
)
_S3_FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})
_CLOUDWATCH = {
    "GetMetricStatistics": "cloudwatch-get",
    "GetMetricData": "cloudwatch-get",
    "PutMetricData": "cloudwatch-put",
}


def price_class(service: str, operation: str) -> str:
    """The runtime.prices request class one API call is billed in."""
    if service == "s3":
        if operation in _S3_FREE:
            return "s3-free"
        return "s3-put" if operation in _S3_PUT else "s3-get"
    if service == "sqs":
        return "sqs"
    if service == "cloudwatch":
        return _CLOUDWATCH.get(operation, "cloudwatch-list")
    return "free"


class RequestCounter:
    """Requests sent by this process's clients: {(service, operation): count}."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def attach(self, client):
        """Count every request `client` sends from now on; returns the client."""
        service = client.meta.service_model.service_name  # "s3", "sqs", "cloudwatch", "ec2"

        def sent(event_name: str, **_) -> None:
            # "before-send.<service id>.<Operation>"; returning None lets the request go.
            with self._lock:
                self._counts[(service, event_name.rsplit(".", 1)[-1])] += 1

        client.meta.events.register(
            f"before-send.{client.meta.service_model.service_id.hyphenize()}", sent
        )
        return client

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def by_class(self) -> dict[str, int]:
        return by_class(self.counts().items())


def by_class(counts: Iterable[tuple[tuple[str, str], int]]) -> dict[str, int]:
    """{price class: requests} of {(service, operation): requests} items."""
    classes: Counter[str] = Counter()
    for (service, operation), n in counts:
        classes[price_class(service, operation)] += n
    return dict(classes)


def add(*parts: Mapping[str, int]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for part in parts:
        total.update({k: int(v) for k, v in part.items()})
    return dict(total)


class RequestCollector:
    """The counter as `classifier_aws_requests_total{service, operation}` for a tier's /metrics."""

    def __init__(self, counter: RequestCounter):
        self._counter = counter

    def describe(self):
        return []  # collected lazily

    def collect(self):
        family = CounterMetricFamily(
            "classifier_aws_requests",
            "AWS requests this process sent (each attempt), by service and operation",
            labels=["service", "operation"],
        )
        for (service, operation), n in sorted(self._counter.counts().items()):
            family.add_metric([service, operation], n)
        yield family
