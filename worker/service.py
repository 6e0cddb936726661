"""The worker for one process, wired from its settings, AWS clients and loaded model (beside the
scaler's build_scaler). `python -m worker` only adds the environment, signals and the model."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from runtime.cloudwatch import publish_throughput
from runtime.model_versions import announce_models
from runtime.periodic import Every
from runtime.requests import RequestCounter
from runtime.settings import Settings
from runtime.usage import publish_usage
from worker.imaging import DecodeBudget
from worker.lanes import Lanes
from worker.metrics import serve_metrics
from worker.pipeline import Pipeline
from worker.reporting import ThroughputReporter, UsageReporter
from worker.served import ROLLOUT_CHECK_S, Rollout, Served

log = logging.getLogger(__name__)


@dataclass
class WorkerService:
    pipeline: Pipeline
    reporter: ThroughputReporter
    metrics_port: int  # 0: no /metrics
    usage: UsageReporter | None = None
    requests: RequestCounter | None = None
    rollout: Rollout | None = None  # new versions of the MODELS packages

    def run(self) -> None:
        """Consume until pipeline.request_stop(); the batches in hand are finished."""
        if self.metrics_port:
            serve_metrics(self.pipeline.stats, self.metrics_port, requests=self.requests)
        self.reporter.start()
        if self.usage is not None:
            self.usage.start()
        watcher = Every(ROLLOUT_CHECK_S, self.rollout.check, "rollout") if self.rollout else None
        if watcher is not None:
            watcher.start()
        try:
            self.pipeline.run()
        finally:
            if watcher is not None:
                watcher.stop()
            self.reporter.stop()
            if self.usage is not None:
                self.usage.stop()


def build_worker(
    settings: Settings,
    *,
    sqs,
    s3,
    cloudwatch,
    classifier,
    instance: str = "",
    others=None,
    ec2=None,
    requests: RequestCounter | None = None,
    rollout=None,
) -> WorkerService:
    """Raises what boto3 raises when the request queue cannot be found; nothing is started.

    classifier: the default model (MODEL); others: the classifiers of MODELS, by name. With an
    ec2 client and the counter of the requests its clients send, the worker tags its instance
    with what it has used (runtime.usage). rollout: worker.served.Rollout's arguments beyond the
    models, the bound and the retag (sources, load, refusals, serving, retried), to pick up new
    versions of the MODELS packages."""
    queue_url = sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
    try:
        job_queue_url = sqs.get_queue_url(QueueName=settings.job_queue)["QueueUrl"]
    except Exception:  # noqa: BLE001 - provisioned without a job lane: interactive work only
        log.warning("no job queue %r: serving interactive requests only", settings.job_queue)
        job_queue_url = None
    lanes = Lanes(
        sqs,
        queue_url,
        job_queue_url,
        wait_s=settings.receive_wait_s,
        visibility_timeout_s=settings.visibility_timeout_s,
    )
    default = Served.of(classifier)
    pipeline = Pipeline(
        lanes=lanes,
        s3=s3,
        classifier=classifier,
        decode=default.decode,
        others={name: Served.of(other) for name, other in (others or {}).items()},
        input_bucket=settings.input_bucket,
        output_bucket=settings.output_bucket,
        reply_prefix=settings.reply_queue_prefix,
        batch_max=settings.batch_max,
        fetch_concurrency=settings.fetch_concurrency,
        job_batch_max=settings.job_batch_max,
        job_prefixes=settings.job_source_prefixes,
        budget=DecodeBudget(settings.worker_decode_budget_mb * 2**20, settings.max_pixels),
        instance=instance,  # named in each result: the page says which worker answered
    )
    reporter = ThroughputReporter(
        pipeline.stats, lambda img_s: publish_throughput(cloudwatch, settings.fleet_name, img_s)
    )
    usage = None
    if ec2 is not None and requests is not None and instance:
        usage = UsageReporter(
            pipeline.stats,
            requests,
            lambda used: publish_usage(ec2, instance, used),
            run=f"{time.time():.3f}",
        )
    watch = None
    if rollout is not None and rollout["sources"]:
        # The dashboard's list of workers shows the new version from its next poll.
        retag = None
        if ec2 is not None and instance:
            models = pipeline.models
            retag = lambda: announce_models(ec2, instance, models.classifiers())  # noqa: E731
        bound = settings.worker_models_memory_mb
        watch = Rollout(pipeline.models, bound_mb=bound, on_switch=retag, **rollout)
    return WorkerService(
        pipeline, reporter, settings.worker_metrics_port, usage, requests, rollout=watch
    )
