"""Tells the scaler beside this web process of each accepted upload and job (runtime.wake)."""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request

from runtime.wake import MIN_GAP_S, TOKEN_HEADER, read_token, wake_url

log = logging.getLogger(__name__)


class ScalerWaker:
    """Posts one wake per burst of arrivals, off the request path (a thread of its own)."""

    def __init__(self, status_url: str, token_file: str, timeout_s: float = 1.0):
        self._url, self._token_file, self._timeout_s = wake_url(status_url), token_file, timeout_s
        self._token: str | None = None
        self._warned = False
        self._arrived = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scaler-wake", daemon=True)

    def arrived(self) -> None:
        """An upload or job was accepted (called on the request path: only sets a flag)."""
        self._arrived.set()

    def start(self) -> ScalerWaker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._arrived.set()

    def _run(self) -> None:
        while True:
            self._arrived.wait()
            if self._stopping.is_set():
                return
            self._arrived.clear()
            self.wake()
            self._stopping.wait(MIN_GAP_S)

    def wake(self) -> bool:
        """Tell the scaler; False when it could not be told (it ticks anyway)."""
        for fresh in (False, True):  # a refused token is read again once: the scaler restarted
            token = self._read_token(fresh)
            if token is None:
                return False
            request = urllib.request.Request(  # noqa: S310 - SCALER_STATUS_URL, http(s)
                self._url, method="POST", data=b"", headers={TOKEN_HEADER: token}
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s):  # noqa: S310
                    return True
            except urllib.error.HTTPError as error:
                if error.code != 403:
                    log.debug("scaler wake answered %d", error.code)
                    return False
            except OSError as error:
                log.debug("scaler wake failed: %s", error)
                return False
        if not self._warned:  # once: every burst of uploads would say it again
            self._warned = True
            # Compose: a scaler container restarted alone has a /dev/shm this one does not see.
            log.warning(
                "the scaler refuses %s's token: no wakes, its tick decides", self._token_file
            )
        return False

    def _read_token(self, fresh: bool) -> str | None:
        if self._token is None or fresh:
            self._token = read_token(self._token_file)
        return self._token
