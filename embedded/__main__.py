"""`python -m embedded`: run the embedded stack (`up`), or create the buckets and queues."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from embedded.kept import SYNC_EVERY_S, KeptEstimates, forget, kept_path
from embedded.provision import provision
from embedded.stack import Stack, StackError, aws_env, default_env, python_module, wait_http
from runtime.clients import make_client
from runtime.logs import setup_logging
from runtime.settings import Settings, load_or_exit

log = logging.getLogger("embedded")


def cmd_provision(args, settings: Settings) -> int:
    ids = provision(settings, make_client("s3", settings), make_client("sqs", settings))
    for name, value in ids.items():
        print(f"{name}: {value}")
    return 0


def cmd_up(args, settings: Settings) -> int:
    endpoint = f"http://127.0.0.1:{args.aws_port}"
    env = {**default_env(), **aws_env(endpoint, settings.aws_region)}
    # Embedded mode: at most one worker per core unless the user says otherwise.
    cores = os.cpu_count() or 1
    env.setdefault("FLEET_MAX", str(cores))
    # Workers share this machine's cores: split them rather than oversubscribe.
    env.setdefault("TORCH_THREADS", str(max(1, cores // max(1, int(env["FLEET_MAX"])))))
    env.setdefault("RUNNER", "process")
    # Here a launch is ready as fast as a restart: spares in the pool would only cost CPU.
    env.setdefault("WARM_POOL_SPARES", "false")
    env.setdefault("SCALER_STATUS_URL", f"http://127.0.0.1:{settings.scaler_status_port}/status")
    # The web tier wakes the scaler when work reaches an idle fleet (runtime.wake).
    env.setdefault(
        "SCALER_WAKE_TOKEN_FILE", str(Path(args.log_dir).resolve() / "scaler-wake-token")
    )
    stack = Stack(env=env, log_dir=Path(args.log_dir))
    kept = None
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    try:
        print(f"starting embedded AWS (moto) on {endpoint}; logs in {args.log_dir}/", flush=True)
        stack.start_moto("127.0.0.1", args.aws_port)
        os.environ.update(aws_env(endpoint, settings.aws_region))
        s3 = make_client("s3", settings)
        provision(settings, s3, make_client("sqs", settings))
        # What the last run measured, back into the fresh moto before the scaler reads it.
        kept = KeptEstimates(kept_path(args.log_dir), s3, settings.output_bucket)
        if kept.restore():
            print(f"planning with the estimates kept in {kept.path} (forget: make forget)")
        health_url = f"http://127.0.0.1:{settings.port}/healthz"
        wait_http(health_url, 60, stack.start("web", python_module("web")))
        if args.workers is None:
            stack.start("scaler", python_module("scaler"))
        for i in range(args.workers or 0):
            stack.start(f"worker-{i}", python_module("worker"), {"INSTANCE_ID": f"local-{i}"})
        print(f"serving on http://127.0.0.1:{settings.port}  (Ctrl-C stops everything)", flush=True)
        restarts = Restarts()
        synced_at = time.monotonic()
        while not stopping:
            if time.monotonic() - synced_at >= SYNC_EVERY_S:
                synced_at = time.monotonic()
                kept.save()
            dead = stack.dead()
            if dead == ["web"] and restarts.allow(time.monotonic()):
                _restart_web(stack, health_url, args.log_dir)
            elif dead:
                raise StackError(f"{', '.join(dead)} exited; see {args.log_dir}/")
            time.sleep(0.5)
        return 0
    except StackError as error:
        print(f"embedded up: {error}", file=sys.stderr)
        return 1
    finally:
        print("stopping ...", flush=True)
        # The scaler saves what it measured until it stops; moto goes last, after the copy.
        stack.stop(keep=("moto",))
        if kept is not None:
            kept.save()
        stack.stop()


class Restarts:
    """At most MAX_RESTARTS of the web process in WINDOW_S: past that it is not a crash that a
    restart mends (a bad setting, a port taken), and the stack stops with the reason."""

    MAX_RESTARTS = 5
    WINDOW_S = 60.0

    def __init__(self):
        self._times: list[float] = []

    def allow(self, now: float) -> bool:
        self._times = [t for t in self._times if now - t < self.WINDOW_S] + [now]
        return len(self._times) <= self.MAX_RESTARTS


def _restart_web(stack: Stack, health_url: str, log_dir: str) -> None:
    # What the dead process had stored and queued is still answered: workers store every
    # result by request id (GET /results/<id>), and its reply queue outlives it until the
    # new process's janitor finds it orphaned (REPLY_QUEUE_MAX_AGE_S).
    code = dict(stack.processes)["web"].returncode
    print(f"web exited with code {code}; restarting it (see {log_dir}/web.log)", flush=True)
    log.warning("web exited with code %s; restarting it", code)
    wait_http(health_url, 60, stack.restart("web"))
    print("web restarted", flush=True)


def cmd_forget(args, settings: Settings) -> int:
    path = kept_path(args.log_dir)
    if forget(path):
        print(f"forgot the measured estimates ({path}); the next up starts from the defaults")
    else:
        print(f"nothing kept in {path}; the next up starts from the defaults")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the embedded stack: moto, web, scaler, workers")
    up.add_argument("--aws-port", type=int, default=4566, help="moto's port (default 4566)")
    up.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run N fixed workers instead of the scaler (default: the scaler decides)",
    )
    up.add_argument(
        "--log-dir",
        default=".run",
        help="where each process logs and the measured estimates are kept (default .run)",
    )
    up.set_defaults(run=cmd_up)
    forgets = commands.add_parser(
        "forget", help="delete the kept estimates: the next up plans with the defaults"
    )
    forgets.add_argument("--log-dir", default=".run", help="the run directory (default .run)")
    forgets.set_defaults(run=cmd_forget)
    commands.add_parser(
        "provision", help="create the buckets and queues (idempotent)"
    ).set_defaults(run=cmd_provision)
    args = parser.parse_args(argv)
    settings = load_or_exit("embedded")
    setup_logging(settings.log_format, tier="embedded")
    return args.run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
