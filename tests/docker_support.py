"""A Docker engine and a stand-in worker image for the Docker runner's tests.

No registry is reachable, so nothing is pulled: the image is a busybox static binary and a shell
script imported as a root filesystem (`docker import`). The script does what matters of a
worker here: it runs until SIGTERM, then "drains" and exits 0, so a SIGKILL shows as 137.
`docker/ci-dockerd.sh` installs and starts the engine on a fresh CI machine.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from tests.container_support import unavailable

STAND_IN_IMAGE = "elastic-classifier-stand-in-worker:test"
_BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
_APPLETS = ("sh", "sleep", "echo", "cat", "env")
_WORKER_SCRIPT = b"""#!/bin/sh
echo "worker $INSTANCE_ID up"
trap 'echo "worker $INSTANCE_ID draining"; exit 0' TERM
while :; do sleep 1 & wait $!; done
"""


def _static_busybox() -> Path:
    for candidate in [*_BUSYBOX_PATHS, shutil.which("busybox") or ""]:
        path = Path(candidate)
        # Only a static build runs in an image with no libc; a dynamic one names its loader
        # (PT_INTERP) in the first page of the file.
        if candidate and path.is_file() and b"ld-linux" not in path.read_bytes()[:4096]:
            return path
    unavailable("no static busybox binary; apt-get install busybox-static")


def _root_filesystem(busybox: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in _APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        script = tarfile.TarInfo("worker.sh")
        script.size = len(_WORKER_SCRIPT)
        script.mode = 0o755
        tar.addfile(script, io.BytesIO(_WORKER_SCRIPT))
        tmp = tarfile.TarInfo("tmp")
        tmp.type = tarfile.DIRTYPE
        tmp.mode = 0o1777
        tar.addfile(tmp)
    return buffer.getvalue()


def stand_in_image(client) -> str:
    """Import the stand-in worker image once per engine; return its tag."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(STAND_IN_IMAGE)
        return STAND_IN_IMAGE
    except ImageNotFound:
        pass
    repository, tag = STAND_IN_IMAGE.split(":")
    client.api.import_image_from_data(
        _root_filesystem(_static_busybox()),
        repository=repository,
        tag=tag,
        changes=['CMD ["/bin/sh", "/worker.sh"]'],
    )
    return STAND_IN_IMAGE
