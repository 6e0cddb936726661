"""A daemon thread that calls one function every few seconds until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from runtime.failures import log_failure

log = logging.getLogger(__name__)


class Every:
    def __init__(self, interval_s: float, action: Callable[[], object], name: str):
        self._interval_s, self._action = interval_s, action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Every:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._action()
            except Exception as error:  # noqa: BLE001 - background upkeep: try again next time
                log_failure(log, self._thread.name, error, f"again in {self._interval_s:g} s")
