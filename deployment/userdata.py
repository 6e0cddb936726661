"""Every host's EC2 user-data: docker/host-user-data.sh behind a block of quoted settings.

Two kinds of host: a worker (one container) and the web host (the scaler on the host network,
then the web tier on a bridge, the scaler handing it the web role's session).

One rendering serves both the template and the tests: `header()` yields literal text and, where
the stack decides a value at deploy time (a bucket's name, a parameter), the CloudFormation
expression for it. `render()` fills those from the settings, so it returns exactly what the
launch template delivers to an instance for those settings (a test compares the two on moto).
Only settings go in: no credentials, no endpoint URL (real EC2 talks to real AWS with its
instance profile).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.settings import Settings, tier_fields

SCRIPT = Path(__file__).resolve().parent.parent / "docker" / "host-user-data.sh"

Part = str | dict  # literal text, or a CloudFormation expression such as {"Ref": "Model"}


@dataclass(frozen=True)
class Container:
    """One container a host runs: what it reads, where it listens, how it gets credentials."""

    name: str
    tier: str  # settings of this tier (and of "all") go into the container's environment
    extra: tuple[str, ...] = ()  # settings of other tiers it reads too
    port_setting: str = ""  # the setting whose port is published on the host (none if empty)
    command: tuple[str, ...] = ()  # the image's default command if empty
    # "bridge" (Docker's default network: one hop from the host, so no metadata token under a
    # hop limit of 1) or "host" (the host's network: the one that reaches instance metadata).
    network: str = "bridge"
    # The web role's session (runtime.web_credentials): "writes" it, "reads" it, or neither.
    handover: str = ""


# Beyond the worker tier's own settings, the worker labels its throughput metric by fleet.
WORKER = Container("classifier-worker", "worker", extra=("fleet_name",))
# The web tier keys its result cache by the workers' model and preprocessing.
WEB = Container(
    "classifier-web", "web", extra=("model", "preprocess"), port_setting="port", handover="reads"
)
SCALER = Container(
    "classifier-scaler",
    "scaler",
    command=("python", "-m", "scaler"),
    network="host",
    handover="writes",
)
# Where both web-host containers mount the handover directory (the same path in each, so the
# AWS config the scaler writes names the file as the web container sees it).
HANDOVER_MOUNT = "/run/elastic-classifier/web-credentials"
# How a bridge-networked container names the host (docker run --add-host ...:host-gateway).
SCALER_STATUS_FROM_BRIDGE = "http://host.docker.internal:{port}/status"
# The web image's user (Dockerfile.web's USER): it owns the handover directory on the host.
IMAGE_UID = 10001


# Settings that belong to the image, not to the deployment: the worker image sets
# MODEL_CACHE_DIR to where its build exported the model (Dockerfile.worker); the default here
# (.run/models, for `make up`) would send a booted worker to export it again where it cannot.
IMAGE_SETTINGS = frozenset({"model_cache_dir"})
# Settings the script itself sets: the metadata service's address is the one it used (a test's
# stand-in instance has its own), so the worker watches the same service for notices.
SCRIPT_SETTINGS = frozenset({"instance_metadata_url"})


def host_env(settings: Settings, container: Container) -> dict[str, str]:
    """The settings a container reads, by environment variable, as text."""
    skipped = IMAGE_SETTINGS | SCRIPT_SETTINGS
    names = [f.name for f in tier_fields(container.tier) if f.name not in skipped]
    names += [name for name in container.extra if name not in names]
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


def on_hosts(settings: Settings) -> Settings:
    """The settings as the stack's hosts get them: the web tier listens beyond its container,
    the scaler's /status on the host (the web container reaches it over the bridge by the host's
    name; the security group keeps the port closed to everyone else), and the handover where
    both web-host containers mount it."""
    return dataclasses.replace(
        settings,
        host="0.0.0.0",
        scaler_status_host="0.0.0.0",
        scaler_status_url=SCALER_STATUS_FROM_BRIDGE.format(port=settings.scaler_status_port),
        web_credentials_dir=HANDOVER_MOUNT,
        # Beside the session, where both containers see it (runtime.wake).
        scaler_wake_token_file=f"{HANDOVER_MOUNT}/wake-token",
    )


def render_web_host(settings: Settings, image: str, scaler_stop_timeout_s: int) -> str:
    """The web host's user-data for these settings and web image, as its launch template has it."""
    containers = web_host_containers(settings, scaler_stop_timeout_s)
    return "".join(header(settings, image, containers)) + script()


def web_host_containers(settings: Settings, scaler_stop_timeout_s: int) -> list:
    """The web host's containers in start order: the scaler first, as the web container
    needs the session it hands over."""
    return [
        (SCALER, scaler_stop_timeout_s),
        (WEB, int(settings.result_timeout_s) + 10),  # a waiting upload may get its answer
    ]


def header(
    settings: Settings,
    image: Part,
    containers: list[tuple[Container, int]],
    expressions: Mapping[str, dict] | None = None,
) -> list[Part]:
    """The settings block that goes before the script on a host that runs `containers` (each
    with its stop timeout) of `image`, as literal text and (for the settings named in
    `expressions`, by field name) the CloudFormation expressions for them."""
    expressions = expressions or {}
    variables: list[tuple[str, list[Part]]] = [
        ("IMAGE", [image if isinstance(image, dict) else _literal("IMAGE", image)]),
        ("HANDOVER_MOUNT", [HANDOVER_MOUNT]),
        ("IMAGE_UID", [str(IMAGE_UID)]),
        ("CONTAINER_COUNT", [str(len(containers))]),
    ]
    for number, (container, stop_timeout_s) in enumerate(containers, start=1):
        env: list[Part] = []
        for name, value in host_env(settings, container).items():
            env += ["\n" if env else "", f"{name}="]
            env.append(expressions.get(name.lower()) or _literal(name, value))
        port = str(getattr(settings, container.port_setting)) if container.port_setting else ""
        variables += [
            (f"CONTAINER_{number}", [container.name]),
            (f"NETWORK_{number}", [container.network]),
            (f"HANDOVER_{number}", [container.handover]),
            (f"PUBLISH_PORT_{number}", [port]),
            (f"COMMAND_{number}", [" ".join(container.command)]),
            (f"STOP_TIMEOUT_S_{number}", [str(stop_timeout_s)]),
            (f"CONTAINER_ENV_{number}", env),
        ]
    out: list[Part] = [
        "#!/bin/bash\n# Rendered by deployment/userdata.py from docker/host-user-data.sh.\n"
        "# shellcheck disable=SC2034 # the numbered settings are read by name\n"
    ]
    for name, value in variables:
        out += [f"{name}='", *value, "'\n"]
    return out


def render(settings: Settings, stop_timeout_s: int) -> str:
    """The workers' user-data for these settings, exactly as the launch template delivers it."""
    return "".join(header(settings, settings.worker_image, [(WORKER, stop_timeout_s)])) + script()


def script() -> str:
    return SCRIPT.read_text()
