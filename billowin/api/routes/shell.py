"""WebSockets for interactive commands: ``run -i`` and ``pg:psql`` / ``redis:cli``
(``billowin/release/shell.py``).

``/apps/{app}/shell?command=…&tty=…`` (``run``) and ``/apps/{app}/addons/{name}/shell?tty=…``
(``pg:psql``), with ``Authorization: Bearer <token>`` on the upgrade request. Frames: from the
client, binary frames are the command's stdin, and text frames are JSON controls
(``{"resize": [rows, cols]}``, ``{"eof": true}``); to the client, binary frames are output,
their first byte saying which stream (1 stdout, 2 stderr), and the last frame is
``{"exit": N}`` or ``{"error": …, "hint": …}``. Every shell is in the audit log.

FastAPI's access dependencies read HTTP requests, so these routes check the token and the
action themselves, with the same policy table (``billowin.apps.access``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from billowin.apps.access import Action, Caller
from billowin.apps.audit import AuditEntry
from billowin.errors import BillowinError, InvalidInput, Unauthorized
from billowin.names import DNS_LABEL
from billowin.release.shell import Shell
from billowin.system import System

router = APIRouter(tags=["shells"])
MAX_TIMEOUT = 86400
OUT, ERR = b"\x01", b"\x02"


async def _caller(ws: WebSocket, system: System, action: Action, app: str) -> Caller:
    header = ws.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a valid API token is required", hint="Send `Authorization: Bearer <token>`.")
    caller: Caller = await asyncio.to_thread(system.access.bearer, token)
    if not caller.may(action, app):
        raise caller.refusal(action, app)
    return caller


def _check_name(value: str, what: str) -> str:
    if not DNS_LABEL.fullmatch(value):
        raise InvalidInput(f"{value[:70]!r} is not a valid {what} name")
    return value


async def _serve(
    ws: WebSocket, action: Action, app: str, route: str, opener: Callable[[System], Shell]
) -> None:
    await ws.accept()
    system: System = ws.app.state.system
    caller: Caller | None = None
    try:
        caller = await _caller(ws, system, action, _check_name(app, "app"))
        system.streams.acquire()
    except BillowinError as exc:
        await _fail(ws, exc)
        return
    try:
        await _audit(system, caller, action, app, route, ws.url.path)
        try:
            shell = await asyncio.to_thread(opener, system)
        except BillowinError as exc:
            await _fail(ws, exc)
            return
        try:
            await _relay(ws, shell)
        finally:
            await asyncio.to_thread(shell.close)
    finally:
        system.streams.release()
        with contextlib.suppress(RuntimeError):
            await ws.close()


async def _fail(ws: WebSocket, exc: BillowinError) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.send_text(json.dumps({"error": exc.message, "hint": exc.hint}))
        await ws.close()


async def _audit(system: System, caller: Caller, action: Action, app: str, route: str, path: str) -> None:
    entry = AuditEntry(
        actor=caller.token.name,
        token_id=caller.token.id,
        action=action.value,
        method="GET",
        route=route,
        path=path[:512],
        app=app,
        status=101,
        via=caller.via,
    )
    await asyncio.to_thread(system.audit.append, entry)


async def _relay(ws: WebSocket, shell: Shell) -> None:
    """Stdin from the client to the command, its output back, until it exits or the client goes."""
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def pump() -> None:
        try:
            for stream, data in shell.session.output():
                loop.call_soon_threadsafe(output.put_nowait, (stream, data))
            loop.call_soon_threadsafe(output.put_nowait, ("exit", shell.session.exit_code))
        except BillowinError as exc:
            loop.call_soon_threadsafe(output.put_nowait, ("error", exc))
        except Exception as exc:  # the connection to Nomad broke: the client hears why
            loop.call_soon_threadsafe(output.put_nowait, ("error", BillowinError(str(exc))))

    threading.Thread(target=pump, name="shell-output", daemon=True).start()

    async def from_client() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes"):
                await asyncio.to_thread(shell.session.write, message["bytes"])
            elif message.get("text"):
                control = json.loads(message["text"])
                if control.get("eof"):
                    await asyncio.to_thread(shell.session.close_stdin)
                elif isinstance(resize := control.get("resize"), list) and len(resize) == 2:
                    rows, cols = (max(1, min(int(n), 1000)) for n in resize)
                    await asyncio.to_thread(shell.session.resize, rows, cols)

    async def to_client() -> None:
        while True:
            kind, data = await output.get()
            if kind in ("stdout", "stderr"):
                await ws.send_bytes((OUT if kind == "stdout" else ERR) + data)
            elif kind == "exit":
                await ws.send_text(json.dumps({"exit": data if data is not None else 1}))
                return
            else:
                await ws.send_text(json.dumps({"error": data.message, "hint": data.hint}))
                return

    tasks = {asyncio.create_task(from_client()), asyncio.create_task(to_client())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(
                asyncio.CancelledError, WebSocketDisconnect, RuntimeError, BillowinError
            ):
                await task


@router.websocket("/apps/{app}/shell")
async def run_shell(
    ws: WebSocket,
    app: str,
    command: Annotated[str, Query(max_length=4096)],
    tty: bool = False,
    timeout: Annotated[int, Query(ge=10, le=MAX_TIMEOUT)] = 3600,
) -> None:
    """``billowin run -i``: the command in a one-off container, its stdin attached."""

    def opener(system: System) -> Shell:
        return system.platform.shell(app, command, tty=tty, timeout=timeout)

    await _serve(ws, Action.RUN, app, "/apps/{app}/shell", opener)


@router.websocket("/apps/{app}/addons/{name}/shell")
async def addon_shell(
    ws: WebSocket,
    app: str,
    name: str,
    tty: bool = False,
) -> None:
    """``billowin pg:psql`` / ``redis:cli``: the add-on's client, connected as the app is."""

    def opener(system: System) -> Shell:
        return system.addons.shell(app, _check_name(name, "add-on"), tty=tty)

    await _serve(ws, Action.ADDON_SHELL, app, "/apps/{app}/addons/{name}/shell", opener)
