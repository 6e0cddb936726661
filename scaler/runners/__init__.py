"""Local runners: turn the fleet's EC2 instance states into real workers (processes, containers)."""

from __future__ import annotations

from collections.abc import Mapping

from runtime.settings import Settings
from scaler.runners.base import Runner


def make_runner(settings: Settings, env: Mapping[str, str]) -> Runner | None:
    """The runner settings.runner names; None for real EC2, whose instances run their own worker.

    env is the environment workers inherit (the caller's main() reads it). Runners are imported
    here, lazily, so a deployment without Docker never imports the Docker SDK.
    """
    if settings.runner == "none":
        return None
    if settings.runner == "process":
        from scaler.runners.process import ProcessRunner

        return ProcessRunner(
            env,
            boot_delay_new_s=settings.boot_delay_new_s,
            boot_delay_start_s=settings.boot_delay_start_s,
            # Past the visibility timeout a batch is redelivered anyway: waiting longer is moot.
            drain_timeout_s=float(settings.visibility_timeout_s),
        )
    if settings.runner == "docker":
        from scaler.runners.docker import docker_runner

        # Joins DOCKER_NETWORK (compose's, to reach LocalStack by name); drains past the timeout.
        return docker_runner(settings, env)
    raise ValueError(f"unknown runner {settings.runner!r}")
