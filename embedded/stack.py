"""The embedded stack: moto in server mode plus the tiers as local processes.

This is the one place that knows the AWS it talks to is moto. Every tier is started as its own
process with AWS_ENDPOINT_URL pointing here, exactly as it would run against LocalStack or AWS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# moto accepts any credentials; these placeholders only keep boto3 from searching for real ones.
PLACEHOLDER_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "embedded", "AWS_SECRET_ACCESS_KEY": "embedded"}


class StackError(RuntimeError):
    """A process of the stack failed to start or died."""


def aws_env(endpoint: str, region: str = "us-east-1") -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        **PLACEHOLDER_CREDENTIALS,
    }


def wait_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll until the URL answers 2xx (or any HTTP answer for a bare server root)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{process.args[2:4]} exited with {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback URL
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise StackError(f"{url} did not answer within {timeout_s:g} s")


@dataclass
class Stack:
    """Processes started in order and stopped in reverse order, each in its own session."""

    env: dict[str, str]
    log_dir: Path
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    # How each process was started, so that restart() starts it again the same way.
    _specs: dict[str, tuple[list[str], dict[str, str] | None]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], extra_env: dict[str, str] | None = None):
        self._specs[name] = (args, extra_env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            args,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C reaches only the launcher, which stops children in order.
            start_new_session=True,
        )
        log.close()
        self.processes.append((name, process))
        return process

    def start_moto(self, host: str, port: int) -> subprocess.Popen:
        process = self.start(
            "moto", [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
        )
        wait_http(f"http://{host}:{port}/moto-api/", 30, process)
        return process

    def restart(self, name: str) -> subprocess.Popen:
        """Start `name` again as it was started (its log continues); it replaces the dead one."""
        self.processes = [(n, p) for n, p in self.processes if n != name]
        return self.start(name, *self._specs[name])

    def dead(self) -> list[str]:
        return [name for name, process in self.processes if process.poll() is not None]

    def stop(self, timeout_s: float = 45.0, keep: tuple[str, ...] = ()) -> None:
        """Stop every process but those in `keep` (what the launcher still reads, moto)."""
        # The scaler drains its workers first (up to the visibility timeout, 30 s by default).
        for name, process in reversed(self.processes):
            if name in keep:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes = [(n, p) for n, p in self.processes if n in keep]


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def default_env() -> dict[str, str]:
    # Keep the user's environment (PATH, settings), minus any real AWS identity.
    drop = {"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
