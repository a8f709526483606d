"""One pipeline worker per app at a time: a lock held by a Consul session.

The session has a TTL and ``behavior = delete``; a renewer thread keeps it
alive while the holder works. A worker that dies stops renewing, the session
expires, and its lock disappears with it: no stuck locks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from billowin.errors import BillowinError
from billowin.pipeline.jobs import PREFIX
from billowin.ports import Coordinator

RENEW_EVERY = 5.0  # seconds; the session's TTL is 15 s


class AppLock:
    def __init__(self, sessions: Coordinator, *, renew_every: float = RENEW_EVERY) -> None:
        self.sessions = sessions
        self.renew_every = renew_every

    @staticmethod
    def key(app: str) -> str:
        return f"{PREFIX}/{app}/lock"

    @contextlib.contextmanager
    def hold(self, app: str, *, wait: float = 0) -> Iterator[bool]:
        """Yields True while this process holds ``app``'s lock, False if another one does.

        ``wait``: how long to wait for the holder to let go (blocking queries on the lock's
        key), e.g. ``apps:destroy`` waiting for a running deploy to end. The lock is released
        (its session destroyed) on the way out, whatever happens inside.
        """
        session = self.sessions.session_create(f"billowin-pipeline-{app}")
        try:
            if not self._acquire(app, session, wait):
                yield False  # another worker has it; its session dies with it if it dies
                return
            stop_renewing = threading.Event()
            renewer = threading.Thread(target=self._renew, args=(session, stop_renewing), daemon=True)
            renewer.start()
            try:
                yield True
            finally:
                stop_renewing.set()
        finally:
            with contextlib.suppress(BillowinError):
                self.sessions.session_destroy(session)  # releases the lock (behavior=delete)

    def _acquire(self, app: str, session: str, wait: float) -> bool:
        deadline = time.monotonic() + wait
        index: int | None = None
        while not self.sessions.kv_acquire(self.key(app), session):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            index = self.sessions.kv_wait(self.key(app), index, wait=f"{max(1, int(min(remaining, 5)))}s")
        return True

    def _renew(self, session: str, stop: threading.Event) -> None:
        while not stop.wait(self.renew_every):
            self.sessions.session_renew(session)
