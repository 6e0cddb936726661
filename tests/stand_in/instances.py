"""Stand-in EC2 instances for the user-data tests: containers with a Docker engine of their own.

Only what cannot exist here is replaced (tests/stand_in/): systemd (a systemctl for docker),
cloud-init (boot.sh runs the user-data on the first boot only), the metadata service (imds.py,
reached through the script's overridable address) and the registry (Debian's docker-registry,
no TLS). Shared by tests/test_user_data_boot.py (a worker) and tests/test_web_host_boot.py.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from pathlib import Path

from tests.container_support import unavailable

STAND_IN = Path(__file__).resolve().parent
BASE_IMAGE = "elastic-classifier-base:bookworm"
INSTANCE_IMAGE = "elastic-classifier-stand-in-instance:test"
REGISTRY_IMAGE = "elastic-classifier-stand-in-registry:test"
# What the instance's dockerd needs: every capability this machine's engine can grant (it lacks
# CAP_SYS_RESOURCE, so --privileged fails with "unable to apply caps").
ENGINE_CAPABILITIES = (
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
    "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
    "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_TIME SYS_TTY_CONFIG MKNOD "
    "LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ"
).split()
# What credentials look like in text: access key ids, and the variables that would carry them.
CREDENTIALS = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{12,}|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN")


def _build(client, dockerfile: str, tag: str, tmp_path, extra: list | None = None) -> None:
    context = tmp_path / tag.split(":")[0]
    shutil.copytree(STAND_IN, context, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for path in extra or []:
        shutil.copy2(path, context)
    client.images.build(
        path=str(context),
        dockerfile=dockerfile,
        tag=tag,
        buildargs={"BASE_IMAGE": BASE_IMAGE},
        network_mode="host",
        rm=True,
    )


def build_stand_ins(client, tmp_path) -> None:
    """The instance and registry images (cached by Docker after the first build)."""
    registry_binary = shutil.which("docker-registry")
    if registry_binary is None:
        unavailable("no docker-registry binary (apt-get install docker-registry)")
    _build(client, "instance.Dockerfile", INSTANCE_IMAGE, tmp_path)
    _build(client, "registry.Dockerfile", REGISTRY_IMAGE, tmp_path, [registry_binary])


def push(client, local: str, remote: str) -> None:
    client.images.get(local).tag(remote)
    for line in client.images.push(remote, stream=True, decode=True):
        assert "error" not in line, line
    client.images.remove(remote)  # so that nothing but a pull can bring it back


def address(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def boot(
    client,
    name: str,
    network: str,
    registry: str,
    user_data: str,
    imds_url: str,
    container_env: str,
):
    """A stand-in instance on `network` that runs `user_data` on its first boot; started.
    container_env: what the stand-in adds to every container's environment (the local AWS and
    the metadata service's address, both unset on EC2)."""
    instance = client.containers.create(
        INSTANCE_IMAGE,
        name=name,
        # Its own Docker engine, as a real instance has. Not --privileged: this machine's
        # engine lacks CAP_SYS_RESOURCE, so it grants every other capability by name.
        cap_add=ENGINE_CAPABILITIES,
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        device_cgroup_rules=["a *:* rwm"],
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        tmpfs={"/run": ""},  # a boot starts with an empty /run, as a machine's does
        network=network,
        environment={
            "INSECURE_REGISTRY": registry,
            "CLASSIFIER_IMDS_URL": imds_url,
            "CLASSIFIER_EXTRA_CONTAINER_ENV": container_env,
        },
    )
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = user_data.encode()
        info = tarfile.TarInfo("user-data")
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
    instance.put_archive("/var/lib/cloud", archive.getvalue())
    instance.start()
    return instance


def on(instance, *command: str) -> tuple[int, str]:
    code, output = instance.exec_run(list(command))
    return code, output.decode(errors="replace")


def container_status(instance, name: str) -> str:
    """`docker ps`'s status of one container on the instance ("Up ..."), or ""."""
    code, out = on(
        instance, "docker", "ps", "--all", "--filter", f"name={name}", "--format", "{{.Status}}"
    )
    return out.strip() if code == 0 else ""


def hop_limit(launch_template: str) -> int:
    """The metadata hop limit the stack's template gives that kind of host."""
    from deployment import template

    resource = template.template()["Resources"][launch_template]
    return resource["Properties"]["LaunchTemplateData"]["MetadataOptions"][
        "HttpPutResponseHopLimit"
    ]
