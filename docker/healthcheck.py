"""HEALTHCHECK of both images: asks the process the container runs whether it is ready.

One image serves the web tier and the scaler (another command), so the check looks at PID 1's
command line: the web tier must answer /healthz (200 once buckets and queues answer), the scaler
its status port (any HTTP answer); a worker has no port, so it is healthy while its process runs.
Standard library only, and no torch import: it runs every 30 s beside the real work.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping


def _answers(url: str, any_status: bool) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except urllib.error.HTTPError:
        return any_status  # the server answered: alive, whatever the path
    except OSError:
        return False


def healthy(command: list[str], env: Mapping[str, str]) -> bool:
    if "web" in command:
        return _answers(f"http://127.0.0.1:{env.get('PORT', '3000')}/healthz", any_status=False)
    if "scaler" in command:
        return _answers(f"http://127.0.0.1:{env.get('SCALER_STATUS_PORT', '3001')}/", True)
    return bool(command)


def main() -> int:
    try:
        with open("/proc/1/cmdline", "rb") as file:
            command = [part.decode() for part in file.read().split(b"\0") if part]
    except OSError:
        command = []
    return 0 if healthy(command, os.environ) else 1


if __name__ == "__main__":
    sys.exit(main())
