"""The workers' EC2 user-data: docker/worker-user-data.sh behind a block of quoted settings.

The settings go in as shell variables quoted here, so the script itself stays a plain file that
shellcheck and `bash -n` can read. Only settings go in: no credentials, no endpoint URL (real
EC2 talks to real AWS with its instance profile).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from deployment.iam import ecr_repository
from runtime.settings import Settings, tier_fields

SCRIPT = Path(__file__).resolve().parent.parent / "docker" / "worker-user-data.sh"


def worker_env(settings: Settings) -> dict[str, str]:
    """The settings a worker reads, as the environment of its container."""
    env = {}
    for f in tier_fields("worker"):
        value = str(getattr(settings, f.name))
        if "\n" in value or "\r" in value:
            raise ValueError(f"{f.name.upper()} must be one line")
        env[f.name.upper()] = value
    return env


def render(settings: Settings, stop_timeout_s: int) -> str:
    ecr = ecr_repository(settings.worker_image)
    env_file = "\n".join(f"{name}={value}" for name, value in worker_env(settings).items())
    variables = {
        "WORKER_IMAGE": settings.worker_image,
        "ECR_REGISTRY": settings.worker_image.split("/", 1)[0] if ecr else "",
        "ECR_REGION": ecr[1] if ecr else "",
        "STOP_TIMEOUT_S": str(stop_timeout_s),
        "WORKER_ENV": env_file,
    }
    header = ["#!/bin/bash", "# Rendered by `python -m deployment deploy` (deployment/userdata)."]
    header += [f"{name}={shlex.quote(value)}" for name, value in variables.items()]
    return "\n".join(header) + "\n" + SCRIPT.read_text()
