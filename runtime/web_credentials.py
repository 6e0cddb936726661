"""The web role's short-lived credentials, handed from the scaler to the web container beside it.

On the web host only the scaler (host network) reaches instance metadata and so holds the
instance role; the web container (a bridge network, one hop too far for a metadata token) must
never hold it. The scaler assumes the web role, writes the session to a directory the web
container mounts read-only, and renews it every WEB_CREDENTIALS_REFRESH_S. The web's SDK reads
it through the standard `credential_process` of the AWS config file written beside it
(AWS_CONFIG_FILE), so boto3 refreshes by itself, 15 minutes before the copy it holds expires
(botocore's advisory window), by reading the file again: the file then always holds a session
with more than that left (Settings.validate), so a refresh never returns one about to expire.

Why a file and not the container-credentials endpoint: botocore takes an http
AWS_CONTAINER_CREDENTIALS_FULL_URI only on a loopback address (or ECS's and EKS's own), which a
bridge-networked container cannot share with a server on the host; a file needs no listener, no
token and no port. The process is `cat`: nothing to import, nothing to go wrong at refresh.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

CREDENTIALS_NAME = "credentials.json"
CONFIG_NAME = "config"  # the web container's AWS_CONFIG_FILE
SESSION_NAME = "classifier-web"  # how the sessions read in CloudTrail


def process_output(credentials: dict) -> dict:
    """STS's Credentials as `credential_process` prints them (version 1 of that format)."""
    expiration = credentials["Expiration"]
    if isinstance(expiration, datetime):
        expiration = expiration.isoformat()
    return {
        "Version": 1,
        "AccessKeyId": credentials["AccessKeyId"],
        "SecretAccessKey": credentials["SecretAccessKey"],
        "SessionToken": credentials["SessionToken"],
        "Expiration": expiration,
    }


def config_text(directory: str) -> str:
    return f"[default]\ncredential_process = cat {directory}/{CREDENTIALS_NAME}\n"


def _replace(path: Path, text: str) -> None:
    """Write whole or not at all: the reader may run at any moment (a rename is atomic)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:  # mkstemp: mode 0600, this process's user only
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


class WebCredentials:
    """Assume the web role and hand its session over, now and on every refresh."""

    def __init__(self, sts, role_arn: str, directory: str, duration_s: int):
        self._sts, self._role_arn, self._duration_s = sts, role_arn, duration_s
        self._directory = Path(directory)

    def refresh(self) -> str:
        """Hand over a fresh session; its expiry, for the log."""
        reply = self._sts.assume_role(
            RoleArn=self._role_arn, RoleSessionName=SESSION_NAME, DurationSeconds=self._duration_s
        )
        output = process_output(reply["Credentials"])
        _replace(self._directory / CREDENTIALS_NAME, json.dumps(output))
        config = self._directory / CONFIG_NAME
        if not config.exists():  # written after the first session: the reader waits for it
            _replace(config, config_text(str(self._directory)))
        log.info("handed the web role's session over until %s", output["Expiration"])
        return output["Expiration"]
