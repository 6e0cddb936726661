"""Notice of an interruption, from the instance metadata service (IMDSv2).

EC2 gives a Spot instance two minutes' notice (`spot/instance-action`) before it interrupts it,
and sometimes earlier a rebalance recommendation (`events/recommendations/rebalance`): its Spot
capacity is at raised risk. Either way the worker leaves while it can do so cleanly: it stops
taking messages, finishes the batches in hand and gives back what it took but did not start (the
pipeline's warm stop, well within the notice), tags its instance (runtime.readiness) so that the
scaler replaces it at once, and exits. Both paths answer 404 until there is a notice.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Callable

from runtime.periodic import Every

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path, not a secret
TOKEN_TTL_S = 21600  # IMDSv2's longest: one token serves the worker's whole life
NOTICES = (
    ("spot interruption", "/latest/meta-data/spot/instance-action"),
    ("rebalance recommendation", "/latest/meta-data/events/recommendations/rebalance"),
)
TIMEOUT_S = 2.0
_BODY_SHOWN = 200  # characters of a notice's JSON in the log line


class MetadataNotices:
    """Reads the two notice paths with a session token (the launch template requires tokens)."""

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S, opener=urllib.request.urlopen):
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        self._open = opener
        self._token: str | None = None

    def check(self) -> str | None:
        """'<what>: <body>' for the first notice given, None while there is none. Raises what
        urllib raises when the service cannot be reached."""
        for what, path in NOTICES:
            body = self._get(path)
            if body is not None:
                return f"{what}: {body[:_BODY_SHOWN]}"
        return None

    def _get(self, path: str) -> str | None:
        for fresh in (False, True):
            if self._token is None or fresh:
                self._token = self._new_token()
            # The URL is INSTANCE_METADATA_URL, checked to be http(s) by Settings.
            request = urllib.request.Request(  # noqa: S310
                self._url + path, headers={"X-aws-ec2-metadata-token": self._token}
            )
            try:
                with self._open(request, timeout=self._timeout_s) as reply:
                    return reply.read().decode(errors="replace")
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return None
                if error.code != 401 or fresh:
                    raise
                # 401: the token expired (or the service restarted): one more try with a new one.
        raise AssertionError("unreachable: the second try returns or raises")

    def _new_token(self) -> str:
        request = urllib.request.Request(  # noqa: S310 - as in _get
            self._url + TOKEN_PATH,
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
        )
        with self._open(request, timeout=self._timeout_s) as reply:
            return reply.read().decode()


class NoticeWatch:
    """Calls on_notice once, with the notice, the first time check() finds one."""

    def __init__(self, notices: MetadataNotices, on_notice: Callable[[str], None]):
        self._notices = notices
        self._on_notice = on_notice
        self.notice: str | None = None

    def poll(self) -> bool:
        """True once there has been a notice (periodic: runtime.periodic.Every calls it)."""
        if self.notice is not None:
            return True
        notice = self._notices.check()
        if notice is None:
            return False
        self.notice = notice
        self._on_notice(notice)
        return True


def watch_notices(url: str, poll_s: float, on_notice: Callable[[str], None]) -> NoticeWatch:
    """Look once now, then every poll_s seconds in the background until a notice comes.

    The first look is before the first receive: a worker restarted on an instance already under
    notice (the container restarts by itself) takes nothing."""
    watch = NoticeWatch(MetadataNotices(url), on_notice)
    try:
        watch.poll()
    except OSError as error:  # urllib's errors: not reachable yet; the periodic looks go on
        log.warning("instance metadata at %s not readable (%s); trying again", url, error)
    if watch.notice is None:
        Every(poll_s, watch.poll, "notice-watch").start()
    return watch
