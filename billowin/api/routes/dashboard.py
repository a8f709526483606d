"""The web dashboard: server-rendered pages under ``/dashboard``, with small charts (uPlot).

It uses the same API tokens: the login form checks one and keeps it in an
HttpOnly, SameSite=Strict cookie, which the JSON API accepts too, so the
pages' scripts can call it (charts, live logs). Actions (rollback) are plain
form posts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from billowin.api.deps import COOKIE, SystemDep, token_from
from billowin.apps.tokens import TokenRecord
from billowin.errors import BillowinError
from billowin.platform import AppInfo
from billowin.system import System

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))
router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

CHARTS = [
    ("requests", "Requests / s"),
    ("latency", "Latency (ms)"),
    ("errors", "Errors / s"),
    ("memory", "Memory (MB)"),
    ("restarts", "Restarts"),
]


def _user(request: Request, system: System) -> TokenRecord | None:
    token = token_from(request)
    return system.tokens.verify(token) if token else None


def _login_redirect() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303)


def _status(info: AppInfo) -> tuple[str, str]:
    if not info.processes:
        return "not deployed", "warn"
    desired = sum(p.desired for p in info.processes)
    running = sum(p.running for p in info.processes)
    if desired == 0:
        return "scaled to 0", "warn"
    if running >= desired:
        return "up", "ok"
    return ("down", "bad") if running == 0 else ("degraded", "warn")


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    return TEMPLATES.TemplateResponse(request, "login.html", {"authed": False})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, system: SystemDep, token: Annotated[str, Form()]) -> Response:
    record = await asyncio.to_thread(system.tokens.verify, token.strip())
    if record is None:
        return TEMPLATES.TemplateResponse(
            request,
            "login.html",
            {"authed": False, "error": "That token is not valid. Ask an admin for a new one."},
            status_code=401,
        )
    resp = RedirectResponse("/dashboard", status_code=303)
    resp.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", path="/", max_age=7 * 24 * 3600)
    return resp


@router.post("/logout")
async def logout() -> Response:
    resp = _login_redirect()
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.get("", response_class=HTMLResponse)
async def apps_page(request: Request, system: SystemDep) -> Response:
    if await asyncio.to_thread(_user, request, system) is None:
        return _login_redirect()

    def gather() -> list[dict[str, Any]]:
        rows = []
        firing = _firing_by_app(system)
        for app in system.apps.all():
            try:
                info = system.platform.info(app.name)
            except BillowinError:
                continue
            status, css = _status(info)
            rows.append(
                {
                    "name": app.name,
                    "url": info.url,
                    "status": status,
                    "status_class": css,
                    "release": info.release.name if info.release else None,
                    "instances": ", ".join(f"{p.process} {p.running}/{p.desired}" for p in info.processes)
                    or "—",
                    "alerts": firing.get(app.name, 0),
                }
            )
        return rows

    apps = await asyncio.to_thread(gather)
    return TEMPLATES.TemplateResponse(request, "apps.html", {"authed": True, "apps": apps})


@router.get("/apps/{app}", response_class=HTMLResponse)
async def app_page(request: Request, app: str, system: SystemDep, flash: str = "") -> Response:
    if await asyncio.to_thread(_user, request, system) is None:
        return _login_redirect()

    def gather() -> dict[str, Any]:
        p = system.platform
        info = p.info(app)
        status, css = _status(info)
        return {
            "info": info,
            "status": status,
            "status_class": css,
            "releases": list(reversed(p.releases(app)))[:15],
            "deploys": list(reversed(p.jobs.list(app)))[:10],
            "alerts": _alerts_for(system, app),
            "charts": [{"id": cid, "title": title} for cid, title in CHARTS],
        }

    context = await asyncio.to_thread(gather)
    return TEMPLATES.TemplateResponse(request, "app.html", {"authed": True, "flash": flash, **context})


@router.post("/apps/{app}/rollback")
async def rollback(
    request: Request, app: str, system: SystemDep, release: Annotated[int, Form()]
) -> Response:
    if await asyncio.to_thread(_user, request, system) is None:
        return _login_redirect()
    job = await asyncio.to_thread(system.platform.rollback, app, release)
    return RedirectResponse(
        f"/dashboard/apps/{app}?flash=Rolling+back+to+v{release}+(job+{job.id.lstrip('0')})", status_code=303
    )


@router.get("/apps/{app}/deploys/{job_id}", response_class=HTMLResponse)
async def deploy_page(request: Request, app: str, job_id: str, system: SystemDep) -> Response:
    if await asyncio.to_thread(_user, request, system) is None:
        return _login_redirect()
    log = await asyncio.to_thread(system.platform.build_log, app, job_id)
    return TEMPLATES.TemplateResponse(
        request, "deploy.html", {"authed": True, "app": app, "job_id": job_id, "log": log}
    )


@router.get("/apps/{app}/charts.json")
async def charts(request: Request, app: str, system: SystemDep) -> Response:
    if await asyncio.to_thread(_user, request, system) is None:
        return JSONResponse({"error": "Unauthorized", "message": "log in first"}, status_code=401)
    data = await asyncio.to_thread(chart_data, system, app)
    return JSONResponse({"charts": data})


# -- monitoring glue -------------------------------------------------------------------------
# chart id -> (metric, label, how series of several processes/instances combine, scale)
CHART_SERIES: dict[str, list[tuple[str, str, str, float]]] = {
    "requests": [("rps", "req/s", "sum", 1.0)],
    "latency": [
        ("latency_p50_ms", "p50", "max", 1.0),
        ("latency_p95_ms", "p95", "max", 1.0),
        ("latency_p99_ms", "p99", "max", 1.0),
    ],
    "errors": [("rate_4xx", "4xx/s", "sum", 1.0), ("rate_5xx", "5xx/s", "sum", 1.0)],
    "memory": [("memory_bytes", "MB", "sum", 1 / (1024 * 1024))],
    "restarts": [("restarts", "restarts", "sum", 1.0), ("crashes", "crashes", "sum", 1.0)],
}
WINDOW = 3 * 3600  # the charts show up to the last three hours, one point a minute
MIN_SPAN = 30 * 60  # and at least the last half hour


def chart_data(system: System, app: str) -> list[dict[str, Any]]:
    """Every chart's x (unix seconds) and series, from the monitoring store."""
    monitoring = system.monitoring
    wanted = [metric for lines in CHART_SERIES.values() for metric, *_ in lines]
    found = monitoring.series(app, since=monitoring.now() - WINDOW, metrics=wanted)
    by_metric: dict[str, dict[int, list[float]]] = {}
    for series in found:
        for minute, value in series.points:
            by_metric.setdefault(series.metric, {}).setdefault(minute, []).append(value)
    out = []
    for cid, title in CHARTS:
        lines = CHART_SERIES[cid]
        minutes = sorted({m for metric, *_ in lines for m in by_metric.get(metric, {})})
        drawn = []
        for metric, label, combine, scale in lines:
            points = by_metric.get(metric, {})
            values = [
                round((sum if combine == "sum" else max)(points[m]) * scale, 3) if m in points else None
                for m in minutes
            ]
            drawn.append({"label": label, "values": values})
        now = monitoring.now()
        start = min([*minutes, now - MIN_SPAN]) if minutes else now - MIN_SPAN
        out.append({"id": cid, "title": title, "x": minutes, "series": drawn, "range": [start, now]})
    return out


def _firing_by_app(system: System) -> dict[str, int]:
    counts: dict[str, int] = {}
    for alert in system.monitoring.firing():
        counts[alert.app] = counts.get(alert.app, 0) + 1
    return counts


def _alerts_for(system: System, app: str) -> list[dict[str, Any]]:
    recent = system.monitoring.alerts(since=system.monitoring.now() - 24 * 3600, app=app)
    return [
        {"summary": f"{a.started_at:%H:%M} {a.summary}", "firing": a.state.value == "firing"}
        for a in recent[:10]
    ]
