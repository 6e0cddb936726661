"""`python -m web`: serve the web tier with Waitress, settings from the environment."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import uuid

import waitress

from runtime.clients import make_client
from runtime.logs import setup_logging, trace_sqs
from runtime.settings import ConfigError, Settings, describe
from web.app import create_app
from web.dispatcher import ReplyDispatcher
from web.gateway import Gateway
from web.guards import Backlog
from web.jobs import JobLimits, JobStore
from web.reply_queues import ReplyQueueJanitor, create_reply_queue
from web.status import StatusSource
from web.store import UploadStore
from web.uploads import image_problem

log = logging.getLogger("web")


class _Shutdown(Exception):
    pass


def _raise_shutdown(signum, frame):
    raise _Shutdown


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m web",
        description="Serve the upload API (Falcon on Waitress). Settings (environment):",
        epilog=describe(("web",)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"web: {error}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format, tier="web")

    # Short read timeouts: an upload must fail over to a 503 well before RESULT_TIMEOUT_S.
    s3 = make_client("s3", settings, pool_size=settings.web_threads, read_timeout_s=5)
    sqs = make_client("sqs", settings, pool_size=settings.web_threads, read_timeout_s=5)
    trace_sqs(sqs, log)  # logs `request <id> queued`; the workers log the same id
    try:
        request_queue_url = sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
        dlq_url = sqs.get_queue_url(QueueName=settings.dead_letter_queue)["QueueUrl"]
        reply_queue_url = create_reply_queue(
            sqs, settings.reply_queue_prefix, uuid.uuid4().hex[:16]
        )
    except Exception as error:  # noqa: BLE001 - one line, then exit: nothing was started
        print(f"web: cannot reach the queues ({error}); run provisioning first", file=sys.stderr)
        return 1

    janitor = ReplyQueueJanitor(
        make_client("sqs", settings, pool_size=2),
        settings.reply_queue_prefix,
        reply_queue_url,
        settings.reply_queue_max_age_s,
    ).start()
    dispatcher = ReplyDispatcher(make_client("sqs", settings, pool_size=2), reply_queue_url).start()
    store = UploadStore(
        s3=s3,
        sqs=sqs,
        input_bucket=settings.input_bucket,
        output_bucket=settings.output_bucket,
        request_queue_url=request_queue_url,
        reply_queue_url=reply_queue_url,
        result_timeout_s=settings.result_timeout_s,
        cache_namespace=(settings.model, settings.preprocess) if settings.result_cache else None,
        async_deadline_s=settings.result_expiry_days * 86400.0,
    )
    # Jobs get clients of their own: no upload waits on them, so the default read timeout.
    jobs = _job_store(settings, make_client("s3", settings), make_client("sqs", settings))
    status = StatusSource(sqs, request_queue_url, dlq_url, settings.scaler_status_url)
    app = create_app(
        settings,
        gateway=Gateway(
            store,
            dispatcher,
            settings.result_timeout_s,
            Backlog(sqs, request_queue_url, settings.max_backlog),
        ),
        ready=store.ready,
        status=status.snapshot,
        jobs=jobs,
    )
    server = waitress.create_server(
        app,
        host=settings.host,
        port=settings.port,
        threads=settings.web_threads,
        connection_limit=settings.web_connection_limit,
        backlog=2048,
        # A backstop for bodies without a length; the app answers oversize uploads itself.
        max_request_body_size=max(settings.max_upload_bytes * 4, settings.job_max_bytes)
        + 1024 * 1024,
        channel_timeout=int(settings.result_timeout_s) + 30,
        ident="classifier",
    )
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)
    log.info(
        "serving on http://%s:%d reply queue %s", settings.host, settings.port, reply_queue_url
    )
    try:
        server.run()
    except _Shutdown:
        log.info("shutting down")
    finally:
        server.close()
        janitor.stop()
        dispatcher.stop()
        try:
            sqs.delete_queue(QueueUrl=reply_queue_url)
        except Exception as error:  # noqa: BLE001
            log.warning("could not delete reply queue (%s)", type(error).__name__)
    return 0


def _job_store(settings: Settings, s3, sqs) -> JobStore | None:
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
        limits=JobLimits(settings.job_max_images, settings.max_upload_bytes),
        check_image=lambda data: image_problem(data, settings.max_pixels),
        deadline_s=settings.result_expiry_days * 86400.0,
    )


if __name__ == "__main__":
    sys.exit(main())
