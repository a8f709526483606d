"""The client end of interactive commands (``run -i``, ``pg:psql``, ``redis:cli``): a WebSocket
to the API (``billowin/api/routes/shell.py`` says what travels on it).

With a terminal on both ends (stdin and stdout are TTYs) the local terminal goes into raw mode
and the command gets a TTY of the same size, resized with it; otherwise stdin is read to its
end and sent (``echo 'select 1;' | billowin pg:psql APP``), and the output comes back as the
command wrote it, stdout and stderr apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
from typing import Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from billowin.cli.client import load_config
from billowin.errors import BillowinError, ServiceError, Unreachable

OUT, ERR = 1, 2


def is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _url(path: str, params: dict[str, Any]) -> tuple[str, dict[str, str]]:
    config = load_config()
    base = config.api_url.rstrip("/")
    base = "wss://" + base.removeprefix("https://") if base.startswith("https://") else base
    base = "ws://" + base.removeprefix("http://") if base.startswith("http://") else base
    headers = {"Authorization": f"Bearer {config.api_token.get_secret_value()}"} if config.api_token else {}
    query = urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()})
    return f"{base}{path}?{query}", headers


def interact(path: str, params: dict[str, Any]) -> int:
    """``attach``, with a terminal when there is one; an error is printed with what to do."""
    from billowin.cli.output import fail

    try:
        return attach(path, params, tty=is_terminal())
    except BillowinError as exc:
        fail(exc)


def _feed(ws: ClientConnection, tty: bool) -> None:
    """Stdin to the command, until it ends (or, with a TTY, until the command does)."""
    fd = sys.stdin.fileno()
    with contextlib.suppress(ConnectionClosed, OSError):
        while data := os.read(fd, 65536):
            ws.send(data)
        if not tty:
            ws.send(json.dumps({"eof": True}))


def attach(path: str, params: dict[str, Any], *, tty: bool) -> int:
    """Run the command behind ``path`` interactively; its exit code."""
    url, headers = _url(path, {**params, "tty": tty})
    try:
        ws = connect(url, additional_headers=headers, max_size=None, open_timeout=15)
    except InvalidStatus as exc:
        raise ServiceError(
            "the Billowin API", f"it refused the connection (HTTP {exc.response.status_code})"
        ) from exc
    except (OSError, WebSocketException) as exc:
        raise Unreachable("the Billowin API", url.split("?")[0]) from exc
    saved: list[Any] = []
    with ws:
        if tty:
            import termios
            import tty as terminal

            fd = sys.stdin.fileno()
            saved = termios.tcgetattr(fd)
            terminal.setraw(fd)

            def resize(*_args: object) -> None:
                size = shutil.get_terminal_size()
                with contextlib.suppress(ConnectionClosed):
                    ws.send(json.dumps({"resize": [size.lines, size.columns]}))

            resize()
            signal.signal(signal.SIGWINCH, resize)
        threading.Thread(target=_feed, args=(ws, tty), name="stdin", daemon=True).start()
        try:
            return _receive(ws)
        finally:
            if saved:
                import termios

                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def _receive(ws: ClientConnection) -> int:
    while True:
        try:
            message = ws.recv()
        except ConnectionClosed:
            raise ServiceError("the Billowin API", "the connection closed before the command ended") from None
        if isinstance(message, bytes):
            stream = sys.stdout.buffer if message[:1] == bytes([OUT]) else sys.stderr.buffer
            stream.write(message[1:])
            stream.flush()
            continue
        control = json.loads(message)
        if "exit" in control:
            return int(control["exit"])
        raise BillowinError(str(control.get("error", "the command failed")), hint=control.get("hint"))
