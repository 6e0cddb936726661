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

    # Said before the slow part begins: a test stops the worker while it loads, on this line.
    log.info("loading model %s", settings.model)
    # Imported here so that --help and bad settings answer without loading torch, and so that
    # the signal handlers are in place before the slow imports (boto3, the model's runtime) begin.
    from runtime.clients import make_client
    from runtime.keys import split_s3_url
    from runtime.requests import RequestCounter
    from worker.models import (
        ModelError,
        ModelUnreadable,
        load_classifier,
        load_package_classifier,
    )
    from worker.package import PackageError, Unreadable
    from worker.remote import fetch_package
    from worker.served import over_bound
    from worker.service import build_worker
    from worker.sources import watched

    # Every request the worker sends is counted: its /metrics and its instance's usage tag,
    # the reads of its packages and their pointers included.
    requests = RequestCounter()
    clients = {
        name: make_client(name, settings, counter=requests) for name in ("sqs", "s3", "cloudwatch")
    }
    cache_dir = Path(settings.model_cache_dir)

    def load_package(name: str, path: str):
        if split_s3_url(path) is not None:  # in S3: copied into the cache first
            try:
                path = fetch_package(clients["s3"], path, cache_dir)
            except Unreadable as error:
                raise ModelUnreadable(f"model {name}: {error}") from None
            except PackageError as error:
                raise ModelError(f"model {name}: {error}") from None
        return load_package_classifier(
            name,
            path,
            settings.torch_threads,
            runtime=settings.model_runtime,
            cache_dir=settings.model_cache_dir,
        )

    # Where each MODELS entry that can change is now: a link's target, a pointer's version.
    sources = watched(settings.model_packages, clients["s3"], settings.model_pointer_check_s)

    def where(name: str, path: str) -> str:
        if name not in sources:
            return path
        try:
            return sources[name]()
        except PackageError as error:
            raise ModelError(f"model {name}: {error}") from None

    try:
        classifier = load_classifier(
            settings.model,
            settings.preprocess,
            settings.torch_threads,
            optimize=settings.model_optimize,
            runtime=settings.model_runtime,
            cache_dir=settings.model_cache_dir,
        )
        # The packages of MODELS, each held until a new version replaces it (worker.served):
        # loaded from where each entry points now, as the rollout compares it.
        serving = {name: where(name, p) for name, p in settings.model_packages.items()}
        others = {name: load_package(name, target) for name, target in serving.items()}
        problem = over_bound([classifier, *others.values()], settings.worker_models_memory_mb)
        if problem:
            raise ModelError(problem)
    except ModelError as error:
        print(f"worker: {error}", file=sys.stderr)
        return EXIT_CONFIG
    instance = os.environ.get("INSTANCE_ID", "")
    # One line per request id received and replied: follow it from the web.
    trace_sqs(clients["sqs"], log)
    try:
        worker = build_worker(
            settings,
            classifier=classifier,
            instance=instance,
            others=others,
            ec2=make_client("ec2", settings, pool_size=1),
            requests=requests,
            rollout={
                "sources": sources,
                "load": load_package,
                "refusals": (ModelError, PackageError),
                "serving": serving,
                "retried": (ModelUnreadable,),
            },
            **clients,
        )
    except Exception as error:  # noqa: BLE001 - one line and exit: nothing started yet
        print(f"worker: cannot reach queue {settings.request_queue!r}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    on_stop.append(worker.pipeline.request_stop)
    if stop.is_set():
        log.info("stopped before it started")
        return EXIT_OK
    watch = None
    if settings.instance_metadata_url:
        from worker.notice import watch_notices

        def on_notice(notice: str) -> None:
            # Stop first: the tag is an EC2 call that may be slow, the notice gives two minutes.
            log.warning("notice of %s: no more receives; finishing what is in hand", notice)
            worker.pipeline.request_stop()
            announce_notice(make_client("ec2", settings, pool_size=1), instance)

        watch = watch_notices(settings.instance_metadata_url, settings.notice_poll_s, on_notice)
        if watch.notice is not None:
            log.info("under notice before it started: exiting")
            return EXIT_OK
    log.info(
        "worker %s ready: model %s on %s%s",
        instance or "-",
        classifier.name,
        getattr(classifier, "runtime", "torch"),
        "".join(f", {name} {c.version} on {c.runtime}" for name, c in others.items()),
    )

    # The scaler shows this instance as "starting" until this tag says the model is loaded, and
    # then the versions it serves (a rollout switch retags them, worker.service).
    # In the background: the queue must not wait on an EC2 call (slow or failing, it is only shown).
    def announce() -> None:
        ec2 = make_client("ec2", settings, pool_size=1)
        announce_models(ec2, instance, worker.pipeline.models.classifiers())
        announce_ready(ec2, instance)

    threading.Thread(
        target=announce,
        name="announce-ready",
        daemon=True,
    ).start()
    worker.run()
    left = f" (left on notice of {watch.notice.split(':')[0]})" if watch and watch.notice else ""
    log.info("worker stopped after %d images%s", worker.pipeline.stats.images, left)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
