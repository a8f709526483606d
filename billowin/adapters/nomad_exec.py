"""Commands inside a running task, through Nomad's exec API (``nomad alloc exec``).

python-nomad has no client for it: it is a WebSocket (``/v1/client/allocation/<id>/exec``)
that carries JSON frames, so this adapter speaks it with the ``websockets`` library (uvicorn's
own WebSocket implementation, already installed). Frames, as Nomad 1.6 defines them
(``plugins/drivers/execstreaming.go``): to Nomad ``{"stdin": {"data": <base64>}}``,
``{"stdin": {"close": true}}`` and ``{"tty_size": {"height": H, "width": W}}``; from Nomad
``{"stdout"|"stderr": {"data": <base64>}}`` and finally ``{"exited": true, "result":
{"exit_code": N}}``. The ACL token goes in the ``X-Nomad-Token`` header, never the URL.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from billowin.errors import NotFound, ServiceError, Unreachable
from billowin.names import is_process_name
from billowin.settings import Settings

SYSTEM = "nomad"
CHUNK = 48 * 1024  # bytes of stdin per frame (64 KiB once in base64)
ALLOC_ID = frozenset("0123456789abcdef-")


class ExecSession:
    """One command running in a task: write its stdin, read its output, then its exit code."""

    def __init__(self, conn: ClientConnection, what: str) -> None:
        self._opened = contextlib.ExitStack()
        self._conn = self._opened.enter_context(conn)  # websockets wants it used as a context
        self._what = what
        self.exit_code: int | None = None

    def _send(self, frame: dict[str, Any]) -> None:
        try:
            self._conn.send(json.dumps(frame))
        except ConnectionClosed as exc:
            raise ServiceError(SYSTEM, f"{self._what}: Nomad closed the connection ({exc})") from exc

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            piece = base64.b64encode(data[start : start + CHUNK]).decode()
            self._send({"stdin": {"data": piece}})

    def close_stdin(self) -> None:
        self._send({"stdin": {"close": True}})

    def resize(self, rows: int, cols: int) -> None:
        self._send({"tty_size": {"height": rows, "width": cols}})

    def output(self) -> Iterator[tuple[str, bytes]]:
        """``(stream, bytes)`` as they come; ends when the command has exited (``exit_code``)."""
        while True:
            try:
                raw = self._conn.recv()
            except ConnectionClosed as exc:
                if self.exit_code is None:
                    raise ServiceError(
                        SYSTEM, f"{self._what}: the connection closed before the command ended ({exc})"
                    ) from exc
                return
            frame = json.loads(raw)
            for stream in ("stdout", "stderr"):
                data = (frame.get(stream) or {}).get("data")
                if data:
                    yield stream, base64.b64decode(data)
            if frame.get("exited"):
                self.exit_code = int((frame.get("result") or {}).get("exit_code", 0) or 0)
                return

    def close(self) -> None:
        self._opened.close()


class NomadExec:
    """The ``TaskExec`` port on Nomad's exec WebSocket."""

    def __init__(self, settings: Settings) -> None:
        self._address = settings.nomad_addr.rstrip("/")
        self._token = settings.nomad_token.get_secret_value() if settings.nomad_token else None

    def open(self, alloc_id: str, task: str, command: Sequence[str], *, tty: bool = False) -> ExecSession:
        if not alloc_id or set(alloc_id) - ALLOC_ID or not is_process_name(task):
            raise NotFound(f"no allocation {alloc_id[:40]!r} with a task {task[:40]!r}")
        query = urlencode({"task": task, "command": json.dumps(list(command)), "tty": str(tty).lower()})
        url = f"{self._address}/v1/client/allocation/{alloc_id}/exec?{query}"
        url = "wss://" + url.removeprefix("https://") if url.startswith("https://") else url
        url = "ws://" + url.removeprefix("http://") if url.startswith("http://") else url
        what = f"a command in allocation {alloc_id[:8]}"
        headers = {"X-Nomad-Token": self._token} if self._token else None
        try:
            conn = connect(
                url,
                additional_headers=headers,
                ssl=ssl.create_default_context() if url.startswith("wss://") else None,
                max_size=None,
                open_timeout=10,
                close_timeout=5,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 404:
                raise NotFound(f"no allocation {alloc_id[:8]} (it may have just stopped)") from exc
            raise ServiceError(SYSTEM, f"{what}: Nomad answered HTTP {status}") from exc
        except (OSError, WebSocketException) as exc:
            raise Unreachable(SYSTEM, self._address) from exc
        return ExecSession(conn, what)

    def run(
        self,
        alloc_id: str,
        task: str,
        command: Sequence[str],
        *,
        stdin: Iterable[bytes] = (),
        stdout: IO[bytes] | None = None,
    ) -> tuple[int, str]:
        """Run ``command`` to its end, feeding it ``stdin`` and writing its stdout to ``stdout``.

        Returns the exit code and what it wrote on stderr (its last 8 KiB).
        """
        session = self.open(alloc_id, task, command)
        failed: list[BaseException] = []

        def feed() -> None:
            try:
                for chunk in stdin:
                    session.write(chunk)
                session.close_stdin()
            except BaseException as exc:  # reported once the output has ended
                failed.append(exc)

        feeder = threading.Thread(target=feed, name="exec-stdin", daemon=True)
        feeder.start()
        errors = bytearray()
        try:
            for stream, data in session.output():
                if stream == "stdout" and stdout is not None:
                    stdout.write(data)
                elif stream == "stderr":
                    errors += data
                    del errors[:-8192]
        finally:
            session.close()
            feeder.join(timeout=5)
        if failed and session.exit_code is None:
            raise failed[0]
        return session.exit_code if session.exit_code is not None else 1, errors.decode(errors="replace")
