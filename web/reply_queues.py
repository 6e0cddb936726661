"""Reply queues: each web process beats on its own, and sweeps queues whose owner died.

A web process killed with -9 cannot delete its reply queue. Every live process refreshes a
heartbeat tag; any process deletes a queue of the prefix whose heartbeat is older than the
configured age.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from runtime.periodic import Every
from runtime.resources import QUEUE_ENCRYPTION, REPLY_RETENTION_S

log = logging.getLogger(__name__)


def create_reply_queue(sqs, prefix: str, instance: str, clock=time.time) -> str:
    now = str(int(clock()))
    return sqs.create_queue(
        QueueName=f"{prefix}{instance}",
        Attributes={**QUEUE_ENCRYPTION, "MessageRetentionPeriod": str(REPLY_RETENTION_S)},
        tags={"created": now, "heartbeat": now},
    )["QueueUrl"]


class ReplyQueueJanitor:
    def __init__(
        self,
        sqs,
        prefix: str,
        own_url: str,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ):
        self._sqs, self._prefix, self._own_url = sqs, prefix, own_url
        self._max_age_s, self._clock = max_age_s, clock
        # Beat three times per age, so a live queue never looks orphaned.
        self._every = Every(max_age_s / 3, self._upkeep, "reply-janitor")

    def start(self) -> ReplyQueueJanitor:
        self._every.start()
        return self

    def stop(self) -> None:
        self._every.stop()

    def beat(self) -> None:
        self._sqs.tag_queue(QueueUrl=self._own_url, Tags={"heartbeat": str(int(self._clock()))})

    def sweep(self) -> list[str]:
        """Delete orphaned reply queues of this prefix; return their URLs."""
        deleted = []
        urls = self._sqs.list_queues(QueueNamePrefix=self._prefix).get("QueueUrls", [])
        for url in urls:
            if url == self._own_url:
                continue
            tags = self._sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
            try:
                heartbeat = float(tags.get("heartbeat", tags.get("created", "0")))
            except ValueError:
                heartbeat = 0.0
            if self._clock() - heartbeat > self._max_age_s:
                self._sqs.delete_queue(QueueUrl=url)
                log.info("deleted orphan reply queue %s", url)
                deleted.append(url)
        return deleted

    def _upkeep(self) -> None:
        self.beat()
        self.sweep()
