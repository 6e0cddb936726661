"""`python -m web`: serve the web tier with Waitress, settings from the environment."""

from __future__ import annotations

import logging
import signal
import sys

from runtime.clients import make_client
from runtime.logs import setup_logging, trace_sqs
from runtime.requests import RequestCounter
from runtime.settings import load_for_tier
from web.server import DescriptorError, create_server
from web.service import build_web

log = logging.getLogger("web")


class _Shutdown(Exception):
    pass


def _raise_shutdown(signum, frame):
    raise _Shutdown


def main(argv: list[str] | None = None) -> int:
    settings = load_for_tier("web", "Serve the upload API (Falcon on Waitress).", argv)
    setup_logging(settings.log_format, tier="web")

    # Short read timeouts: an upload must fail over to a 503 well before RESULT_TIMEOUT_S.
    requests = RequestCounter()  # every request the web sends: /metrics, and /status's cost
    s3 = make_client(
        "s3", settings, pool_size=settings.web_threads, read_timeout_s=5, counter=requests
    )
    sqs = make_client(
        "sqs", settings, pool_size=settings.web_threads, read_timeout_s=5, counter=requests
    )
    trace_sqs(sqs, log)  # logs `request <id> queued`; the workers log the same id
    try:
        web = build_web(
            settings,
            s3=s3,
            sqs=sqs,
            background_sqs=lambda: make_client("sqs", settings, pool_size=2, counter=requests),
            # Jobs get clients of their own: no upload waits on them, so the default timeout.
            job_clients=lambda service: make_client(service, settings, counter=requests),
            cloudwatch=make_client("cloudwatch", settings, counter=requests),
            requests=requests,
        )
    except Exception as error:  # noqa: BLE001 - one line, then exit: nothing was started
        print(f"web: cannot reach the queues ({error}); run provisioning first", file=sys.stderr)
        return 1
    try:
        # Each route's body limit is decided from the headers, before a body is read.
        server = create_server(web.app, settings)
    except (DescriptorError, OSError) as error:
        web.close()
        print(f"web: {error}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)
    log.info(
        "serving on http://%s:%d reply queue %s", settings.host, settings.port, web.reply_queue_url
    )
    try:
        server.run()
    except _Shutdown:
        log.info("shutting down")
    finally:
        server.close()
        web.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
