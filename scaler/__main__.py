"""`python -m scaler`: size the worker fleet to the request queue, tick after tick.

Serves GET /status (JSON) on SCALER_STATUS_HOST:SCALER_STATUS_PORT (127.0.0.1:3001). With
WEB_ROLE_ARN set (the deployed web host) it also hands the web container beside it that role's
short-lived session and renews it (runtime.web_credentials). With a
local runner (RUNNER=process or docker) it first creates the workers' launch template if the
emulated AWS lacks one. SIGTERM or SIGINT stops ticking, drains the local workers and exits 0;
the EC2 fleet is left as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from runtime.clients import make_client
from runtime.logs import setup_logging
from runtime.periodic import Every
from runtime.requests import RequestCounter
from runtime.retry import retry
from runtime.settings import describe, load_or_exit
from runtime.wake import new_token
from runtime.web_credentials import WebCredentials
from scaler.fleet import ensure_local_launch_template
from scaler.runners import make_runner
from scaler.service import build_scaler
from scaler.status import StatusServer
from scaler.wake import Wake

log = logging.getLogger("scaler")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scaler",
        description=__doc__,
        epilog="settings (environment variables, with defaults):\n" + describe(("scaler",)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--once", action="store_true", help="run one tick, print the status JSON and exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_or_exit("scaler")
    setup_logging(settings.log_format, tier="scaler")
    requests = RequestCounter()  # every request the scaler sends: its part of /status's cost
    ec2 = make_client("ec2", settings, counter=requests)
    if settings.runner != "none":
        # Local modes (embedded moto, compose LocalStack) have no deploy step to make it.
        retry(lambda: ensure_local_launch_template(ec2, settings), "ensure launch template")
    runner = make_runner(settings, os.environ)
    scaler = build_scaler(
        settings,
        ec2=ec2,
        sqs=make_client("sqs", settings, counter=requests),
        cloudwatch=make_client("cloudwatch", settings, counter=requests),
        s3=make_client("s3", settings, counter=requests),
        runner=runner,
        requests=requests,
    )
    if args.once:
        try:
            scaler.tick()
            print(json.dumps(scaler.status(), indent=2))
        finally:
            if runner is not None:
                runner.close()
        return 0

    stopping = threading.Event()
    # A web process beside the scaler wakes it when work arrives into an idle fleet.
    wake = Wake(lambda: _nothing_queued(scaler.status()))

    def on_signal(signum, _frame):
        if stopping.is_set():
            log.warning("already stopping: draining workers (SIGKILL after the drain timeout)")
        stopping.set()
        wake.now()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    handover = _hand_over_web_credentials(settings)
    token = (
        new_token(settings.scaler_wake_token_file, settings.scaler_wake_token_owner)
        if settings.scaler_wake_token_file
        else ""
    )
    server = StatusServer(
        scaler.status,
        settings.scaler_status_host,
        settings.scaler_status_port,
        wake=wake.wake,
        token=token,
    ).start()
    log.info(
        "scaling fleet %s with policy %s every %gs (runner %s)",
        settings.fleet_name,
        settings.policy,
        settings.scaler_tick_s,
        settings.runner,
    )
    try:
        while not stopping.is_set():
            scaler.tick()
            wake.wait(settings.scaler_tick_s)
    finally:
        log.info("stopping: closing status and draining local workers")
        if handover is not None:
            handover.stop()
        server.close()
        if runner is not None:
            runner.close()
    return 0


def _nothing_queued(status: dict) -> bool:
    """What the last tick read: only then is a wake worth a tick of its own."""
    queue = status["queue"]
    return not any(queue[k] for k in ("visible", "in_flight", "jobs_visible", "jobs_in_flight"))


def _hand_over_web_credentials(settings) -> Every | None:
    """On the web host: the web container's session, now (it waits for it), then renewed."""
    if not settings.web_role_arn:
        return None
    keeper = WebCredentials(
        make_client("sts", settings),
        settings.web_role_arn,
        settings.web_credentials_dir,
        settings.web_credentials_duration_s,
    )
    retry(keeper.refresh, "hand over the web role's session")
    return Every(settings.web_credentials_refresh_s, keeper.refresh, "web-credentials").start()


if __name__ == "__main__":
    sys.exit(main())
