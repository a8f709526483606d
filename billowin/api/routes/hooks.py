"""Webhooks: ``POST /hooks/github`` and ``POST /hooks/travis``.

Cheap checks come first, before the body is read: for GitHub the
``X-Hub-Signature-256`` header must be ``sha256=`` and 64 hex digits (401),
``X-GitHub-Event`` one Billowin handles and ``X-GitHub-Delivery`` a delivery id
(400); for both, ``Content-Length`` must be sent (411) and within
``BILLOWIN_WEBHOOK_MAX_BYTES`` (413), and a body that streams past it is cut
off (413). Only then are the apps listed (from ``System.app_cache``: memory kept
current by a Consul blocking query, so no read per delivery) and HMACs computed:
the global secret and the own secrets of the apps that follow the payload's
repository, one HMAC per distinct secret (401 and nothing started when none matches).

A delivery signed with an app's own secret acts only for that app; the global
secret (and Travis' key) acts for every app. The delivery is parsed into a
``CodeEvent`` (400 for anything malformed or unsafe), then claimed and queued
in one Consul transaction before the reply; a ``pull_request`` becomes a
``PullRequestEvent``, recorded with its claim for the review apps
(``billowin/review/apps.py``). The reply never waits for a build.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from billowin.api.deps import SettingsDep, SystemDep
from billowin.apps.store import App
from billowin.errors import InvalidInput
from billowin.pipeline.webhooks import (
    GLOBAL,
    CodeEvent,
    PullRequestEvent,
    Skipped,
    check_delivery,
    check_github_event,
    github_event,
    is_github_signature,
    load_payload,
    parse_travis,
    repository_of,
    verify_github,
    verify_travis,
)
from billowin.settings import Settings
from billowin.system import System

router = APIRouter(prefix="/hooks", tags=["webhooks"])

# A Travis ``Signature``: base64 of an RSA signature (a 4096-bit key makes 684 characters).
TRAVIS_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{16,2048}={0,2}")


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


def _refused(exc: InvalidInput, status: int = 400) -> JSONResponse:
    return _reply(status, exc.message, **({"hint": exc.hint} if exc.hint else {}))


def _length_refused(headers: Headers, limit: int) -> JSONResponse | None:
    """411 without a ``Content-Length``, 413 when it is over ``limit``: before reading anything."""
    declared = headers.get("content-length")
    if declared is None:
        return _reply(
            411, "a Content-Length header is required", hint="Send the body with its length, not chunked."
        )
    if not declared.isdigit():
        return _reply(400, "the Content-Length header is not a number")
    if int(declared) > limit:
        return _too_large(limit)
    return None


def _too_large(limit: int) -> JSONResponse:
    return _reply(413, f"payload over {limit} bytes", hint="Raise BILLOWIN_WEBHOOK_MAX_BYTES if it is real.")


def _queue(
    system: System, event: CodeEvent, apps: list[App] | None = None, only: set[str] | None = None
) -> JSONResponse:
    delivery = system.intake.deliver(event, apps, only=only)
    if delivery.duplicate:
        return _reply(200, "duplicate delivery: already accepted", delivery=event.delivery)
    if not delivery.jobs:
        return _reply(202, f"nothing to deploy for {event.repository} {event.branch or ''} {event.sha[:12]}")
    return _reply(202, "queued", jobs=[{"app": j.app, "id": j.id, "sha": j.sha} for j in delivery.jobs])


def _counted(system: System, source: str, reply: JSONResponse) -> JSONResponse:
    system.monitoring.metrics.webhook(source, reply)  # billowin_webhooks_total{source, outcome}
    return reply


@router.post("/github", status_code=202)
async def github(request: Request, settings: SettingsDep, system: SystemDep) -> JSONResponse:
    """GitHub ``push``, ``workflow_run``, ``check_suite``, ``pull_request`` and ``ping`` deliveries."""
    return _counted(system, "github", await _github(request, settings, system))


def _github_headers_refused(headers: Headers, limit: int) -> JSONResponse | None:
    """Everything that can be refused from the headers alone, cheapest first."""
    if not is_github_signature(headers.get("x-hub-signature-256")):
        return _reply(
            401,
            "invalid or missing X-Hub-Signature-256",
            hint="Set a secret on the GitHub webhook; Billowin accepts only sha256 signatures.",
        )
    try:
        check_github_event(headers.get("x-github-event"))
        check_delivery(headers.get("x-github-delivery"))
    except InvalidInput as exc:
        return _refused(exc)
    return _length_refused(headers, limit)


async def _github(request: Request, settings: Settings, system: System) -> JSONResponse:
    refused = _github_headers_refused(request.headers, settings.webhook_max_bytes)
    if refused is not None:
        return refused
    body = await read_body(request, settings.webhook_max_bytes)
    if body is None:
        return _too_large(settings.webhook_max_bytes)
    # Everything after reading the body runs in one thread hop: for a new delivery, one Consul
    # transaction (and a read of the job id counter of each app it queues a job for).
    return await asyncio.to_thread(_github_accept, request.headers, body, settings, system)


def _github_accept(headers: Headers, body: bytes, settings: Settings, system: System) -> JSONResponse:
    event_name = check_github_event(headers.get("x-github-event"))
    delivery = check_delivery(headers.get("x-github-delivery"))
    payload: dict[str, Any] | None = None
    malformed: InvalidInput | None = None
    try:
        payload = load_payload(body)
    except InvalidInput as exc:  # answered only once the delivery is known to be signed
        malformed = exc
    repository = repository_of(payload)
    following = system.app_cache.following(repository) if repository else []
    secrets = _secrets(settings, following)
    if not secrets:
        return _reply(
            401,
            "no webhook secret is configured for this repository; refusing unsigned deliveries",
            hint="Set BILLOWIN_GITHUB_WEBHOOK_SECRET (or the app's own secret), and the same on GitHub.",
        )
    signers = verify_github(secrets, body, headers.get("x-hub-signature-256"))
    if not signers:
        return _reply(
            401,
            "invalid or missing X-Hub-Signature-256",
            hint="Give GitHub the same secret as Billowin (the global one, or the app's own).",
        )
    if payload is None:
        return _refused(malformed or InvalidInput("the payload is not valid JSON"))
    try:
        event = github_event(event_name, payload, delivery)
    except InvalidInput as exc:
        return _refused(exc)
    if isinstance(event, Skipped):
        return _reply(200, event.reason)
    only = None if GLOBAL in signers else signers  # an app's own secret acts for that app only
    if isinstance(event, PullRequestEvent):
        return _review(system, event, following, only)
    return _queue(system, event, following, only)


def _review(system: System, event: PullRequestEvent, apps: list[App], only: set[str] | None) -> JSONResponse:
    accepted = system.review_apps.accept(event, apps, only)
    if accepted.duplicate:
        return _reply(200, "duplicate delivery: already accepted", delivery=event.delivery)
    if not accepted.touched:
        return _reply(202, f"no app of {event.repository} has review apps on: nothing to do")
    return _reply(202, f"pull request #{event.number} {event.action}", review_apps=accepted.touched)


def _secrets(settings: Settings, following: list[App]) -> list[tuple[str, bytes]]:
    """The global secret, and the own secrets of the apps that follow the delivery's repository."""
    found = [(GLOBAL, settings.github_webhook_secret)] if settings.github_webhook_secret else []
    found += [(a.name, a.webhook_secret) for a in following if a.webhook_secret]
    return [(owner, s.get_secret_value().encode()) for owner, s in found]


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
    signature = request.headers.get("signature")
    if not signature or not TRAVIS_SIGNATURE.fullmatch(signature):
        return _reply(401, "invalid or missing Signature", hint="Send Travis CI's notification unchanged.")
    refused = _length_refused(request.headers, settings.webhook_max_bytes)
    if refused is not None:
        return refused
    body = await read_body(request, settings.webhook_max_bytes)
    if body is None:
        return _too_large(settings.webhook_max_bytes)
    payload = (parse_qs(body.decode(errors="replace")).get("payload") or [""])[0]
    try:
        key = await asyncio.to_thread(travis_key, settings)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return _reply(503, f"cannot get the Travis public key: {exc}")
    if key is None:
        return _reply(401, "no Travis public key is configured; refusing unsigned notifications")
    if not payload or not verify_travis(key, payload, signature):
        return _reply(401, "invalid or missing Signature")
    try:
        event = parse_travis(payload)
    except InvalidInput as exc:
        return _refused(exc)
    if isinstance(event, Skipped):
        return _reply(200, event.reason)
    return await asyncio.to_thread(_queue, system, event)
