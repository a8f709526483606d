"""``GET /.well-known/acme-challenge/{token}``: the HTTP-01 answers the CA fetches.

The router sends this path, on every host name it serves, to the API
(``billowin/router/haproxy.cfg.ctmpl``). No token is needed: the CA calls it. The path
parameter is as strict as the check behind it (base64url, 22 to 128 characters), and only an
answer pending in Consul KV (``billowin.certs.http01``) is ever served; anything else is a 404.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import PlainTextResponse

from billowin.api.deps import SystemDep, public
from billowin.apps.access import Action
from billowin.certs.http01 import TOKEN
from billowin.errors import NotFound

router = APIRouter(tags=["acme"])

Token = Annotated[
    str,
    Path(
        pattern=TOKEN.pattern,
        min_length=22,
        max_length=128,
        description="An ACME HTTP-01 challenge token (base64url).",
    ),
]


@router.get(
    "/.well-known/acme-challenge/{token}",
    response_class=PlainTextResponse,
    dependencies=[public(Action.ACME_CHALLENGE)],
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def acme_challenge(token: Token, system: SystemDep) -> PlainTextResponse:
    """The key authorization of a pending HTTP-01 challenge (RFC 8555, section 8.3)."""
    answer = await asyncio.to_thread(system.acme_challenges.answer, token)
    if answer is None:
        raise NotFound("no ACME challenge is pending for this token")
    return PlainTextResponse(answer, headers={"Cache-Control": "no-store"})
