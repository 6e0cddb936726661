"""One worker process on one core against a full queue, and its cold start.

moto and this harness share the other core, so the worker's core does nothing but the worker.
Requests are put on the queue directly (the images already in S3), as the web tier would.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.machine import CpuMeter, CpuWindow
from bench.model import taskset
from bench.phones import PhonePhotos
from bench.photos import Photo, Photos
from bench.stacks import HOST, clients, free_port, stack_env, start_moto, stop_workers
from embedded.provision import provision
from embedded.stack import Stack, StackError, python_module
from runtime import sqs
from runtime.messages import MessageError, Request, Result, new_request_id
from runtime.settings import Settings


@dataclass(frozen=True)
class Drain:
    images: int
    wall_s: float  # from releasing the paused worker to the last reply read
    errors: int
    batch_mean: float  # images per forward pass, from the worker's reported timings (0: none)
    model_s: float  # seconds of forward passes the worker reported (0: none)
    cpu: CpuWindow  # where the CPU went meanwhile
    stage_cpu_s: dict[str, float]  # the worker's own CPU seconds per stage (its /metrics)

    @property
    def img_s(self) -> float:
        return self.images / self.wall_s


@dataclass(frozen=True)
class WorkerRun:
    cold_start_s: float
    full: Drain  # every request queued before the worker may start
    fed: Drain  # the queue kept a few batches deep: what the worker does in steady state
    fed_depth: int
    phone_full: Drain  # the same two drains with 12 MP phone photos
    phone_fed: Drain


@dataclass(frozen=True)
class Reply:
    arrived: float  # perf_counter when the harness read it
    result: Result


def run(
    photos: Photos,
    phones: PhonePhotos,
    count: int,
    phone_count: int,
    warmup: int,
    log_dir: Path,
    overrides: dict,
) -> WorkerRun:
    cpus = sorted(os.sched_getaffinity(0))
    aws_cpus, worker_cpus = (cpus[0],), (cpus[-1],)
    saved = os.sched_getaffinity(0)
    # The harness's own AWS calls run on moto's core, never on the worker's.
    os.sched_setaffinity(0, aws_cpus)
    moto_stack, endpoint = start_moto(log_dir, aws_cpus)
    # The worker's /metrics says where its CPU goes, stage by stage.
    metrics_port = free_port()
    env = stack_env(
        endpoint,
        f"bench{os.getpid()}w",
        {"TORCH_THREADS": "1", "WORKER_METRICS_PORT": str(metrics_port), **overrides},
    )
    settings = Settings.from_env(env)
    # moto's receive costs CPU in proportion to the queue's depth; a few batches ahead keep
    # the worker busy without that cost.
    fed_depth = 3 * settings.batch_max
    stack = Stack(env=env, log_dir=log_dir)
    worker = queued = None
    try:
        s3, sqs = clients(endpoint, settings)
        queue_url = provision(settings, s3, sqs)["request_queue_url"]
        reply_url = sqs.create_queue(QueueName=f"{settings.reply_queue_prefix}bench")["QueueUrl"]
        queued = Queued(
            s3, sqs, settings, queue_url, reply_url, moto_stack.processes[0][1].pid, metrics_port
        )
        cold, warm, full, fed = (queued.put(photos.full(n)) for n in (1, warmup, count, count))
        phone_full, phone_fed = (queued.put(phones.take(phone_count)) for _ in range(2))

        queued.send(cold)
        started = time.perf_counter()
        worker = stack.start(
            "worker", [*taskset(worker_cpus), *python_module("worker")], {"INSTANCE_ID": "bench-w"}
        )
        first = queued.await_replies(cold, worker, timeout_s=240)
        cold_start_s = max(r.arrived for r in first.values()) - started
        queued.send(warm)
        queued.await_replies(warm, worker, timeout_s=120)
        full_drain = queued.drain(worker, full, depth=None)
        fed_drain = queued.drain(worker, fed, depth=fed_depth)
        phone_full_drain = queued.drain(worker, phone_full, depth=None)
        phone_fed_drain = queued.drain(worker, phone_fed, depth=fed_depth)
    finally:
        stop_workers([worker] if worker else [])
        if queued is not None:
            queued.close()
        stack.stop()
        moto_stack.stop()
        os.sched_setaffinity(0, saved)
    return WorkerRun(
        cold_start_s, full_drain, fed_drain, fed_depth, phone_full_drain, phone_fed_drain
    )


def stage_cpu_seconds(port: int) -> dict[str, float]:
    """The worker's CPU seconds so far per stage, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["stage"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "classifier_worker_stage_cpu_seconds"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def _reported(results) -> tuple[float, float]:
    """Mean batch and total model seconds from the timings the worker puts in each result."""
    sizes, model_s = [], 0.0
    for result in results:
        batch, model_ms = result.timings_ms.get("batch"), result.timings_ms.get("model")
        if isinstance(batch, int | float) and batch > 0 and isinstance(model_ms, int | float):
            sizes.append(batch)
            model_s += model_ms / batch / 1e3  # this image's share of its forward pass
    if not sizes:
        return 0.0, 0.0
    return statistics.harmonic_mean(sizes), model_s


class Queued:
    """Requests as the web tier makes them: bytes in the input bucket, a message on the queue."""

    def __init__(
        self,
        s3,
        sqs,
        settings: Settings,
        queue_url: str,
        reply_url: str,
        moto_pid: int,
        metrics_port: int,
    ):
        self._s3, self._sqs, self._settings = s3, sqs, settings
        self._queue_url, self._reply_url = queue_url, reply_url
        self._moto_pid, self._metrics_port = moto_pid, metrics_port
        self._pool = ThreadPoolExecutor(max_workers=8)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def put(self, photos: list[Photo]) -> list[Request]:
        requests = [self._request(photo) for photo in photos]
        list(self._pool.map(self._put_object, requests, photos))
        return requests

    def send(self, requests: list[Request]) -> None:
        list(self._pool.map(self._send_batch, sqs.chunks(requests)))

    def drain(self, worker, requests: list[Request], depth: int | None) -> Drain:
        """Queue `depth` requests (None: all) while the worker is paused, then release it and
        send one more request for every reply until all are answered."""
        first, rest = (requests, []) if depth is None else (requests[:depth], requests[depth:])
        # Paused while the queue fills, the worker's clock starts when it may take its first
        # message. (stop_workers resumes it if anything here fails.) Its /metrics are read
        # first: a paused worker cannot answer them.
        stages_before = stage_cpu_seconds(self._metrics_port)
        os.kill(worker.pid, signal.SIGSTOP)
        self.send(first)
        meter = CpuMeter({"moto": self._moto_pid, "worker": worker.pid, "harness": None}).start()
        started = time.perf_counter()
        os.kill(worker.pid, signal.SIGCONT)
        replies = self.await_replies(
            requests, worker, timeout_s=120 + 2.0 * len(requests), refill=rest
        )
        wall_s = max(r.arrived for r in replies.values()) - started
        # The last batch is still being stored and deleted after its replies: let it finish, so
        # both meters see all of its work (an idle worker costs next to no CPU meanwhile).
        time.sleep(0.5)
        cpu = meter.stop()
        stages = stage_cpu_seconds(self._metrics_port)
        batch_mean, model_s = _reported(r.result for r in replies.values())
        return Drain(
            images=len(replies),
            wall_s=wall_s,
            errors=sum(1 for r in replies.values() if not r.result.ok),
            batch_mean=batch_mean,
            model_s=model_s,
            cpu=cpu,
            stage_cpu_s={k: v - stages_before.get(k, 0.0) for k, v in stages.items()},
        )

    def await_replies(
        self, requests: list[Request], worker, timeout_s: float, refill: list[Request] = ()
    ) -> dict:
        """Read the reply queue until every request has its reply; id -> Reply. Each reply
        sends the next request of `refill`, so the queue stays as deep as it started."""
        wanted = {request.id for request in requests}
        refill = list(refill)
        got: dict[str, Reply] = {}
        deadline = time.monotonic() + timeout_s
        while wanted - got.keys():
            if worker.poll() is not None:
                raise StackError(f"the worker exited with {worker.returncode}")
            if time.monotonic() > deadline:
                raise StackError(f"{len(wanted - got.keys())} replies missing after {timeout_s} s")
            messages = self._sqs.receive_message(
                QueueUrl=self._reply_url,
                MaxNumberOfMessages=sqs.BATCH_MAX,
                WaitTimeSeconds=1,
            ).get("Messages", [])
            arrived, answered = time.perf_counter(), len(got)
            self._delete_replies(messages)
            for message in messages:
                try:
                    result = Result.decode(message["Body"])
                except MessageError:
                    continue
                if result.id in wanted and result.id not in got:
                    got[result.id] = Reply(arrived, result)
            if refill and len(got) > answered:
                more, refill = refill[: len(got) - answered], refill[len(got) - answered :]
                self.send(more)
        return got

    def _delete_replies(self, messages: list[dict]) -> None:
        # Deleted at once: moto's receive scans every message a queue still holds.
        for chunk in sqs.chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
            ]
            self._sqs.delete_message_batch(QueueUrl=self._reply_url, Entries=entries)

    def _request(self, photo: Photo) -> Request:
        request = Request.create(
            new_request_id(), photo.filename, self._reply_url, time.time() + 3600
        )
        # As web.store sends it: a small upload rides in its message as well as in the bucket.
        return request.with_inline(photo.data, self._settings.inline_max_bytes)

    def _put_object(self, request: Request, photo: Photo) -> None:
        self._s3.put_object(Bucket=self._settings.input_bucket, Key=request.key, Body=photo.data)

    def _send_batch(self, chunk: list[Request]) -> None:
        entries = [{"Id": str(i), "MessageBody": r.encode()} for i, r in enumerate(chunk)]
        self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
