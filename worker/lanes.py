"""Two lanes into one worker: interactive uploads always before batch-job images.

A person waiting on the page must not queue behind a 10,000-image job, so the job lane is read
only when a short poll finds the interactive lane empty. Each batch comes from one lane, so its
messages are deleted, released and kept hidden on the queue they came from.
"""

from __future__ import annotations


class Lanes:
    def __init__(self, sqs, interactive_url: str, job_url: str | None, *, wait_s: int):
        self._sqs = sqs
        self.interactive_url, self.job_url = interactive_url, job_url
        self._wait_s = wait_s
        # With a job lane, an idle worker long-polls the interactive lane only briefly, so a job
        # image arriving meanwhile waits at most this long.
        self._idle_wait_s = min(wait_s, 2)

    def receive(
        self, batch_max: int, job_batch_max: int | None = None, jobs_ok: bool = True
    ) -> tuple[str, list[dict]]:
        """The next batch and the queue it came from (possibly empty).

        jobs_ok False (the model still has a batch waiting): only the interactive lane is
        polled, once and without waiting, so that a job batch never queues in front of an upload
        that arrives a moment later. Job batches are at most job_batch_max: the smaller, the
        less an upload waits behind the one in the model.
        """
        if self.job_url is None:
            return self.interactive_url, self.poll(self.interactive_url, self._wait_s, batch_max)
        if messages := self.poll(self.interactive_url, 0, batch_max):
            return self.interactive_url, messages
        if not jobs_ok:
            return self.interactive_url, []
        if messages := self.poll(self.job_url, 0, job_batch_max or batch_max):
            return self.job_url, messages
        return self.interactive_url, self.poll(self.interactive_url, self._idle_wait_s, batch_max)

    def poll(self, url: str, wait_s: int, batch_max: int) -> list[dict]:
        response = self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=batch_max,
            WaitTimeSeconds=wait_s,
            # ReceiveCount is logged (redeliveries stand out); SentTimestamp tells a request that
            # was queued before this worker was ready, i.e. one that waited for a worker start.
            AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        return response.get("Messages", [])
