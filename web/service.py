"""The web tier for one process, wired from its settings and AWS clients (beside the scaler's
build_scaler): the app and the reply conversation behind it (web.replies). `python -m web` only
adds the environment, signals and Waitress."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import falcon

from runtime import deadletters
from runtime.messages import reply_url_prefix
from runtime.periodic import Every
from runtime.requests import RequestCounter
from runtime.settings import Settings
from web.app import create_app
from web.arrivals import ArrivalCounter
from web.deadletters import DeadLetters
from web.guards import Backlog, image_problem
from web.history import StatusHistory
from web.jobs.store import JobLimits, JobStore
from web.replies import Replies
from web.resources import Gateway
from web.scaler_wake import ScalerWaker
from web.status import StatusSource
from web.store import UploadStore

log = logging.getLogger(__name__)


@dataclass
class WebService:
    app: falcon.App
    replies: Replies
    _sampler: Every
    _arrivals: ArrivalCounter | None = None
    _dead_letters: DeadLetters | None = None
    _waker: ScalerWaker | None = None

    @property
    def reply_queue_url(self) -> str:
        return self.replies.queue_url

    def close(self) -> None:
        """Stop the threads and delete this process's reply queue."""
        self._sampler.stop()
        if self._dead_letters is not None:
            self._dead_letters.stop()
        if self._arrivals is not None:
            self._arrivals.stop()
        if self._waker is not None:
            self._waker.stop()
        self.replies.close()


def build_web(
    settings: Settings,
    *,
    s3,
    sqs,
    background_sqs: Callable[[], object],
    cloudwatch=None,
    instance: str = "",
    job_clients: Callable[[str], object] | None = None,
    requests: RequestCounter | None = None,
) -> WebService:
    """Raises what boto3 raises when the queues cannot be reached; nothing is started then.

    background_sqs makes one client for each background thread (dispatcher, janitor), so their
    long polls never wait for a connection of the upload threads' pool. With a cloudwatch
    client, accepted uploads are counted per second for the scaler's arrival rate. Batch jobs
    get clients of their own from job_clients("s3" or "sqs") (default: the uploads' own).
    requests counts what those clients send: /metrics shows it, /status prices it.
    """
    request_queue_url = sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=settings.dead_letter_queue)["QueueUrl"]
    replies = Replies.open(
        sqs,
        background_sqs=background_sqs,
        prefix=settings.reply_queue_prefix,
        instance=instance or uuid.uuid4().hex[:16],
        max_age_s=settings.reply_queue_max_age_s,
        timeout_s=settings.result_timeout_s,
    )
    store = UploadStore(
        s3=s3,
        sqs=sqs,
        input_bucket=settings.input_bucket,
        output_bucket=settings.output_bucket,
        request_queue_url=request_queue_url,
        result_timeout_s=settings.result_timeout_s,
        cache_preprocess=settings.preprocess if settings.result_cache else None,
        inline_max_bytes=settings.inline_max_bytes,
    )
    arrivals = (
        ArrivalCounter(cloudwatch, settings.fleet_name).start() if cloudwatch is not None else None
    )
    # Beside the scaler (the web host, `make up`): it hears of work at once (runtime.wake).
    waker = (
        ScalerWaker(settings.scaler_status_url, settings.scaler_wake_token_file).start()
        if settings.scaler_wake_token_file
        else None
    )
    status = StatusSource(
        sqs,
        request_queue_url,
        dlq_url,
        settings.scaler_status_url,
        model=settings.model,
        models=settings.model_names,
        requests=requests,
        prices=settings.prices,
    )
    # The charts' history: sampled here, whether or not a page is open.
    history = StatusHistory()
    history.record(status.snapshot())
    sampler = Every(history.interval_s, lambda: history.record(status.snapshot()), "history")
    job_s3, job_sqs = (job_clients("s3"), job_clients("sqs")) if job_clients else (s3, sqs)
    app = create_app(
        settings,
        gateway=Gateway(
            store,
            replies,
            async_deadline_s=settings.result_expiry_days * 86400.0,
            backlog=Backlog(sqs, request_queue_url, settings.max_backlog),
            arrivals=arrivals,
            accepted=waker.arrived if waker else None,
        ),
        ready=store.ready,
        status=status.snapshot,
        history=history,
        jobs=_job_store(settings, job_s3, job_sqs, waker),
        requests=requests,
    )
    dead_letters = DeadLetters(
        background_sqs(),
        s3,
        queue_url=dlq_url,
        output_bucket=settings.output_bucket,
        reply_prefix=reply_url_prefix(request_queue_url, settings.reply_queue_prefix),
        why=deadletters.reason(settings.max_receive_count),
    )
    return WebService(app, replies, sampler.start(), arrivals, dead_letters.start(), waker)


def _job_store(settings: Settings, s3, sqs, waker: ScalerWaker | None) -> JobStore | None:
    try:
        job_queue_url = sqs.get_queue_url(QueueName=settings.job_queue)["QueueUrl"]
    except Exception:  # noqa: BLE001 - provisioned without a job lane: POST /jobs answers 503
        log.warning("no job queue %r: batch jobs are off", settings.job_queue)
        return None
    return JobStore(
        s3=s3,
        sqs=sqs,
        input_bucket=settings.input_bucket,
        output_bucket=settings.output_bucket,
        job_queue_url=job_queue_url,
        limits=JobLimits(
            settings.job_max_images,
            settings.max_upload_bytes,
            settings.job_source_prefixes,
            max_inflated_bytes=settings.job_max_inflated_bytes,
            max_ratio=settings.job_max_ratio,
        ),
        check_image=lambda data: image_problem(data, settings.max_pixels),
        deadline_s=settings.result_expiry_days * 86400.0,
        backlog=Backlog(sqs, job_queue_url, settings.job_max_backlog, what="job images"),
        accepted=waker.arrived if waker else lambda: None,
    )
