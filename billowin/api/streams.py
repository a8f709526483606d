"""Long-lived requests, counted: log tails, one-off runs' output, and ``?wait=`` long-polls.

Each of them holds one thread of the API's pool (the adapters are blocking) for as long as
it lasts. Without a bound, enough open ``logs --tail`` would leave no thread for a webhook.
So at most ``BILLOWIN_MAX_STREAMS`` of them run at once; one more is answered 503 at once,
with a hint, and every other request keeps its threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

from billowin.errors import ServiceError

T = TypeVar("T")


class Busy(ServiceError):
    status_code = 503

    def __init__(self, limit: int) -> None:
        super().__init__(
            "billowin",
            f"{limit} log tails, runs and long-polls are open already",
            hint="Close a `billowin logs --tail` or a dashboard tab, or raise BILLOWIN_MAX_STREAMS.",
        )


class StreamLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Count one more long-lived request, or raise ``Busy`` (503) when all slots are taken."""
        with self._lock:
            if self._open >= self.limit:
                raise Busy(self.limit)
            self._open += 1

    def release(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    async def hold(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items``, holding a slot (taken already with ``acquire``) until the stream ends."""
        try:
            async for item in items:
                yield item
        finally:
            self.release()
