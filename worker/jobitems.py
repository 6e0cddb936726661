"""Job images are classified once, even when SQS delivers a message twice.

A job image's result key is fixed by its job and index, so a stored result means the work is
done: a second delivery is deleted without work. Two copies in one batch count once.
"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from runtime.messages import job_item_key

log = logging.getLogger(__name__)


def skip_done(s3, output_bucket: str, jobs: list, pool) -> None:
    """Mark the job images of a batch already classified (or twice in it) as nothing to do."""
    seen: set[tuple[str, int]] = set()
    candidates = []
    for job in jobs:
        if not (job.runnable and job.request.job):
            continue
        place = (job.request.job, job.request.index)
        if place in seen:
            job.expired = True
            log.info("job %s image %d: a second copy in one batch", *place)
            continue
        seen.add(place)
        candidates.append(job)
    stored = pool.map(lambda j: _stored(s3, output_bucket, j), candidates)
    for job, done in zip(candidates, stored, strict=True):
        if done:
            job.expired = True
            log.info("job %s image %d: already classified", job.request.job, job.request.index)


def _stored(s3, bucket: str, job) -> bool:
    for ok in (True, False):
        try:
            s3.head_object(Bucket=bucket, Key=job_item_key(job.request.job, job.request.index, ok))
            return True
        except ClientError as error:
            if error.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                return False  # unknown: classify; the result is the same either way
    return False
