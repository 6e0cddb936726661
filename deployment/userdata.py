"""Every host's EC2 user-data: docker/host-user-data.sh behind a block of quoted settings.

One rendering serves both the template and the tests: `header()` yields literal text and, where
the stack decides a value at deploy time (a bucket's name, a parameter), the CloudFormation
expression for it. `render()` fills those from the settings, so it returns exactly what the
launch template delivers to an instance for those settings (a test compares the two on moto).
Only settings go in: no credentials, no endpoint URL (real EC2 talks to real AWS with its
instance profile).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.settings import Settings, tier_fields

SCRIPT = Path(__file__).resolve().parent.parent / "docker" / "host-user-data.sh"

Part = str | dict  # literal text, or a CloudFormation expression such as {"Ref": "Model"}


@dataclass(frozen=True)
class Host:
    """One kind of host: the container it runs and the settings that container reads."""

    container: str
    tier: str  # settings of this tier (and of "all") go into the container's environment
    extra: tuple[str, ...] = ()  # settings of other tiers it reads too
    port_setting: str = ""  # the setting whose port is published on the host (none if empty)
    command: tuple[str, ...] = ()  # the image's default command if empty


# Beyond the worker tier's own settings, the worker labels its throughput metric by fleet.
WORKER = Host("classifier-worker", "worker", extra=("fleet_name",))
# The web tier keys its result cache by the workers' model and preprocessing.
WEB = Host("classifier-web", "web", extra=("model", "preprocess"), port_setting="port")
SCALER = Host(
    "classifier-scaler",
    "scaler",
    port_setting="scaler_status_port",
    command=("python", "-m", "scaler"),
)


# Settings that belong to the image, not to the deployment: the worker image sets
# MODEL_CACHE_DIR to where its build exported the model (Dockerfile.worker); the default here
# (.run/models, for `make up`) would send a booted worker to export it again where it cannot.
IMAGE_SETTINGS = frozenset({"model_cache_dir"})
# Settings the script itself sets: the metadata service's address is the one it used (a test's
# stand-in instance has its own), so the worker watches the same service for notices.
SCRIPT_SETTINGS = frozenset({"instance_metadata_url"})


def host_env(settings: Settings, host: Host) -> dict[str, str]:
    """The settings a host's container reads, by environment variable, as text."""
    names = [
        f.name for f in tier_fields(host.tier) if f.name not in IMAGE_SETTINGS | SCRIPT_SETTINGS
    ]
    names += [name for name in host.extra if name not in names]
    return {name.upper(): str(getattr(settings, name)) for name in names}


def worker_env(settings: Settings) -> dict[str, str]:
    """The settings a worker reads, as the environment of its container."""
    return host_env(settings, WORKER)


def _literal(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"{name} must be one line")
    # Inside single quotes only a quote needs care. Expressions are never escaped: the template
    # allows no quote in the parameters and names they resolve to.
    return value.replace("'", "'\\''")


def header(
    settings: Settings,
    host: Host,
    image: Part,
    stop_timeout_s: int,
    expressions: Mapping[str, dict] | None = None,
) -> list[Part]:
    """The settings block that goes before the script on `host`, as literal text and (for the
    settings named in `expressions`, by field name) the CloudFormation expressions for them."""
    expressions = expressions or {}
    env: list[Part] = []
    for name, value in host_env(settings, host).items():
        env += ["\n" if env else "", f"{name}="]
        env.append(expressions.get(name.lower()) or _literal(name, value))
    port = str(getattr(settings, host.port_setting)) if host.port_setting else ""
    variables: list[tuple[str, list[Part]]] = [
        ("IMAGE", [image if isinstance(image, dict) else _literal("IMAGE", image)]),
        ("CONTAINER", [host.container]),
        ("PUBLISH_PORT", [port]),
        ("COMMAND", [" ".join(host.command)]),
        ("STOP_TIMEOUT_S", [str(stop_timeout_s)]),
        ("CONTAINER_ENV", env),
    ]
    out: list[Part] = [
        "#!/bin/bash\n# Rendered by deployment/userdata.py from docker/host-user-data.sh.\n"
    ]
    for name, value in variables:
        out += [f"{name}='", *value, "'\n"]
    return out


def render(settings: Settings, stop_timeout_s: int) -> str:
    """The workers' user-data for these settings, exactly as the launch template delivers it."""
    return "".join(header(settings, WORKER, settings.worker_image, stop_timeout_s)) + script()


def script() -> str:
    return SCRIPT.read_text()
