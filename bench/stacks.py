"""What both measured stacks share: ports, resource names, clients, an orderly stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3

from bench.model import taskset
from embedded.stack import PLACEHOLDER_CREDENTIALS, Stack, aws_env, default_env, wait_http
from runtime.clients import client_config
from runtime.settings import Settings

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def stack_env(endpoint: str, name: str, overrides: dict[str, str]) -> dict[str, str]:
    """Own resource names per run, so a bench never meets another run's queues."""
    return {
        **default_env(),
        **aws_env(endpoint),
        "INPUT_BUCKET": f"{name}-in",
        "OUTPUT_BUCKET": f"{name}-out",
        "REQUEST_QUEUE": f"{name}-requests",
        "REPLY_QUEUE_PREFIX": f"{name}-reply-",
        **overrides,
    }


def start_moto(log_dir: Path, cpus: tuple[int, ...] | None) -> tuple[Stack, str]:
    """A moto server on a free port (pinned to `cpus` if given), in a Stack of its own."""
    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    stack = Stack(env=default_env(), log_dir=log_dir)
    pin = taskset(cpus) if cpus else []
    args = [*pin, sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    process = stack.start("moto", args)
    try:
        wait_http(f"{endpoint}/moto-api/", 30, process)
    except Exception:
        stack.stop()
        raise
    return stack, endpoint


def clients(endpoint: str, settings: Settings):
    kwargs = {"endpoint_url": endpoint, "region_name": settings.aws_region}
    session = boto3.session.Session(**_credentials())
    config = client_config(pool_size=20)
    return session.client("s3", config=config, **kwargs), session.client(
        "sqs", config=config, **kwargs
    )


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": PLACEHOLDER_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": PLACEHOLDER_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def stop_workers(processes: list[subprocess.Popen], timeout_s: float = 30.0) -> None:
    """Warm-stop every worker at once (each finishes its long poll), instead of one by one."""
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a paused worker cannot handle SIGTERM
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
