"""``GET /health``: is every real part of the stack reachable, and at which version?"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from pydantic import BaseModel

from billowin import __version__
from billowin.api.deps import SystemDep
from billowin.ports import Probe

router = APIRouter(tags=["health"])


class Component(BaseModel):
    ok: bool
    version: str | None = None
    address: str | None = None
    error: str | None = None


class Health(BaseModel):
    ok: bool
    billowin: str
    components: dict[str, Component]


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(system: SystemDep, response: Response) -> Health:
    """Reachability and version of Nomad, Consul, Docker, the registry and HAProxy.

    Answers 200 when all are healthy, 503 otherwise; it never needs a token.
    """
    probes: list[Probe] = system.probes()
    results = await asyncio.gather(*(asyncio.to_thread(p.health) for p in probes))
    components = {
        r.name: Component(ok=r.ok, version=r.version, address=r.address, error=r.error) for r in results
    }
    ok = all(c.ok for c in components.values())
    if not ok:
        response.status_code = 503
    return Health(ok=ok, billowin=__version__, components=components)
