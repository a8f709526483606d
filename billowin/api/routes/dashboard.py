"""The web dashboard: server-rendered pages under ``/dashboard``, with small charts (uPlot).

It uses the same API tokens, with the same roles: the login form checks one and
starts a server-side session (``billowin.apps.sessions``); the cookie holds only
the session id (HttpOnly, SameSite=Strict, ``Path=/dashboard``, ``Secure`` over
HTTPS) and opens nothing but these pages: the JSON API wants a bearer token. The
pages' scripts fetch what they draw from here too (charts, live logs).

Actions (rollback, logout) are form posts: each carries the session's CSRF
token, and is refused (403) without it, or when the browser says it comes from
another site, even a same-site app at ``<app>.<domain>``. Each route names its
``Action`` through ``page``, ``data``, ``form`` or ``public`` (``billowin.api.deps``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from billowin.api.deps import (
    COOKIE,
    OLD_COOKIE,
    SettingsDep,
    SystemDep,
    audit_note,
    csrf_for,
    data,
    form,
    page,
    public,
    session_id,
)
from billowin.api.routes.apps import drain
from billowin.apps.access import Action, Caller
from billowin.errors import BillowinError, Unauthorized
from billowin.platform import AppInfo
from billowin.settings import Settings
from billowin.system import System

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))
router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)
COOKIE_PATH = "/dashboard"

CHARTS = [
    ("requests", "Requests / s"),
    ("latency", "Latency (ms)"),
    ("errors", "Errors / s"),
    ("memory", "Memory (MB)"),
    ("restarts", "Restarts"),
]


def _login_redirect() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303)


def _render(
    request: Request, template: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """A page, with what every page needs: whether someone is logged in, and the forms' CSRF token."""
    context = {"authed": True, "csrf": csrf_for(request), **context}
    response: HTMLResponse = TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_page(request: Request, exc: BillowinError) -> Response:
    """How the dashboard answers an error: the login form when logged out, else a plain page."""
    if isinstance(exc, Unauthorized):
        return _login_redirect()
    return _render(
        request,
        "error.html",
        {
            "authed": bool(session_id(request)),
            "status": exc.status_code,
            "message": exc.message,
            "hint": exc.hint,
        },
        status_code=exc.status_code,
    )


def _secure(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.public_url.lower().startswith("https://")


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


@router.get("/login", response_class=HTMLResponse, dependencies=[public(Action.LOGIN)])
async def login_form(request: Request) -> Response:
    return _render(request, "login.html", {"authed": False, "csrf": ""})


@router.post("/login", response_class=HTMLResponse, dependencies=[public(Action.LOGIN, form=True)])
async def login(
    request: Request, settings: SettingsDep, system: SystemDep, token: Annotated[str, Form()]
) -> Response:
    try:
        sid, caller = await asyncio.to_thread(system.access.login, token.strip())
    except Unauthorized as exc:
        return _render(
            request,
            "login.html",
            {"authed": False, "csrf": "", "error": f"{exc.message[:1].upper()}{exc.message[1:]}. {exc.hint}"},
            status_code=401,
        )
    audit_note(request).caller = caller
    old = session_id(request)
    if old:
        await asyncio.to_thread(system.access.logout, old)
    resp = RedirectResponse("/dashboard", status_code=303)
    resp.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="strict",
        secure=_secure(request, settings),
        path=COOKIE_PATH,
        max_age=int(settings.session_ttl),
    )
    resp.delete_cookie(OLD_COOKIE, path="/")  # earlier versions kept the token itself there
    return resp


@router.post("/logout")
async def logout(
    request: Request, system: SystemDep, _caller: Annotated[Caller, form(Action.LOGOUT)]
) -> Response:
    await asyncio.to_thread(system.access.logout, session_id(request))
    resp = _login_redirect()
    resp.delete_cookie(COOKIE, path=COOKIE_PATH)
    return resp


@router.get("", response_class=HTMLResponse)
async def apps_page(
    request: Request, system: SystemDep, caller: Annotated[Caller, page(Action.DASHBOARD)]
) -> Response:
    def gather() -> list[dict[str, Any]]:
        rows = []
        firing = _firing_by_app(system)
        every = system.apps.all()
        readable = set(caller.visible(a.name for a in every))
        for app in every:
            if app.name not in readable:
                continue
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
    return _render(request, "apps.html", {"apps": apps, "admin": caller.may(Action.APPS_CREATE)})


@router.get("/apps/{app}", response_class=HTMLResponse)
async def app_page(
    request: Request,
    app: str,
    system: SystemDep,
    caller: Annotated[Caller, page(Action.APPS_INFO)],
    flash: str = "",
) -> Response:
    can_addons = caller.may(Action.ADDONS, app)

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
            "review": system.review_apps.view(app),
            # each with its backups, newest last; never a credential (the URLs are masked)
            "addons": system.addons.listing(app) if can_addons else [],
        }

    context = await asyncio.to_thread(gather)
    return _render(
        request,
        "app.html",
        {
            "flash": flash,
            "can_rollback": caller.may(Action.ROLLBACK, app),
            "can_logs": caller.may(Action.LOGS, app),
            "can_build_logs": caller.may(Action.BUILD_LOG, app),
            "can_addons": can_addons,
            "can_backups": caller.may(Action.ADDON_BACKUPS, app),
            **context,
        },
    )


@router.post("/apps/{app}/rollback")
async def rollback(
    app: str,
    system: SystemDep,
    release: Annotated[int, Form()],
    _caller: Annotated[Caller, form(Action.ROLLBACK)],
) -> Response:
    job = await asyncio.to_thread(system.platform.rollback, app, release)
    return RedirectResponse(
        f"/dashboard/apps/{app}?flash=Rolling+back+to+v{release}+(job+{job.id.lstrip('0')})", status_code=303
    )


@router.get(
    "/apps/{app}/deploys/{job_id}", response_class=HTMLResponse, dependencies=[page(Action.BUILD_LOG)]
)
async def deploy_page(request: Request, app: str, job_id: str, system: SystemDep) -> Response:
    log = await asyncio.to_thread(system.platform.build_log, app, job_id)
    return _render(request, "deploy.html", {"app": app, "job_id": job_id, "log": log})


@router.get("/apps/{app}/charts.json", dependencies=[data(Action.APP_METRICS)])
async def charts(app: str, system: SystemDep) -> Response:
    found = await asyncio.to_thread(chart_data, system, app)
    return JSONResponse({"charts": found}, headers={"Cache-Control": "no-store"})


@router.get("/apps/{app}/logs", response_class=StreamingResponse, dependencies=[data(Action.LOGS)])
async def logs(app: str, system: SystemDep) -> StreamingResponse:
    """The app's recent lines, then new ones as they come (what the page's live log shows)."""
    stop = threading.Event()
    system.streams.acquire()
    try:
        items = await asyncio.to_thread(system.platform.log_lines, app, lines=50, follow=True, stop=stop)
    except BaseException:
        system.streams.release()
        raise

    async def body() -> AsyncIterator[str]:
        try:
            async for line in drain(items, stop):
                yield line.render() + "\n"
        except BillowinError as exc:
            yield f"[billowin] the log stream ended: {exc.message}\n"

    return StreamingResponse(
        system.streams.hold(body()),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


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
