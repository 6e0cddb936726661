"""`python -m worker`: consume the request queue with the configured model.

First SIGTERM (or SIGINT) is warm: stop receiving, finish the batch in hand, give unstarted
messages back, exit 0. A second one is cold: exit at once; what was in hand comes back to the
queue when its visibility timeout ends.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from runtime.logs import setup_logging, trace_sqs
from runtime.model_versions import announce_models
from runtime.readiness import announce_notice, announce_ready
from runtime.settings import EXIT_CONFIG, load_for_tier

EXIT_OK = 0
EXIT_COLD = 3

log = logging.getLogger("worker")


def main(argv: list[str] | None = None) -> int:
    settings = load_for_tier("worker", "Classify images from the request queue.", argv)
    instance = os.environ.get("INSTANCE_ID", "")
    setup_logging(settings.log_format, tier="worker", fields={"instance": instance or "-"})
    # Signals are handled from the start: an instance stopped while its worker still loads the
    # model must exit cleanly (0), not die of the default SIGTERM action.
    stop, on_stop = _handle_signals()
    # Said before the slow part begins: a test stops the worker while it loads, on this line.
    log.info("loading model %s", settings.model)
    # Imported here so that --help and bad settings answer without loading torch, and so that
    # the signal handlers are in place before the slow imports (boto3, the model's runtime) begin.
    from runtime.clients import make_client
    from runtime.requests import RequestCounter
    from worker.models import ModelError

    # Every request the worker sends is counted: its /metrics and its instance's usage tag,
    # the reads of its packages and their pointers included.
    requests = RequestCounter()
    clients = {
        name: make_client(name, settings, counter=requests) for name in ("sqs", "s3", "cloudwatch")
    }
    try:
        models = _Models(settings, clients["s3"])
    except ModelError as error:
        print(f"worker: {error}", file=sys.stderr)
        return EXIT_CONFIG
    # One line per request id received and replied: follow it from the web.
    trace_sqs(clients["sqs"], log)
    try:
        worker = models.build_worker(
            instance, ec2=make_client("ec2", settings, pool_size=1), requests=requests, **clients
        )
    except Exception as error:  # noqa: BLE001 - one line and exit: nothing started yet
        print(f"worker: cannot reach queue {settings.request_queue!r}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    on_stop.append(worker.pipeline.request_stop)
    if stop.is_set():
        log.info("stopped before it started")
        return EXIT_OK
    watch = _watch_notices(settings, worker, instance) if settings.instance_metadata_url else None
    if watch is not None and watch.notice is not None:
        log.info("under notice before it started: exiting")
        return EXIT_OK
    log.info(
        "worker %s ready: model %s on %s%s",
        instance or "-",
        models.classifier.name,
        getattr(models.classifier, "runtime", "torch"),
        "".join(f", {name} {c.version} on {c.runtime}" for name, c in models.others.items()),
    )
    _announce_ready(settings, worker, instance)
    worker.run()
    left = f" (left on notice of {watch.notice.split(':')[0]})" if watch and watch.notice else ""
    log.info("worker stopped after %d images%s", worker.pipeline.stats.images, left)
    return EXIT_OK


def _handle_signals() -> tuple[threading.Event, list]:
    """The first SIGTERM or SIGINT sets the event and calls each callback; a second one exits."""
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
    return stop, on_stop


class _Models:
    """The models this worker starts with: MODEL, and the packages of MODELS loaded from where
    each entry points now (worker.sources), each held until a new version replaces it
    (worker.served). Raises ModelError with one line when one cannot serve."""

    def __init__(self, settings, s3):
        from worker.models import ModelError, load_classifier
        from worker.served import over_bound
        from worker.sources import watched

        self._settings, self._s3 = settings, s3
        self._cache_dir = Path(settings.model_cache_dir)
        # Where each MODELS entry that can change is now: a link's target, a pointer's version.
        self.sources = watched(settings.model_packages, s3, settings.model_pointer_check_s)
        self.classifier = load_classifier(
            settings.model,
            settings.preprocess,
            settings.torch_threads,
            optimize=settings.model_optimize,
            runtime=settings.model_runtime,
            cache_dir=settings.model_cache_dir,
        )
        self.serving = {name: self._where(name, p) for name, p in settings.model_packages.items()}
        self.others = {name: self.load(name, target) for name, target in self.serving.items()}
        problem = over_bound(
            [self.classifier, *self.others.values()], settings.worker_models_memory_mb
        )
        if problem:
            raise ModelError(problem)

    def load(self, name: str, path: str):
        from runtime.keys import split_s3_url
        from worker.models import ModelError, ModelUnreadable, load_package_classifier
        from worker.package import PackageError, Unreadable
        from worker.remote import fetch_package

        if split_s3_url(path) is not None:  # in S3: copied into the cache first
            try:
                path = fetch_package(self._s3, path, self._cache_dir)
            except Unreadable as error:
                raise ModelUnreadable(f"model {name}: {error}") from None
            except PackageError as error:
                raise ModelError(f"model {name}: {error}") from None
        return load_package_classifier(
            name,
            path,
            self._settings.torch_threads,
            runtime=self._settings.model_runtime,
            cache_dir=self._settings.model_cache_dir,
        )

    def _where(self, name: str, path: str) -> str:
        from worker.models import ModelError
        from worker.package import PackageError

        if name not in self.sources:
            return path
        try:
            return self.sources[name]()
        except PackageError as error:
            raise ModelError(f"model {name}: {error}") from None

    def build_worker(self, instance: str, **clients):
        from worker.models import ModelError, ModelUnreadable
        from worker.package import PackageError
        from worker.service import build_worker

        return build_worker(
            self._settings,
            classifier=self.classifier,
            instance=instance,
            others=self.others,
            rollout={
                "sources": self.sources,
                "load": self.load,
                "refusals": (ModelError, PackageError),
                "serving": self.serving,
                "retried": (ModelUnreadable,),
            },
            **clients,
        )


def _watch_notices(settings, worker, instance: str):
    """Watch the metadata service for a Spot interruption or rebalance notice (worker.notice)."""
    from runtime.clients import make_client
    from worker.notice import watch_notices

    def on_notice(notice: str) -> None:
        # Stop first: the tag is an EC2 call that may be slow, the notice gives two minutes.
        log.warning("notice of %s: no more receives; finishing what is in hand", notice)
        worker.pipeline.request_stop()
        announce_notice(make_client("ec2", settings, pool_size=1), instance)

    return watch_notices(settings.instance_metadata_url, settings.notice_poll_s, on_notice)


def _announce_ready(settings, worker, instance: str) -> None:
    """The scaler shows this instance as "starting" until this tag says the model is loaded, and
    then the versions it serves (a rollout switch retags them, worker.service). In the
    background: the queue must not wait on an EC2 call (slow or failing, it is only shown)."""
    from runtime.clients import make_client

    def announce() -> None:
        ec2 = make_client("ec2", settings, pool_size=1)
        announce_models(ec2, instance, worker.pipeline.models.classifiers())
        announce_ready(ec2, instance)

    threading.Thread(target=announce, name="announce-ready", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
