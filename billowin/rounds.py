"""A background thread that does one round of work every ``interval`` seconds, and at once when
woken: the reconcilers (add-ons, review apps, certificates) each run on one.

A round that raises is logged and the next one goes on: one bad round must never stop the work
for good. ``stopping`` lets a long round give up early when the API shuts down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Rounds:
    def __init__(self, name: str, work: Callable[[], object], interval: float) -> None:
        self.name = name
        self.work = work
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Do a round now (something changed), without waiting for the interval."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            started = time.monotonic()
            try:
                self.work()
            except Exception:
                log.exception("%s: a round failed; trying again", self.name)
            log.debug("%s: a round took %.1fs", self.name, time.monotonic() - started)
            self._wake.wait(self.interval)
