"""The audit log: who changed what, on which app, when, and how it ended.

Every call that changes something (``POST``, ``PUT``, ``PATCH``, ``DELETE`` on
the API, the dashboard and the webhooks), and every ``config --reveal``, adds
one ``AuditEntry``: the actor (token id and name, ``webhook:github`` /
``webhook:travis``, or ``anonymous`` when no valid credential came), the action
(``config:set``, ``apps:destroy``, ``tokens:create``…), the route and path,
the app, the time and the status code. Refused calls are recorded like the
others. Never a body, a query string, a header, a config value or a token.

**Storage: an append-only JSON-lines file**, ``<state>/audit.jsonl``
(``BILLOWIN_AUDIT_FILE``), mode 0600. Why not Consul KV like the other records:

- append-only is what the file *is*: each entry is one ``write`` on a
  descriptor opened with ``O_APPEND`` (the kernel puts it at the end, whole),
  then ``fsync``, before the API moves on; nothing in Billowin rewrites or
  deletes lines, and ``chattr +a`` or shipping the file elsewhere works as for
  any log;
- it survives an API restart and a Consul restart (single-box Consul runs
  ``-dev``, in memory), and it grows without bloating Consul's raft log;
- reading the newest entries reads the file backwards, block by block, so a
  long history costs nothing until someone asks for it.

Each API process writes the log of its own state directory, as it does its
monitoring store. Rotation is left to the operator (``logrotate`` with
``copytruncate``, or a move: each write opens the path afresh).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

FILE_NAME = "audit.jsonl"
_BLOCK = 64 * 1024


class AuditEntry(BaseModel):
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    actor: str  # the token's name, "webhook:github", "webhook:travis" or "anonymous"
    token_id: str | None = None
    action: str  # e.g. "config:set", "apps:destroy", "tokens:create"
    method: str
    route: str  # the route's template, e.g. /apps/{app}/config
    path: str  # the path called (never the query string)
    app: str | None = None
    status: int
    via: str = "api"  # "api", "dashboard" or "webhook"


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, entry: AuditEntry) -> None:
        """Add one entry at the end of the file, durably (``fsync``) before returning."""
        line = (entry.model_dump_json() + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = os.write(fd, line)
                if written != len(line):  # a full disk; the next entry still starts on its own line
                    os.write(fd, b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(
        self,
        *,
        app: str | None = None,
        visible: Callable[[AuditEntry], bool] = lambda _entry: True,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries (of ``app``, and that ``visible`` lets through), newest last."""
        found: list[AuditEntry] = []
        if limit <= 0:
            return found
        for raw in self._lines_backwards():
            try:
                entry = AuditEntry.model_validate_json(raw)
            except ValidationError:
                continue  # a torn line (a crash mid-write, a full disk): skip it
            if (app is None or entry.app == app) and visible(entry):
                found.append(entry)
                if len(found) >= limit:
                    break
        found.reverse()
        return found

    def _lines_backwards(self) -> Iterator[bytes]:
        try:
            fh = self.path.open("rb")
        except FileNotFoundError:
            return
        with fh:
            position = fh.seek(0, os.SEEK_END)
            tail = b""
            while position > 0:
                step = min(_BLOCK, position)
                position -= step
                fh.seek(position)
                block = fh.read(step) + tail
                lines = block.split(b"\n")
                tail = lines.pop(0)  # maybe the end of a line that starts in the block before
                for line in reversed(lines):
                    if line.strip():
                        yield line
            if tail.strip():
                yield tail
