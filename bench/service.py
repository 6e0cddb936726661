"""The embedded stack on all cores (moto, one web, fixed workers) driven over real HTTP.

The client runs on the same cores as the stack: on a 2-core machine its CPU is part of what the
end-to-end numbers pay for, and the CPU meter says how much.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench import lanes
from bench.client import Batch, Uploader
from bench.machine import CpuMeter, CpuWindow
from bench.phones import PhonePhotos
from bench.photos import Photos
from bench.probe import aws_call_costs
from bench.stacks import HOST, clients, free_port, stack_env, start_moto, stop_workers
from embedded.provision import provision
from embedded.stack import Stack, StackError, python_module, wait_http
from runtime.settings import Settings


@dataclass(frozen=True)
class Sizes:
    warmup: int  # concurrent uploads per warm-up round (three rounds)
    seq: int
    cache: int
    burst: int
    e2e: int
    concurrency: int
    phone_e2e: int  # 12 MP phone photos uploaded at phone_concurrency after the e2e run
    phone_concurrency: int
    probes: int  # timed calls of each kind to the AWS emulator
    job: int = 0  # images of the batch job that runs under the `seq`-sized lane uploads


@dataclass(frozen=True)
class ServiceRun:
    workers: int
    concurrency: int
    seq: Batch
    cache: Batch
    burst: Batch
    e2e: Batch
    cpu: CpuWindow  # where the CPU went during the e2e run
    phone_e2e: Batch
    phone_cpu: CpuWindow
    aws_calls: dict[str, dict]  # cost of each kind of AWS call, alone
    lane: lanes.LaneRun | None = None  # sequential uploads while a batch job runs


def run(
    photos: Photos,
    phones: PhonePhotos,
    sizes: Sizes,
    workers: int,
    log_dir: Path,
    overrides: dict,
) -> ServiceRun:
    moto_stack, endpoint = start_moto(log_dir, None)
    port = free_port()
    name = f"bench{os.getpid()}s"
    env = stack_env(endpoint, name, {"TORCH_THREADS": "1", "PORT": str(port), **overrides})
    settings = Settings.from_env(env)
    stack = Stack(env=env, log_dir=log_dir)
    fleet = []
    try:
        s3, sqs = clients(endpoint, settings)
        provision(settings, s3, sqs)
        fleet = [
            stack.start(f"worker-{i}", python_module("worker"), {"INSTANCE_ID": f"bench-{i}"})
            for i in range(workers)
        ]
        web = stack.start("web", python_module("web"))
        wait_http(f"http://{HOST}:{port}/healthz", 60, web)
        uploader = Uploader(HOST, port)
        # Three rounds: every worker has loaded its model and run a few batches before timing.
        for _ in range(3):
            warm = uploader.concurrent(photos.full(sizes.warmup), sizes.warmup)
            if warm.failed:
                raise StackError(f"{warm.failed} warm-up uploads failed; see {log_dir}/")

        moto_pid = moto_stack.processes[0][1].pid
        # A photo of middling size stands for the uploads in the per-call costs.
        probe_photo = sorted(photos.full(9), key=lambda p: len(p.data))[4]
        aws_calls = aws_call_costs(
            s3,
            sqs,
            moto_pid,
            settings.input_bucket,
            f"{name}-probe",
            probe_photo.data,
            sizes.probes,
        )
        seq = uploader.sequential(photos.full(sizes.seq))
        seed = photos.full(1)
        uploader.sequential(seed)  # classified once; the repeats may be cached
        cache = uploader.sequential(seed * sizes.cache)
        burst = uploader.concurrent(photos.mixed(sizes.burst), sizes.burst)
        e2e_photos = photos.full(sizes.e2e)
        pids = {"moto": moto_pid, "web": web.pid, "client": None}
        pids.update({f"worker-{i}": p.pid for i, p in enumerate(fleet)})
        meter = CpuMeter(pids).start()
        e2e = uploader.concurrent(e2e_photos, sizes.concurrency)
        cpu = meter.stop()
        phone_photos = phones.take(sizes.phone_e2e)
        meter = CpuMeter(pids).start()
        phone_e2e = uploader.concurrent(phone_photos, sizes.phone_concurrency)
        phone_cpu = meter.stop()
        lane = None
        if sizes.job:
            lane = lanes.run(uploader, photos, f"http://{HOST}:{port}", sizes.job, sizes.seq)
        if dead := stack.dead():
            raise StackError(f"{', '.join(dead)} exited during the run; see {log_dir}/")
    finally:
        stop_workers(fleet)
        stack.stop()
        moto_stack.stop()
    return ServiceRun(
        workers=workers,
        concurrency=sizes.concurrency,
        seq=seq,
        cache=cache,
        burst=burst,
        e2e=e2e,
        cpu=cpu,
        phone_e2e=phone_e2e,
        phone_cpu=phone_cpu,
        aws_calls={"probe_photo_kb": round(len(probe_photo.data) / 1024), **aws_calls},
        lane=lane,
    )
