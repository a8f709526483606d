"""API tokens: created by an admin command, stored hashed in Consul KV, sent as ``Authorization: Bearer``.

A token is ``bw_<id>_<secret>``: the id finds the record, the secret (32 random
bytes) is checked against its SHA-256 in constant time. Only the hash is
stored, so reading Consul does not reveal a usable token, and ids say
nothing about other tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from billowin.ports import KeyValueStore

PREFIX = "billowin/tokens"
TOKEN = re.compile(r"^bw_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


class TokenRecord(BaseModel):
    id: str
    name: str
    sha256: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    def create(self, name: str) -> str:
        """Make a token; returns it. It is shown this once and never stored in the clear."""
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(id=token_id, name=name, sha256=_digest(secret))
        self._kv.kv_put(f"{PREFIX}/{token_id}", record.model_dump_json().encode(), cas=0)
        return f"bw_{token_id}_{secret}"

    def verify(self, token: str) -> TokenRecord | None:
        match = TOKEN.match(token)
        if not match:
            return None
        token_id, secret = match.groups()
        _, raw = self._kv.kv_get(f"{PREFIX}/{token_id}")
        if raw is None:
            hmac.compare_digest(_digest(secret), _digest(""))  # same work whether or not the id exists
            return None
        record = TokenRecord.model_validate_json(raw)
        return record if hmac.compare_digest(record.sha256, _digest(secret)) else None

    def revoke(self, token_id: str) -> None:
        self._kv.kv_delete_tree(f"{PREFIX}/{token_id}")
