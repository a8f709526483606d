"""The audit middleware: one ``AuditEntry`` (``billowin.apps.audit``) for every call that changes something.

It wraps every HTTP request. The access dependencies (``billowin.api.deps``)
note on the request which action it is, which app, and who called; when the
answer starts, the middleware appends the entry with its status code, refused
calls (401, 403, 415) included. It records ``POST``, ``PUT``, ``PATCH`` and
``DELETE`` calls of routes that name an action, and ``config --reveal``.

Webhooks (``/hooks/github``, ``/hooks/travis``) name no action (their routes
verify signatures, not tokens): the middleware records them with the actor
``webhook:github`` / ``webhook:travis``, one entry per app whose rollout the
delivery queued (read from the reply's ``jobs``), or one without an app. Their
entries are written just after the reply is sent, not before: GitHub's sender
waits on the reply, and the delivery is already recorded in Consul.

Only the route, the path, the method and the status are read: never a body
sent, a query string, a header or a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billowin.api.deps import NOTE, AuditNote
from billowin.apps.access import AUDITED_READS
from billowin.apps.audit import AuditEntry, AuditLog

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WEBHOOKS = {"/hooks/github": "github", "/hooks/travis": "travis"}
_REPLY_MAX = 64 * 1024  # of a webhook's reply, read for the apps it queued
_PATH_MAX = 500


class AuditMiddleware:
    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        note = AuditNote()
        scope.setdefault("state", {})[NOTE] = note
        hook = WEBHOOKS.get(scope["path"]) if scope["method"] == "POST" else None
        started = False
        status = 500
        reply = bytearray()

        async def watch(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, int(message["status"])
                if hook is None:
                    await self._call(scope, note, status)
            elif hook is not None and message["type"] == "http.response.body":
                if len(reply) < _REPLY_MAX:
                    reply.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    # After the reply: GitHub waits on it, and the delivery itself is already
                    # durable in Consul (its record and jobs); the entry follows at once.
                    await send(message)
                    await self._webhook(scope, hook, status, bytes(reply))
                    return
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if not started:
                if hook is None:
                    await self._call(scope, note, 500)
                else:
                    await self._webhook(scope, hook, 500, b"")
            raise

    async def _call(self, scope: Scope, note: AuditNote, status: int) -> None:
        action = note.action
        if action is None or (scope["method"] not in MUTATING and action not in AUDITED_READS):
            return
        caller = note.caller
        path = str(scope["path"])
        await self._append(
            AuditEntry(
                actor=caller.token.name if caller else note.actor or "anonymous",
                token_id=caller.token.id if caller else None,
                action=action.value,
                method=scope["method"],
                route=note.route or path[:_PATH_MAX],
                path=path[:_PATH_MAX],
                app=note.app[:_PATH_MAX] if note.app else None,
                status=status,
                via=caller.via if caller else ("dashboard" if path.startswith("/dashboard") else "api"),
            )
        )

    async def _webhook(self, scope: Scope, source: str, status: int, reply: bytes) -> None:
        apps: list[str | None] = []
        try:
            body: Any = json.loads(reply) if reply else {}
            jobs = body.get("jobs") if isinstance(body, dict) else None
            for job in jobs if isinstance(jobs, list) else []:
                app = job.get("app") if isinstance(job, dict) else None
                if isinstance(app, str) and app not in apps:
                    apps.append(app)
        except ValueError:
            pass
        path = str(scope["path"])
        for app in apps or [None]:
            await self._append(
                AuditEntry(
                    actor=f"webhook:{source}",
                    action="deploy" if app else "webhook",
                    method=scope["method"],
                    route=path,
                    path=path,
                    app=app,
                    status=status,
                    via="webhook",
                )
            )

    async def _append(self, entry: AuditEntry) -> None:
        try:
            await asyncio.to_thread(self.audit.append, entry)
        except OSError as exc:  # the call is done: say so loudly, but do not turn it into an error
            log.error("could not write the audit log %s: %s (entry: %s)", self.audit.path, exc, entry)
