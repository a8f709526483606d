"""``/tokens`` (admin only) and ``/audit``: who may call the API, and what they did with it.

``POST /tokens`` answers the new token once (only its hash is kept);
``DELETE /tokens/{id}`` revokes it and ends its dashboard sessions at once.
``GET /audit`` shows the audit log, newest last: every entry to an admin, and
to a ``deploy`` or ``read`` token only the entries about its apps.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from billowin.api.answers import TokenId
from billowin.api.deps import SystemDep, require
from billowin.apps.access import Action, Caller
from billowin.apps.audit import AuditEntry
from billowin.apps.tokens import Role, TokenInfo, parse_expiry

router = APIRouter(tags=["access"])


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="Who or what the token is for.")
    role: Role = Role.ADMIN
    apps: list[str] = Field(default_factory=list, description="The apps a deploy or read token is for.")
    expires: str | None = Field(
        None, description="30d, 12h, 90m, 2w, a date (2026-12-31, 00:00 UTC) or an ISO time; none: never."
    )


class TokenCreated(BaseModel):
    token: str = Field(description="The token itself: shown this once, never stored.")
    info: TokenInfo


@router.get("/tokens", response_model=list[TokenInfo], dependencies=[require(Action.TOKENS)])
async def tokens(system: SystemDep) -> list[TokenInfo]:
    """Every token, oldest first: id, name, role, apps, expiry, state; never the secret or its hash."""
    records = await asyncio.to_thread(system.tokens.all)
    return [TokenInfo.of(r) for r in records]


@router.post(
    "/tokens", status_code=201, response_model=TokenCreated, dependencies=[require(Action.TOKENS_CREATE)]
)
async def create_token(body: TokenCreate, system: SystemDep) -> TokenCreated:
    expires_at = parse_expiry(body.expires) if body.expires else None
    record, token = await asyncio.to_thread(
        system.access.issue, body.name, role=body.role, apps=body.apps, expires_at=expires_at
    )
    return TokenCreated(token=token, info=TokenInfo.of(record))


@router.delete("/tokens/{token_id}", response_model=TokenInfo, dependencies=[require(Action.TOKENS_REVOKE)])
async def revoke_token(token_id: TokenId, system: SystemDep) -> TokenInfo:
    """Revoke a token: it and its dashboard sessions stop working with the next request."""
    record = await asyncio.to_thread(system.access.revoke, token_id)
    return TokenInfo.of(record)


@router.get("/audit", response_model=list[AuditEntry])
async def audit(
    system: SystemDep,
    caller: Annotated[Caller, require(Action.AUDIT)],
    app: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditEntry]:
    """The newest ``limit`` entries of the audit log (of ``app``), newest last.

    An admin sees every entry; another token only those about its apps.
    """
    return await asyncio.to_thread(
        system.audit.read, app=app, visible=lambda entry: caller.sees(entry.app), limit=limit
    )
