"""What the embedded stack keeps across `make up` runs: the scaler's estimates.

moto holds its state in memory, so every `make up` would start the scaler from the default boot
times and throughput again. The launcher copies the scaler's estimates object
(runtime.keys.SCALER_ESTIMATES, scaler/estimates.py) out of moto into the run directory while the
stack runs and once more after the scaler has stopped, and puts it back into the fresh moto
before the scaler starts: the next run plans with what the last one measured. The scaler itself
knows nothing of this; it reads and writes its object in the output bucket as it does on AWS.
`python -m embedded forget` (`make forget`) deletes the copy.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from runtime import keys
from runtime.failures import describe, is_not_found

log = logging.getLogger(__name__)

FILE_NAME = "estimates.json"
SYNC_EVERY_S = 5.0  # how often the running stack copies the object out (moto: no cost)


def kept_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / FILE_NAME


class KeptEstimates:
    """The scaler's estimates object, copied between moto's output bucket and one file."""

    def __init__(self, path: Path, s3, bucket: str, key: str = keys.SCALER_ESTIMATES):
        self.path = path
        self._s3, self._bucket, self._key = s3, bucket, key
        self._copied: bytes | None = None  # what the file holds, so unchanged copies are skipped

    def restore(self) -> bool:
        """Put the kept copy into the bucket (before the scaler starts); False when none."""
        try:
            body = self.path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as error:
            log.warning("kept estimates unreadable (%s); the scaler starts from defaults", error)
            return False
        try:
            self._s3.put_object(
                Bucket=self._bucket, Key=self._key, Body=body, ContentType="application/json"
            )
        except (ClientError, BotoCoreError) as error:
            log.warning("kept estimates not restored (%s)", describe(error))
            return False
        # The scaler checks the object's content itself: a garbled file is ignored there.
        self._copied = body
        return True

    def save(self) -> bool:
        """Copy the object out when it changed; True when the file was written."""
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key)["Body"].read()
        except (ClientError, BotoCoreError) as error:
            if not is_not_found(error):  # nothing measured yet is no failure
                log.warning("estimates not copied out of moto (%s)", describe(error))
            return False
        if body == self._copied:
            return False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.partial")
            partial.write_bytes(body)
            os.replace(partial, self.path)  # whole or not at all: a stop mid-write keeps the old
        except OSError as error:
            log.warning("estimates not kept in %s (%s)", self.path, error)
            return False
        self._copied = body
        return True


def forget(path: Path) -> bool:
    """Delete the kept copy; True when there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
