"""`python -m worker`: consume the request queue with the configured model.

First SIGTERM (or SIGINT) is warm: stop receiving, finish the batch in hand, give unstarted
messages back, exit 0. A second one is cold: exit at once; what was in hand comes back to the
queue when its visibility timeout ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from runtime.clients import make_client
from runtime.cloudwatch import publish_throughput
from runtime.logs import setup_logging, trace_sqs
from runtime.settings import ConfigError, Settings, describe

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_COLD = 3

log = logging.getLogger("worker")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m worker",
        description="Classify images from the request queue. Settings (environment):",
        epilog=describe(("worker",)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"worker: {error}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(
        settings.log_format, tier="worker", fields={"instance": os.environ.get("INSTANCE_ID", "-")}
    )

    # Signals are handled from the start: an instance stopped while its worker still loads the
    # model must exit cleanly (0), not die of the default SIGTERM action.
    stop, on_stop = threading.Event(), []

    def on_signal(signum, frame):
        if stop.is_set():
            os._exit(EXIT_COLD)
        log.info("signal %d: finishing the batch in hand, then exiting", signum)
        stop.set()
        for callback in on_stop:
            callback()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # Imported here so that --help and bad settings answer without loading torch.
    from worker.consumer import Consumer
    from worker.imaging import decode
    from worker.metrics import serve_metrics
    from worker.models import ModelError, load_classifier
    from worker.reporting import ThroughputReporter

    try:
        classifier = load_classifier(
            settings.model, settings.preprocess, settings.torch_threads, settings.model_optimize
        )
    except ModelError as error:
        print(f"worker: {error}", file=sys.stderr)
        return EXIT_CONFIG
    sqs = make_client("sqs", settings)
    trace_sqs(sqs, log)  # one line per request id received and replied: follow it from the web
    try:
        queue_url = sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
    except Exception as error:  # noqa: BLE001 - one line and exit: nothing started yet
        print(f"worker: cannot reach queue {settings.request_queue!r}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        job_queue_url = sqs.get_queue_url(QueueName=settings.job_queue)["QueueUrl"]
    except Exception:  # noqa: BLE001 - provisioned without a job lane: interactive work only
        log.warning("no job queue %r: serving interactive requests only", settings.job_queue)
        job_queue_url = None
    consumer = Consumer(
        sqs=sqs,
        s3=make_client("s3", settings),
        classifier=classifier,
        decode=decode,
        queue_url=queue_url,
        input_bucket=settings.input_bucket,
        output_bucket=settings.output_bucket,
        reply_prefix=settings.reply_queue_prefix,
        batch_max=settings.batch_max,
        wait_s=settings.receive_wait_s,
        fetch_concurrency=settings.fetch_concurrency,
        visibility_timeout_s=settings.visibility_timeout_s,
        job_queue_url=job_queue_url,
    )
    on_stop.append(consumer.request_stop)
    if stop.is_set():
        log.info("stopped before it started")
        return EXIT_OK
    if settings.worker_metrics_port:
        serve_metrics(consumer.stats, settings.worker_metrics_port)
    cloudwatch = make_client("cloudwatch", settings)
    reporter = ThroughputReporter(
        consumer.stats, lambda img_s: publish_throughput(cloudwatch, settings.fleet_name, img_s)
    ).start()
    log.info("worker %s ready: model %s", os.environ.get("INSTANCE_ID", "-"), classifier.name)
    consumer.run()
    reporter.stop()
    log.info("worker stopped after %d images", consumer.stats.images)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
