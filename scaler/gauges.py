"""What the scaler measures: queue depths from SQS, per-worker throughput from CloudWatch (where
no worker tells it in its usage tag: scaler.estimates.reported_rate)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from runtime import sqs
from runtime.cloudwatch import read_throughput
from runtime.failures import describe
from runtime.retry import Backoff, retry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    dlq: int
    job_visible: int = 0  # the batch-job lane (see scaler.lanes)
    job_in_flight: int = 0

    @property
    def job_load(self) -> int:
        return self.job_visible + self.job_in_flight


# The dead-letter queue's depth is only shown (the policy never reads it): read it this often,
# not every tick. SQS bills each request; this one was a third of an idle scaler's.
DLQ_REFRESH_S = 30.0


class QueueGauge:
    """Reads the request queue's load and the dead-letter queue's depth."""

    def __init__(
        self,
        sqs,
        request_queue: str,
        dead_letter_queue: str,
        job_queue: str | None = None,
        *,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen
        sleep: Callable[[float], None] = time.sleep,
        dlq_refresh_s: float = DLQ_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._sqs = sqs
        self._names = (request_queue, dead_letter_queue)
        self._urls: tuple[str, str] | None = None
        self._dlq_refresh_s, self._clock = dlq_refresh_s, clock
        self._dlq: tuple[float, int] | None = None  # (read at, depth)
        self._jobs = JobLaneGauge(sqs, job_queue) if job_queue else None
        self._backoff = backoff
        self._sleep = sleep

    def read(self) -> QueueDepth:
        def read_once() -> QueueDepth:
            if self._urls is None:
                # Looked up until found: the queues may be created after the scaler starts.
                request, dlq = (
                    self._sqs.get_queue_url(QueueName=n)["QueueUrl"] for n in self._names
                )
                self._urls = (request, dlq)
            request = sqs.read_depth(self._sqs, self._urls[0])
            now = self._clock()
            if self._dlq is None or now - self._dlq[0] >= self._dlq_refresh_s:
                self._dlq = (now, sqs.read_depth(self._sqs, self._urls[1]).total)
            jobs = self._jobs.read() if self._jobs else sqs.Depth(0, 0)
            return QueueDepth(
                request.visible, request.in_flight, self._dlq[1], jobs.visible, jobs.in_flight
            )

        try:
            return retry(read_once, "read queue depth", self._backoff, self._sleep)
        except ClientError:
            self._urls = None  # a queue deleted and made again has a new URL
            raise


class JobLaneGauge:
    """The job queue's depth; a deployment provisioned without one reads as empty."""

    def __init__(self, sqs_client, name: str):
        self._sqs, self._name = sqs_client, name
        self._url: str | None = None

    def read(self) -> sqs.Depth:
        if self._url is None:
            try:
                self._url = self._sqs.get_queue_url(QueueName=self._name)["QueueUrl"]
            except ClientError:
                return sqs.Depth(0, 0)
        try:
            return sqs.read_depth(self._sqs, self._url)
        except ClientError:
            self._url = None  # deleted and made again: look it up next time
            raise


@dataclass(frozen=True)
class Throughput:
    img_s: float
    measured: bool  # False: the configured default, no worker has reported yet
    workers: int = 0  # how many workers' reports it comes from, where known (usage tags)


class ThroughputGauge:
    """Per-worker images/s: the workers' recent reports, else the configured default.

    CloudWatch is asked at most once per refresh_s; it is billed per request and reports move
    slowly (one a minute per worker is plenty).
    """

    def __init__(
        self,
        cloudwatch,
        fleet_name: str,
        default_img_s: float,
        *,
        refresh_s: float = 60.0,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._cloudwatch = cloudwatch
        self._fleet = fleet_name
        self._default = Throughput(default_img_s, measured=False)
        self._refresh_s = refresh_s
        self._window_s = window_s
        self._clock = clock
        self._last: Throughput = self._default
        self._read_at: float | None = None

    @property
    def last(self) -> Throughput:
        """The latest reading (or the default), without asking CloudWatch."""
        return self._last

    def read(self) -> Throughput:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < self._refresh_s:
            return self._last
        self._read_at = now
        try:
            img_s = read_throughput(self._cloudwatch, self._fleet, self._window_s)
        except (ClientError, BotoCoreError) as error:
            # Sizing on the last known rate beats not sizing at all.
            log.warning(
                "throughput unreadable (%s); using %.1f img/s", describe(error), self._last.img_s
            )
            return self._last
        self._last = self._default if img_s is None or img_s <= 0 else Throughput(img_s, True)
        return self._last
