"""Policies by name (the POLICY setting), bound to the deployment's configuration."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from runtime.settings import DEFAULT_POLICY, POLICIES
from scaler.drain import DrainParams, drain
from scaler.plan import Actions, Instance, PoolRules, plan, plan_original
from scaler.policies import Policy, PolicyConfig, PolicyError, TargetParams, seed, target

__all__ = ["DEFAULT_POLICY", "POLICIES", "make_planner", "make_policy"]


def make_policy(name: str, config: PolicyConfig) -> Policy:
    limits = config.limits
    if name == "seed":
        return partial(seed, limits=limits)
    if name == "target":
        params = TargetParams(config.latency_target_s, config.activation_load)
        return partial(target, limits=limits, params=params)
    if name == "drain":
        params = DrainParams(
            config.boot_new_s, config.boot_start_s, config.idle_delay_s, config.batch_max
        )
        return partial(drain, limits=limits, params=params)
    raise PolicyError(f"unknown policy {name!r}: choose one of {', '.join(POLICIES)}")


Planner = Callable[[int, list[Instance], float], Actions]


def make_planner(name: str, rules: PoolRules) -> Planner:
    """How the policy's count becomes actions: seed keeps the original executor's rules."""
    if name == "seed":
        return lambda desired, instances, now: plan_original(desired, instances)
    return partial(plan, rules=rules)
