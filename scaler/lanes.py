"""Two lanes, one fleet: how much of the job lane's backlog the policy gets to see.

Interactive requests count in full. Batch-job images count only up to what `job_fleet_max`
instances hold within the latency target, so a 10,000-image job grows the fleet to that many
instances and no further, while an interactive burst on top of it can still grow it to the
fleet's own maximum. Pure: numbers in, numbers out.
"""

from __future__ import annotations

import math

from scaler.policies import SEED_IMAGES_PER_INSTANCE, PolicyError, backlog_per_instance


def per_instance(policy: str, latency_target_s: float, throughput_img_s: float) -> float:
    """Messages one instance is sized for under `policy`."""
    if policy == "seed":
        return float(SEED_IMAGES_PER_INSTANCE)
    return backlog_per_instance(latency_target_s, throughput_img_s)


def job_share(job_load: int, job_fleet_max: int, per_instance_load: float) -> int:
    """The job lane's load as the policy should see it (job_fleet_max 0: all of it)."""
    if job_load < 0 or job_fleet_max < 0 or per_instance_load <= 0:
        raise PolicyError(f"bad job lane numbers: {job_load}, {job_fleet_max}, {per_instance_load}")
    if job_fleet_max == 0:
        return job_load
    return min(job_load, math.floor(job_fleet_max * per_instance_load))
