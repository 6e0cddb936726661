"""The web tier's word to the scaler beside it: work has arrived, decide now (issue 25 item 3).

Without it an idle fleet hears of its first upload at the scaler's next tick (SCALER_TICK_S, and
the tick's own reads); with it the web process posts POST /wake to the scaler's status server at
once. The scaler acts on a wake only while its last look found nothing queued (the 0 -> 1
activation): under load it keeps its tick, so waking costs no extra AWS reads there.

Authenticated, because a wake makes the scaler read SQS, EC2 and CloudWatch: at each start the
scaler writes a fresh random token to SCALER_WAKE_TOKEN_FILE (mode 0600), which only a process
beside it can read (on the web host: the handover directory the web container mounts read-only;
`make up`: the run directory; compose: /dev/shm, which only the web container shares, given to
the web's user by SCALER_WAKE_TOKEN_OWNER there); a wake without it is 403. No long-lived secret:
a restart of the scaler makes a new token, and the web reads it again when refused.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

WAKE_PATH = "/wake"
TOKEN_HEADER = "X-Wake-Token"  # noqa: S105 - a header name, not a secret
# A web process wakes the scaler at most this often: one wake covers every upload until the
# scaler's tick has read the queue.
MIN_GAP_S = 0.5


def wake_url(status_url: str) -> str:
    """The wake endpoint beside the scaler's /status (SCALER_STATUS_URL)."""
    return status_url.rsplit("/", 1)[0] + WAKE_PATH


def new_token(path: str, owner: str = "") -> str:
    """A fresh token, written whole (a rename) for the web process to read; one user only: this
    process's, or owner ("UID:GID", SCALER_WAKE_TOKEN_OWNER) where the web runs as another."""
    token = secrets.token_urlsafe(32)
    target = Path(path)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(handle, "w") as out:
        out.write(token)
    if owner:
        uid, gid = (int(part) for part in owner.split(":"))
        os.chown(temporary, uid, gid)  # before the rename: never readable by the wrong user
    os.replace(temporary, target)
    return token


def read_token(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None
