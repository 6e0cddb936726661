"""What the stages carry: one received message (`Delivery`) and the batch it arrived in.

A delivery is one SQS delivery of a request message, not the request: SQS may deliver the same
request twice, and each delivery has its own receipt. (A batch *job* is something else: many
images under one job id, see runtime.messages.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from runtime.messages import Request, Result


@dataclass
class Delivery:
    """One received message on its way through the stages."""

    receipt: str
    request: Request | None = None
    data: bytes = b""
    sha256: str = ""  # of `data`: the web tier caches the result under this hash only
    served: object = None  # worker.served.Served: the model the request asked for
    tensor: object = None
    result: Result | None = None
    sent_at: float = 0.0  # epoch seconds SQS received the request
    retry: bool = False  # a transient failure: leave the message for redelivery
    # A job image already classified, or held in another delivery: delete the message, no work.
    nothing_to_do: bool = False
    late: bool = False  # its waiter gave up (504): classify and store for GET /results, no reply
    claimed: bool = False  # a job image this worker holds (see worker.jobitems)

    @property
    def runnable(self) -> bool:
        return self.request is not None and not (self.result or self.retry or self.nothing_to_do)


@dataclass
class Batch:
    deliveries: list[Delivery]
    lane: str  # the queue URL every message of the batch came from
    started: float = field(default_factory=time.perf_counter)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def receipts(self) -> list[str]:
        return [delivery.receipt for delivery in self.deliveries]

    def age_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1e3

    @property
    def runnable(self) -> list[Delivery]:
        return [delivery for delivery in self.deliveries if delivery.runnable]
