"""API tokens: created by an admin, stored hashed in Consul KV, sent as ``Authorization: Bearer``.

A token is ``bw_<id>_<secret>``: the id finds the record, the secret (32 random
bytes) is checked against its SHA-256 in constant time. Only the hash is
stored, so reading Consul does not reveal a usable token, and ids say
nothing about other tokens.

Each token has a role (``admin``, ``deploy`` or ``read``; what each may do is
``billowin.apps.access``), the apps a ``deploy`` or ``read`` token is limited
to, and an optional expiry. Revoking keeps the record, marked with when, so a
revoked token answers "revoked" rather than "unknown" and the audit log's
token ids still have a name. Records written before roles existed have no
``role`` field: they are admins, as every token was then.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from billowin.errors import Conflict, InvalidInput, NotFound, Unauthorized
from billowin.names import is_app_name
from billowin.ports import KeyValueStore

PREFIX = "billowin/tokens"
TOKEN = re.compile(r"^bw_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
TOKEN_ID = re.compile(r"^[0-9a-f]{16}$")
NAME_MAX = 100


class Role(StrEnum):
    ADMIN = "admin"  # everything, on every app
    DEPLOY = "deploy"  # change and operate its apps (and read them)
    READ = "read"  # look at its apps: records, never config values, logs or runs


class TokenState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class TokenRecord(BaseModel):
    id: str
    name: str
    sha256: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    role: Role = Role.ADMIN  # a record without a role predates roles: every token was an admin then
    apps: list[str] = Field(default_factory=list)  # what a deploy or read token may touch
    expires_at: datetime | None = None  # None: never
    revoked_at: datetime | None = None

    def state(self, now: datetime | None = None) -> TokenState:
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return TokenState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return TokenState.EXPIRED
        return TokenState.ACTIVE


class TokenInfo(BaseModel):
    """What listing tokens shows: never the secret, nor its hash."""

    id: str
    name: str
    role: Role
    apps: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    state: TokenState

    @classmethod
    def of(cls, record: TokenRecord, now: datetime | None = None) -> TokenInfo:
        return cls(
            **record.model_dump(include={"id", "name", "role", "apps", "created_at"}),
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            state=record.state(now),
        )


_SPAN = re.compile(r"^([1-9][0-9]{0,5})([mhdw])$")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``30d``, ``12h``, ``90m``, ``2w`` from now; a date (``2026-12-31``: 00:00 UTC); or an ISO time.

    The result must lie in the future.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    span = _SPAN.fullmatch(value)
    at: datetime
    if span:
        at = now + timedelta(**{_UNIT[span[2]]: int(span[1])})
    else:
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                day = date.fromisoformat(value)
                at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            else:
                at = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                f"{text!r} is not an expiry",
                hint="Give a span (30d, 12h, 90m, 2w), a date (2026-12-31) or an ISO time.",
            ) from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    if at <= now:
        raise InvalidInput(f"the expiry {at:%Y-%m-%d %H:%M} UTC is not in the future")
    return at


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scope(name: str, role: Role, apps: list[str]) -> None:
    """Refuse a name, role and apps that make no token (``InvalidInput`` saying why)."""
    if not name.strip() or len(name) > NAME_MAX or any(not c.isprintable() for c in name):
        raise InvalidInput(f"a token's name is 1 to {NAME_MAX} printable characters")
    bad = [a for a in apps if not is_app_name(a)]
    if bad:
        raise InvalidInput(f"{bad[0]!r} is not an app name")
    if role == Role.ADMIN and apps:
        raise InvalidInput(
            "an admin token is for every app; it cannot be limited to some",
            hint="Use `--role deploy` or `--role read` with `--app APP`.",
        )
    if role != Role.ADMIN and not apps:
        raise InvalidInput(
            f"a {role.value} token needs the apps it is for",
            hint=f"Add `--app APP` (repeat it for several): `billowin tokens:create NAME --role {role.value} "
            "--app APP`.",
        )


class TokenStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    def issue(
        self,
        name: str,
        *,
        role: Role = Role.ADMIN,
        apps: Iterable[str] = (),
        expires_at: datetime | None = None,
    ) -> tuple[TokenRecord, str]:
        """Make a token: its record and the token itself, shown this once and never stored in the clear."""
        scope = sorted(set(apps))
        check_scope(name, role, scope)
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(
            id=token_id, name=name, sha256=_digest(secret), role=role, apps=scope, expires_at=expires_at
        )
        if not self._kv.kv_put(self._key(token_id), record.model_dump_json().encode(), cas=0):
            raise Conflict("a token with that id exists already; try again")
        return record, f"bw_{token_id}_{secret}"

    def create(
        self,
        name: str,
        *,
        role: Role = Role.ADMIN,
        apps: Iterable[str] = (),
        expires_at: datetime | None = None,
    ) -> str:
        """Make a token (an admin one unless told otherwise); returns it. It is shown this once."""
        return self.issue(name, role=role, apps=apps, expires_at=expires_at)[1]

    def _match(self, token: str) -> TokenRecord | None:
        """The record whose secret the token carries, whatever its state; None when none does."""
        match = TOKEN.match(token)
        if not match:
            return None
        token_id, secret = match.groups()
        _, raw = self._kv.kv_get(self._key(token_id))
        if raw is None:
            hmac.compare_digest(_digest(secret), _digest(""))  # same work whether or not the id exists
            return None
        record = TokenRecord.model_validate_json(raw)
        return record if hmac.compare_digest(record.sha256, _digest(secret)) else None

    def check(self, token: str) -> TokenRecord:
        """The token's record if it may be used now; else ``Unauthorized`` saying why."""
        record = self._match(token)
        if record is None:
            raise Unauthorized(
                "that API token is not valid",
                hint="Check it was copied whole; an admin makes a new one: `billowin tokens:create NAME`.",
            )
        return self.usable(record)

    @staticmethod
    def usable(record: TokenRecord) -> TokenRecord:
        """``record`` if it is active; else ``Unauthorized`` saying it expired or was revoked."""
        state = record.state()
        if state == TokenState.EXPIRED:
            assert record.expires_at is not None
            raise Unauthorized(
                f"the API token {record.name!r} expired on {record.expires_at:%Y-%m-%d %H:%M} UTC",
                hint="Ask an admin for a new one: `billowin tokens:create NAME --expires 30d`.",
            )
        if state == TokenState.REVOKED:
            raise Unauthorized(
                f"the API token {record.name!r} was revoked",
                hint="Ask an admin for a new one: `billowin tokens:create NAME`.",
            )
        return record

    def verify(self, token: str) -> TokenRecord | None:
        """The record of a token that may be used now; None for any other."""
        try:
            return self.check(token)
        except Unauthorized:
            return None

    def get(self, token_id: str) -> TokenRecord:
        if not TOKEN_ID.fullmatch(token_id):
            raise InvalidInput(
                f"{token_id!r} is not a token id",
                hint="Token ids are 16 hex digits; list them with `billowin tokens`.",
            )
        _, raw = self._kv.kv_get(self._key(token_id))
        if raw is None:
            raise NotFound(f"no token with id {token_id}", hint="List tokens with `billowin tokens`.")
        return TokenRecord.model_validate_json(raw)

    def all(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        records = [TokenRecord.model_validate_json(raw) for _, raw in self._kv.kv_list(f"{PREFIX}/")]
        return sorted(records, key=lambda r: r.created_at)

    def revoke(self, token_id: str) -> TokenRecord:
        """Mark the token revoked (at once, for every request after this one). Revoking twice is fine."""
        self.get(token_id)  # a plain answer for a malformed or unknown id
        for _ in range(5):
            index, raw = self._kv.kv_get(self._key(token_id))
            if raw is None:
                raise NotFound(f"no token with id {token_id}")
            record = TokenRecord.model_validate_json(raw)
            if record.revoked_at is not None:
                return record
            record.revoked_at = datetime.now(UTC)
            if self._kv.kv_put(self._key(token_id), record.model_dump_json().encode(), cas=index):
                return record
        raise Conflict(f"the token {token_id} kept changing while it was being revoked")

    def drop_app(self, token_id: str, app: str) -> None:
        """Take ``app`` out of a scoped token's apps (the app was destroyed)."""
        for _ in range(5):
            index, raw = self._kv.kv_get(self._key(token_id))
            if raw is None:
                return
            record = TokenRecord.model_validate_json(raw)
            if app not in record.apps:
                return
            record.apps = [a for a in record.apps if a != app]
            if self._kv.kv_put(self._key(token_id), record.model_dump_json().encode(), cas=index):
                return
        raise Conflict(f"the token {token_id} kept changing while {app} was taken out of it")

    @staticmethod
    def _key(token_id: str) -> str:
        return f"{PREFIX}/{token_id}"
