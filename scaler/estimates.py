"""What the scaler learns about its own fleet and keeps across restarts: boot times and throughput.

A boot is the seconds from an instance's launch (or its start out of the warm pool) to its
worker's ready tag (runtime.readiness): what the drain policy must wait before an added instance
works. Each instance type keeps its last SAMPLES_KEPT boots of each kind; the estimate is their
median, which one slow boot (an image pull, a cold cache) does not move. The workers' throughput
is measured from their usage tags (images per busy second of the runs in progress, read with the
same listing: `reported_rate`) and remembered per model, so that after an idle period (no worker
running) the scaler plans with what the workers last did rather than with the configured
default. Defaults stand only until the first measurement; every estimate says which it is.

Kept as one small JSON object in the output bucket (runtime.keys.SCALER_ESTIMATES), the same in
the cloud and on `make up`: it survives a scaler restart or a new scaler host.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from runtime.failures import describe, is_not_found
from runtime.usage import parse_usage
from scaler.gauges import Throughput
from scaler.plan import CAPACITY_STATES, Instance

log = logging.getLogger(__name__)

SAMPLES_KEPT = 9
BOOT_MAX_S = 3600.0  # longer than this is no boot but a clock or tag out of step: ignored
RECORDED_KEPT = 64  # runs already measured, so a restarted scaler does not count them twice
KINDS = ("new", "start")
VERSION = 1


@dataclass(frozen=True)
class Estimate:
    value: float
    source: str  # "measured", "remembered" (throughput only) or "default"
    samples: int = 0

    def label(self, unit: str = "s") -> str:
        return f"{self.value:.1f}{unit}({self.source})"

    def as_status(self) -> dict:
        return {"value": round(self.value, 2), "source": self.source, "samples": self.samples}


class Estimates:
    """Boot samples per instance type and kind, and the last measured throughput per model."""

    def __init__(self, default_new_s: float, default_start_s: float):
        self._defaults = {"new": default_new_s, "start": default_start_s}
        self.boots: dict[str, dict[str, list[float]]] = {}
        self.throughput: dict[str, float] = {}
        self._recorded: list[str] = []

    # Learning ------------------------------------------------------------------------------

    def observe(self, instances: Iterable[Instance]) -> list[tuple[str, str, float]]:
        """Record the boot of each instance that became ready in a run not measured yet;
        returns the new samples as (instance type, kind, seconds)."""
        found = []
        for instance in instances:
            if instance.ready_at is None:
                continue
            run = f"{instance.instance_id}@{instance.launched_at:.3f}"
            boot_s = instance.ready_at - instance.launched_at
            if run in self._recorded or not 0 <= boot_s <= BOOT_MAX_S:
                continue
            self._recorded = [*self._recorded, run][-RECORDED_KEPT:]
            kind = "start" if instance.restarted else "new"
            kept = self.boots.setdefault(instance.instance_type or "?", {})
            kept[kind] = [*kept.get(kind, []), round(boot_s, 3)][-SAMPLES_KEPT:]
            found.append((instance.instance_type, kind, boot_s))
        return found

    def remember_throughput(self, model: str, img_s: float) -> bool:
        """Keep a measured rate; True when it differs enough from the kept one to be saved."""
        kept = self.throughput.get(model)
        self.throughput[model] = img_s
        return kept is None or abs(img_s - kept) > 0.1 * kept

    # Planning ------------------------------------------------------------------------------

    def boot(self, kind: str, instance_type: str = "") -> Estimate:
        """The median boot of `kind` for this type; of every type when it has none yet."""
        samples = self.boots.get(instance_type, {}).get(kind) or [
            s for kept in self.boots.values() for s in kept.get(kind, [])
        ]
        if not samples:
            return Estimate(self._defaults[kind], "default")
        return Estimate(statistics.median(samples), "measured", len(samples))

    def img_s(self, model: str, gauge: Throughput) -> Estimate:
        """The workers' rate: measured now, else the last measured, else the gauge's default."""
        if gauge.measured:
            return Estimate(gauge.img_s, "measured", gauge.workers)
        if model in self.throughput:
            return Estimate(self.throughput[model], "remembered")
        return Estimate(gauge.img_s, "default")

    # Keeping -------------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "version": VERSION,
            "boot_s": self.boots,
            "throughput_img_s": self.throughput,
            "recorded": self._recorded,
        }

    def load(self, data: dict) -> None:
        """Take what a previous scaler kept; anything malformed is dropped, not trusted."""
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return
        boots = data.get("boot_s", {})
        for instance_type, kept in boots.items() if isinstance(boots, dict) else ():
            for kind in KINDS:
                raw = kept.get(kind) if isinstance(kept, dict) else None
                samples = [float(s) for s in raw if _number(s)] if isinstance(raw, list) else []
                samples = [s for s in samples if 0 <= s <= BOOT_MAX_S][-SAMPLES_KEPT:]
                if samples:
                    self.boots.setdefault(str(instance_type), {})[kind] = samples
        rates = data.get("throughput_img_s", {})
        for model, img_s in rates.items() if isinstance(rates, dict) else ():
            if _number(img_s) and img_s > 0:
                self.throughput[str(model)] = float(img_s)
        recorded = data.get("recorded", [])
        if isinstance(recorded, list):
            self._recorded = [str(r) for r in recorded][-RECORDED_KEPT:]


def reported_rate(instances: Iterable[Instance]) -> Throughput | None:
    """Per-worker images per busy second, over the runs in progress whose workers have answered
    something, from their usage tags (runtime.usage); None when no such run has told one.

    A tag written in an earlier run of the instance (a start from stopped keeps its tags) is no
    measure of this one. The sum of images over the sum of busy seconds weighs each worker by its
    busy time, as one worker's cumulative figure weighs its own batches."""
    images, busy_s, workers = 0, 0.0, 0
    for instance in instances:
        usage = parse_usage(instance.usage) if instance.usage else None
        if instance.state not in CAPACITY_STATES or usage is None:
            continue
        if not _this_run(usage.run, instance.launched_at) or usage.images <= 0:
            continue
        if usage.busy_s <= 0:  # a worker that does not tell its busy time
            continue
        images, busy_s, workers = images + usage.images, busy_s + usage.busy_s, workers + 1
    return Throughput(images / busy_s, measured=True, workers=workers) if workers else None


def _this_run(run: str, launched_at: float) -> bool:
    try:
        return float(run) >= launched_at  # the worker process started after this run began
    except ValueError:
        return False


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class EstimateStore:
    """The estimates as one S3 object. Failures are logged and never fail a tick: without the
    store the scaler still measures, it only forgets on restart."""

    def __init__(self, s3, bucket: str, key: str):
        self._s3, self._bucket, self._key = s3, bucket, key

    def load(self) -> dict:
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key)["Body"].read()
        except (ClientError, BotoCoreError) as error:
            if not is_not_found(error):
                log.warning("estimates unreadable (%s); starting from defaults", describe(error))
            return {}
        try:
            return json.loads(body)
        except ValueError:
            log.warning("estimates at s3://%s/%s are not JSON; ignored", self._bucket, self._key)
            return {}

    def save(self, data: dict) -> bool:
        body = json.dumps(data, sort_keys=True).encode()
        try:
            self._s3.put_object(
                Bucket=self._bucket, Key=self._key, Body=body, ContentType="application/json"
            )
        except (ClientError, BotoCoreError) as error:
            log.warning("estimates not saved (%s); kept in memory", describe(error))
            return False
        return True
