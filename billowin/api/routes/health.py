"""``GET /health``: is every real part of the stack reachable, and at which version?

Without a token it says only ``{"status": "ok"}`` or ``{"status": "degraded"}``
(200 or 503), so a load balancer can probe it without learning versions and
addresses; an admin token gets the detail of every component.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from billowin import __version__
from billowin.api.deps import SystemDep, health_detail
from billowin.ports import Probe

router = APIRouter(tags=["health"])


class Component(BaseModel):
    ok: bool
    version: str | None = None
    address: str | None = None
    error: str | None = None


class HealthStatus(BaseModel):
    status: Literal["ok", "degraded"]


class Health(HealthStatus):
    ok: bool
    billowin: str
    components: dict[str, Component]


@router.get(
    "/health", response_model=Health | HealthStatus, responses={503: {"model": Health | HealthStatus}}
)
async def health(
    system: SystemDep, response: Response, detail: Annotated[bool, health_detail]
) -> Health | HealthStatus:
    """Reachability of Nomad, Consul, Docker, the registry and HAProxy: 200 when all are healthy, else 503.

    It never needs a token; with an admin token it also names each component's version, address and error.
    """
    probes: list[Probe] = system.probes()
    results = await asyncio.gather(*(asyncio.to_thread(p.health) for p in probes))
    components = {
        r.name: Component(ok=r.ok, version=r.version, address=r.address, error=r.error) for r in results
    }
    ok = all(c.ok for c in components.values())
    if not ok:
        response.status_code = 503
    status: Literal["ok", "degraded"] = "ok" if ok else "degraded"
    if not detail:
        return HealthStatus(status=status)
    return Health(status=status, ok=ok, billowin=__version__, components=components)
