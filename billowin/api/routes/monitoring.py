"""Monitoring over the API: ``GET /apps/{app}/metrics``, ``GET /alerts`` and ``GET /metrics``.

An app's metrics need a token that may read the app; ``/alerts`` shows only the
alerts of apps the token may read. ``/metrics`` (Prometheus' text format) needs
an admin token, or ``BILLOWIN_METRICS_TOKEN`` as its bearer token, so a
Prometheus server can scrape it with a token that opens nothing else.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from billowin.api.answers import AppName
from billowin.api.deps import SystemDep, require, scrape
from billowin.apps.access import Action, Caller
from billowin.errors import InvalidInput
from billowin.monitoring.aggregate import METRICS, stored_metrics
from billowin.monitoring.service import parse_since
from billowin.monitoring.store import Alert, Series
from billowin.names import is_app_name

router = APIRouter(tags=["monitoring"])


class AppMetrics(BaseModel):
    app: str
    since: datetime
    step_seconds: int = 60  # one point per minute; the last one may be the unfinished current minute
    units: dict[str, str]
    series: list[Series]


def _units() -> dict[str, str]:
    return {name: METRICS[name].unit if name in METRICS else "ms" for name in stored_metrics()}


@router.get("/apps/{app}/metrics", response_model=AppMetrics, dependencies=[require(Action.APP_METRICS)])
async def app_metrics(
    app: AppName,
    system: SystemDep,
    since: str = "1h",
    metric: Annotated[list[str] | None, Query(description="Repeat or comma-separate; default all.")] = None,
    process: str | None = None,
    instance: Annotated[
        str, Query(description="Empty: per process type; '*': every instance too; or one instance id.")
    ] = "",
) -> AppMetrics:
    """One-minute series of an app: traffic, latency percentiles, instances, restarts, CPU and memory."""
    if not is_app_name(app):
        raise InvalidInput(f"{app!r} is not a valid app name")
    start = parse_since(since, system.monitoring.now())
    series = await asyncio.to_thread(
        system.monitoring.series, app, since=start, metrics=metric or (), process=process, instance=instance
    )
    return AppMetrics(app=app, since=datetime.fromtimestamp(start, UTC), units=_units(), series=series)


@router.get("/alerts", response_model=list[Alert])
async def alerts(
    system: SystemDep,
    caller: Annotated[Caller, require(Action.ALERTS)],
    since: str = "24h",
    app: str | None = None,
    state: Literal["firing", "all"] = "all",
) -> list[Alert]:
    """Alerts firing now, then those resolved within ``since`` (newest first), of apps the token may read."""
    monitoring = system.monitoring
    if state == "firing":
        found = await asyncio.to_thread(monitoring.firing, app)
    else:
        start = parse_since(since, monitoring.now())
        found = await asyncio.to_thread(monitoring.alerts, since=start, app=app)
    readable = set(caller.visible({a.app for a in found}))
    return [a for a in found if a.app in readable]


@router.get("/metrics", dependencies=[scrape], response_class=Response)
async def metrics(system: SystemDep) -> Response:
    """Billowin's own metrics and each app's latest figures, in Prometheus' text format."""
    body = await asyncio.to_thread(system.monitoring.metrics.render)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
