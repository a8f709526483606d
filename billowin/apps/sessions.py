"""Dashboard sessions, server-side in Consul KV: the browser's cookie holds a session id, never a token.

Logging in to the dashboard with an API token starts a session bound to that
token's id; the cookie carries only a random session id (32 bytes). KV keeps
``billowin/sessions/<sha256 of the id>`` with the token id and the expiry, so
reading Consul reveals no usable cookie. A session ends when it expires
(``BILLOWIN_SESSION_TTL``), at logout, and when its token is revoked or expires
(``Access.session`` checks the token on every request, and ``Access.revoke``
deletes its sessions).

Each session has a CSRF token for the dashboard's forms: an HMAC of the
session id, so it needs no storage, is tied to this session only, and says
nothing about the id. Forms carry it; every dashboard POST checks it in
constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from billowin.errors import Conflict
from billowin.ports import KeyValueStore

PREFIX = "billowin/sessions"
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
_CSRF_CONTEXT = b"billowin dashboard csrf v1"


class SessionRecord(BaseModel):
    token_id: str
    created_at: datetime
    expires_at: datetime


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session: HMAC-SHA256 keyed by the session id."""
    mac = hmac.new(session_id.encode(), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def csrf_ok(session_id: str, sent: str) -> bool:
    return hmac.compare_digest(csrf_token(session_id).encode(), sent.encode())


class SessionStore:
    def __init__(self, kv: KeyValueStore, ttl: float) -> None:
        self._kv = kv
        self.ttl = ttl

    def start(self, token_id: str) -> str:
        """A new session for the token; returns its id (for the cookie only)."""
        self.sweep()
        now = datetime.now(UTC)
        expires_at = now + timedelta(seconds=self.ttl)
        record = SessionRecord(token_id=token_id, created_at=now, expires_at=expires_at)
        session_id = secrets.token_urlsafe(32)
        if not self._kv.kv_put(self._key(session_id), record.model_dump_json().encode(), cas=0):
            raise Conflict("could not start a session; try again")
        return session_id

    def get(self, session_id: str) -> SessionRecord | None:
        """The live session with that id; None when there is none (an expired one is deleted)."""
        if not SESSION_ID.fullmatch(session_id):
            return None
        _, raw = self._kv.kv_get(self._key(session_id))
        if raw is None:
            return None
        record = SessionRecord.model_validate_json(raw)
        if record.expires_at <= datetime.now(UTC):
            self.end(session_id)
            return None
        return record

    def end(self, session_id: str) -> None:
        if SESSION_ID.fullmatch(session_id):
            self._kv.kv_delete_tree(self._key(session_id))

    def end_for_token(self, token_id: str) -> int:
        """End every session of a token; how many there were."""
        ended = 0
        for key, raw in self._kv.kv_list(f"{PREFIX}/"):
            if SessionRecord.model_validate_json(raw).token_id == token_id:
                self._kv.kv_delete_tree(key)
                ended += 1
        return ended

    def sweep(self) -> int:
        """Delete expired sessions (run at each login, so they do not pile up); how many."""
        now, swept = datetime.now(UTC), 0
        for key, raw in self._kv.kv_list(f"{PREFIX}/"):
            if SessionRecord.model_validate_json(raw).expires_at <= now:
                self._kv.kv_delete_tree(key)
                swept += 1
        return swept

    @staticmethod
    def _key(session_id: str) -> str:
        return f"{PREFIX}/{hashlib.sha256(session_id.encode()).hexdigest()}"
