"""The threads of one worker and the order they stop in; the work itself is in worker.stages.

Delivery is at least once. A message is deleted only after its result is stored, and results are
keyed by request id, so a redelivered request rewrites the same object and the web tier drops the
second reply.

`run()` overlaps the stages: while batch k is in the model (this thread), batch k+1 is received,
fetched and decoded (the intake thread) and batch k-1 is stored and replied to (the finisher), so
the model waits on S3 and SQS as little as possible. A warm stop (`request_stop()`) ends the
intake first, gives back what it took but did not start, lets the model and the finisher finish
every batch in hand, and only then stops the I/O threads and the visibility keepers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from runtime.failures import log_failure
from runtime.retry import Backoff, Streak
from runtime.sqs import BATCH_MAX
from worker.imaging import DecodeBudget
from worker.lanes import Lanes
from worker.stages import Batch, Stages
from worker.stats import Stats

log = logging.getLogger(__name__)

_STOP = object()
_RECEIVE_BACKOFF = Backoff(base_s=0.5, max_s=10.0)
# While the model has a batch waiting, how often the interactive lane is looked at (the job lane
# not at all): an upload's extra wait, against a short poll per interval while a job runs.
_GATED_POLL_S = 0.05


class Pipeline:
    def __init__(
        self,
        *,
        lanes: Lanes,
        s3,
        classifier,
        decode: Callable[[bytes], object],
        input_bucket: str,
        output_bucket: str,
        reply_prefix: str,
        batch_max: int = BATCH_MAX,
        fetch_concurrency: int = 10,
        job_batch_max: int | None = None,
        job_prefixes: tuple[str, ...] = (),
        budget: DecodeBudget | None = None,
        instance: str = "",
        clock: Callable[[], float] = time.time,
        others: dict | None = None,
    ):
        """classifier and decode: the default model's; others: the other models held, by name
        (worker.served.Served)."""
        self._lanes = lanes
        self._pool = ThreadPoolExecutor(max_workers=fetch_concurrency, thread_name_prefix="io")
        self._stopping = threading.Event()
        self.stats = Stats()
        self._stages = Stages(
            lanes=lanes,
            s3=s3,
            classifier=classifier,
            decode=decode,
            input_bucket=input_bucket,
            output_bucket=output_bucket,
            reply_prefix=reply_prefix,
            batch_max=batch_max,
            job_batch_max=job_batch_max or batch_max,
            job_prefixes=job_prefixes,
            # Unbounded only in unit tests with stand-in decoders; main() always passes one.
            budget=budget or DecodeBudget(2**62, 2**60),
            pool=self._pool,
            stats=self.stats,
            ready_at=clock(),  # built once the model is loaded: the worker is ready
            clock=clock,
            instance=instance,
            others=others,
        )

    @property
    def models(self):
        """The models held (worker.served.ServedModels): a rollout replaces one in it."""
        return self._stages.models

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Warm stop: no new receives; the batches in hand are finished."""
        self._stopping.set()

    def run(self) -> None:
        """Consume until request_stop(); returns once every batch in hand is finished."""
        # One batch waits decoded while another is in the model: enough to hide the intake.
        ready: queue.Queue = queue.Queue(maxsize=1)
        finisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
        finishing = threading.BoundedSemaphore(2)
        intake = threading.Thread(target=self._intake, args=(ready,), name="intake", daemon=True)
        self._lanes.start()
        intake.start()
        while (batch := ready.get()) is not _STOP:
            self._stages.model(batch)
            finishing.acquire()
            finisher.submit(self._finish, batch).add_done_callback(lambda _: finishing.release())
        intake.join()
        finisher.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        self._lanes.stop()

    def _intake(self, ready: queue.Queue) -> None:
        streak = Streak(_RECEIVE_BACKOFF)
        while not self._stopping.is_set():
            # A job batch is taken only when none waits for the model (see worker.lanes).
            jobs_ok = ready.empty()
            try:
                batch = self._stages.receive(jobs_ok)
                streak.succeeded()
            except Exception as error:  # noqa: BLE001 - AWS may be briefly away; keep trying
                delay_s = streak.failed()
                log_failure(log, "receive", error, f"retry in {delay_s:.1f} s")
                self._stopping.wait(delay_s)
                continue
            if self._stopping.is_set():
                if batch is not None:
                    self._stages.give_back(batch)  # unstarted: visible to others at once
                break
            if batch is None:
                if not jobs_ok:
                    self._stopping.wait(_GATED_POLL_S)  # the model is busy: look again shortly
                continue
            self._take(batch, ready)
        ready.put(_STOP)

    def _take(self, batch: Batch, ready: queue.Queue) -> None:
        self.stats.begin()
        try:
            self._stages.intake(batch)
        except Exception:  # noqa: BLE001 - never leave the model loop waiting forever
            log.exception("intake failed; giving %d messages back", len(batch.deliveries))
            self.stats.abandon()  # else the busy clock never stops and throughput goes unreported
            self._stages.give_back(batch)
            return
        ready.put(batch)

    def _finish(self, batch: Batch) -> None:
        images, errors = self._stages.finish(batch)
        self.stats.end(images, errors, len(batch.deliveries))
