"""Webhooks: ``POST /hooks/github`` and ``POST /hooks/travis``.

Each request is size-limited, verified (401 and nothing started when it is
not), parsed into a ``CodeEvent``, deduplicated by delivery id, and queued
durably in Consul before the reply. The reply never waits for a build.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from billowin.api.deps import SettingsDep, SystemDep
from billowin.apps.store import App
from billowin.errors import InvalidInput
from billowin.pipeline.webhooks import CodeEvent, parse_github, parse_travis, verify_github, verify_travis
from billowin.settings import Settings
from billowin.system import System

router = APIRouter(prefix="/hooks", tags=["webhooks"])


async def read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or ``None`` when it is over ``limit`` bytes (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _reply(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"message": message, **extra})


def _queue(system: System, event: CodeEvent, apps: list[App] | None = None) -> JSONResponse:
    intake = system.intake
    if not intake.claim_delivery(event.delivery):
        return _reply(200, "duplicate delivery: already accepted", delivery=event.delivery)
    jobs = intake.accept(event, apps)
    if not jobs:
        return _reply(202, f"nothing to deploy for {event.repository} {event.branch or ''} {event.sha[:12]}")
    return _reply(202, "queued", jobs=[{"app": j.app, "id": j.id, "sha": j.sha} for j in jobs])


def _counted(system: System, source: str, reply: JSONResponse) -> JSONResponse:
    system.monitoring.metrics.webhook(source, reply)  # billowin_webhooks_total{source, outcome}
    return reply


@router.post("/github", status_code=202)
async def github(request: Request, settings: SettingsDep, system: SystemDep) -> JSONResponse:
    """GitHub ``push``, ``workflow_run``, ``check_suite`` and ``ping`` deliveries."""
    return _counted(system, "github", await _github(request, settings, system))


async def _github(request: Request, settings: Settings, system: System) -> JSONResponse:
    body = await read_body(request, settings.webhook_max_bytes)
    if body is None:
        return _reply(413, f"payload over {settings.webhook_max_bytes} bytes")
    # Everything after reading the body runs in one thread hop: it is a few Consul calls.
    return await asyncio.to_thread(_github_accept, request.headers, body, settings, system)


def _github_accept(headers: Headers, body: bytes, settings: Settings, system: System) -> JSONResponse:
    apps = system.apps.all()
    secrets = _secrets(settings, apps)
    if not secrets:
        return _reply(401, "no webhook secret is configured; refusing unsigned deliveries")
    if not verify_github(secrets, body, headers.get("x-hub-signature-256")):
        return _reply(401, "invalid or missing X-Hub-Signature-256")
    event_name = headers.get("x-github-event", "")
    delivery = headers.get("x-github-delivery")
    try:
        event = parse_github(event_name, body, delivery)
    except InvalidInput as exc:
        return _reply(400, exc.message)
    if event is None:
        return _reply(200, "pong" if event_name == "ping" else f"{event_name}: nothing to do")
    return _queue(system, event, apps)


def _secrets(settings: Settings, apps: list[App]) -> list[bytes]:  # global first, then per app
    found = [settings.github_webhook_secret] if settings.github_webhook_secret else []
    found += [a.webhook_secret for a in apps if a.webhook_secret]
    return [s.get_secret_value().encode() for s in found]


_travis_keys: dict[str, str] = {}


def travis_key(settings: Settings) -> str | None:
    if settings.travis_public_key:
        return settings.travis_public_key
    url = settings.travis_config_url
    if not url:
        return None
    if url not in _travis_keys:
        resp = httpx.get(url, timeout=10)
        resp.raise_for_status()
        _travis_keys[url] = resp.json()["config"]["notifications"]["webhook"]["public_key"]
    return _travis_keys[url]


@router.post("/travis", status_code=202)
async def travis(request: Request, settings: SettingsDep, system: SystemDep) -> JSONResponse:
    """Travis CI webhook notifications (form-encoded ``payload``, ``Signature`` header)."""
    return _counted(system, "travis", await _travis(request, settings, system))


async def _travis(request: Request, settings: Settings, system: System) -> JSONResponse:
    body = await read_body(request, settings.webhook_max_bytes)
    if body is None:
        return _reply(413, f"payload over {settings.webhook_max_bytes} bytes")
    payload = (parse_qs(body.decode(errors="replace")).get("payload") or [""])[0]
    try:
        key = await asyncio.to_thread(travis_key, settings)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return _reply(503, f"cannot get the Travis public key: {exc}")
    if key is None:
        return _reply(401, "no Travis public key is configured; refusing unsigned notifications")
    if not payload or not verify_travis(key, payload, request.headers.get("signature")):
        return _reply(401, "invalid or missing Signature")
    try:
        event = parse_travis(payload)
    except InvalidInput as exc:
        return _reply(400, exc.message)
    return await asyncio.to_thread(_queue, system, event)
