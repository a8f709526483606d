"""Add-on backups: logical dumps, taken and restored inside the add-on's own task.

Postgres: ``pg_dump -Fc`` of the add-on's database, restored with ``pg_restore --clean
--single-transaction`` (all of it or nothing). Redis: the RDB file ``redis-cli --rdb`` fetches
from the server, restored by putting it on the volume and restarting the task, whose start
script loads it (``scripts/redis.sh``). Both run through Nomad's exec API (``TaskExec``), as
``nomad alloc exec`` does, as the task's own user over the container's socket: no password
is ever passed.

Each backup is ``<state>/addon-backups/<add-on>/<id><.dump|.rdb>`` plus ``<id>.json`` (when,
how big, manual or scheduled, and what it held: each table's row count, or Redis's key count),
written once the dump is complete (a temporary file, fsynced, renamed), so a backup that is
listed is whole. A restore reads the same counts back and says whether they match.
``billowin backup`` takes the directory with the rest of the box.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ValidationError

from billowin.addons.model import Addon, Kind
from billowin.errors import InvalidInput, NotFound, ServiceError
from billowin.ports import Scheduler, TaskExec
from billowin.settings import Settings

BACKUP_ID = re.compile(r"^b([0-9]{3,6})$")
READ_CHUNK = 1024 * 1024
SOCKET = "/tmp"  # noqa: S108 - the server's socket directory, inside the add-on's container
# Each table's exact row count, in one query (query_to_xml runs a count per table).
COUNT_ROWS = (
    "SELECT table_schema || '.' || table_name, "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "table_schema, table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


class Backup(BaseModel):
    id: str
    addon: str
    kind: Kind
    created_at: datetime
    size: int
    trigger: str  # manual | scheduled | box (taken by `billowin backup`)
    counts: dict[str, int]  # table -> rows (Postgres), or {"keys": n} (Redis)


class RestoreResult(BaseModel):
    backup: str
    into: str
    counts: dict[str, int]
    expected: dict[str, int]
    verified: bool
    seconds: float


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


class Backups:
    def __init__(self, settings: Settings, nomad: Scheduler, exec_: TaskExec) -> None:
        self.settings = settings
        self.nomad = nomad
        self.exec = exec_
        self.root = settings.state_dir / "addon-backups"

    def directory(self, addon: Addon) -> Path:
        return self.root / addon.name

    # -- records ---------------------------------------------------------------------------
    def of(self, addon: Addon) -> list[Backup]:
        found = []
        for meta in sorted(self.directory(addon).glob("b*.json")):
            with contextlib.suppress(OSError, ValidationError):
                found.append(Backup.model_validate_json(meta.read_text()))
        return sorted(found, key=lambda b: int(b.id[1:]))

    def get(self, addon: Addon, backup_id: str | None) -> Backup:
        if backup_id is not None and not BACKUP_ID.fullmatch(backup_id):
            raise InvalidInput(f"{backup_id[:20]!r} is not a backup id", hint="Ids look like b001.")
        backups = self.of(addon)
        if not backups:
            raise NotFound(
                f"{addon.name} has no backups", hint=f"Take one: `billowin pg:backups:capture {addon.app}`."
            )
        if backup_id is None:
            return backups[-1]
        for backup in backups:
            if backup.id == backup_id:
                return backup
        raise NotFound(f"{addon.name} has no backup {backup_id}", hint="`billowin pg:backups` lists them.")

    def file(self, addon: Addon, backup: Backup) -> Path:
        return self.directory(addon) / f"{backup.id}{addon.spec.backup_suffix}"

    def _next_id(self, addon: Addon) -> str:
        numbers = [int(m[1]) for p in self.directory(addon).glob("b*") if (m := BACKUP_ID.fullmatch(p.stem))]
        return f"b{max(numbers, default=0) + 1:03d}"

    def forget(self, addon: Addon) -> None:
        directory = self.directory(addon)
        for path in directory.glob("*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            directory.rmdir()

    # -- schedule ----------------------------------------------------------------------------
    def due(self, addon: Addon) -> bool:
        interval = self.settings.addon_backup_interval
        if interval <= 0:
            return False
        scheduled = [b for b in self.of(addon) if b.trigger == "scheduled"]
        if not scheduled:
            return True
        return (datetime.now(UTC) - scheduled[-1].created_at).total_seconds() >= interval

    def prune(self, addon: Addon) -> list[str]:
        """Keep the newest ``BILLOWIN_ADDON_BACKUP_KEEP`` of each trigger; returns the ids removed."""
        keep = self.settings.addon_backup_keep
        removed = []
        for trigger in ("scheduled", "manual", "box"):
            backups = [b for b in self.of(addon) if b.trigger == trigger]
            for backup in backups[: max(len(backups) - keep, 0)]:
                (self.directory(addon) / f"{backup.id}.json").unlink(missing_ok=True)
                self.file(addon, backup).unlink(missing_ok=True)
                removed.append(backup.id)
        return removed

    # -- the task ----------------------------------------------------------------------------
    def allocation(self, addon: Addon) -> str:
        for alloc in self.nomad.allocations(addon.job):
            if alloc.get("ClientStatus") == "running":
                return str(alloc["ID"])
        raise ServiceError(
            "nomad",
            f"{addon.name} is not running",
            hint=f"`billowin addons:info {addon.name}` says how it is; Nomad's UI shows why.",
        )

    def _exec(
        self,
        addon: Addon,
        command: list[str],
        *,
        stdin: Iterable[bytes] = (),
        stdout: IO[bytes] | None = None,
    ) -> str:
        """Run ``command`` in the add-on's task; its stdout (unless it went to ``stdout``)."""
        out = stdout if stdout is not None else io.BytesIO()
        code, errors = self.exec.run(
            self.allocation(addon), addon.kind.value, command, stdin=stdin, stdout=out
        )
        if code != 0:
            raise ServiceError(
                "nomad", f"{command[0]} in {addon.name} failed (exit {code}): {errors.strip()[-500:]}"
            )
        return out.getvalue().decode(errors="replace") if isinstance(out, io.BytesIO) else ""

    def counts(self, addon: Addon) -> dict[str, int]:
        """What the add-on holds now: each table's row count, or Redis's number of keys."""
        if addon.kind == Kind.POSTGRES:
            text = self._exec(
                addon,
                [
                    "psql",
                    "-h",
                    SOCKET,
                    "-U",
                    "postgres",
                    "-d",
                    addon.database(),
                    "-At",
                    "-F",
                    "\t",
                    "-c",
                    COUNT_ROWS,
                ],
            )
            rows = (line.split("\t") for line in text.splitlines() if "\t" in line)
            return {table: int(count) for table, count in rows}
        text = self._exec(addon, ["redis-cli", "--no-auth-warning", "dbsize"])
        return {"keys": int(text.strip() or 0)}

    def capture(self, addon: Addon, *, trigger: str = "manual") -> Backup:
        directory = self.directory(addon)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        backup_id = self._next_id(addon)
        counts = self.counts(addon)
        target = directory / f"{backup_id}{addon.spec.backup_suffix}"
        partial = target.with_suffix(".part")
        if addon.kind == Kind.POSTGRES:
            command = [
                "pg_dump",
                "-h",
                SOCKET,
                "-U",
                "postgres",
                "-Fc",
                "--no-owner",
                "--no-acl",
                addon.database(),
            ]
        else:
            command = [
                "sh",
                "-c",
                "redis-cli --no-auth-warning --rdb /tmp/billowin-backup.rdb >/dev/null"
                " && cat /tmp/billowin-backup.rdb && rm -f /tmp/billowin-backup.rdb",
            ]
        try:
            with partial.open("wb") as out:
                os.chmod(partial, 0o600)
                self._exec(addon, command, stdout=out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        backup = Backup(
            id=backup_id,
            addon=addon.name,
            kind=addon.kind,
            created_at=datetime.now(UTC),
            size=target.stat().st_size,
            trigger=trigger,
            counts=counts,
        )
        meta = directory / f"{backup_id}.json"
        meta.with_suffix(".tmp").write_text(backup.model_dump_json(indent=1))
        os.replace(meta.with_suffix(".tmp"), meta)
        return backup

    def restore(self, source: Addon, backup: Backup, target: Addon) -> RestoreResult:
        """Put ``backup`` (of ``source``) into ``target`` (the same add-on, or another of its kind)."""
        if source.kind != target.kind:
            raise InvalidInput(
                f"a {source.kind.value} backup cannot go into {target.name} ({target.kind.value})"
            )
        started = time.monotonic()
        path = self.file(source, backup)
        if target.kind == Kind.POSTGRES:
            self._exec(
                target,
                [
                    "pg_restore",
                    "-h",
                    SOCKET,
                    "-U",
                    "postgres",
                    "-d",
                    target.database(),
                    f"--role={target.database()}",
                    "--no-owner",
                    "--no-acl",
                    "--clean",
                    "--if-exists",
                    "--single-transaction",
                ],
                stdin=_file_chunks(path),
            )
        else:
            self._exec(
                target,
                [
                    "sh",
                    "-c",
                    'cat >"$ADDON_DATA/restore.rdb.part" && mv "$ADDON_DATA/restore.rdb.part" '
                    '"$ADDON_DATA/restore.rdb"',
                ],
                stdin=_file_chunks(path),
            )
            self._restart_and_wait(target)
        counts = self.counts(target)
        return RestoreResult(
            backup=backup.id,
            into=target.name,
            counts=counts,
            expected=backup.counts,
            verified=counts == backup.counts,
            seconds=round(time.monotonic() - started, 2),
        )

    def _restart_and_wait(self, addon: Addon) -> None:
        """Restart the task (its start script loads the file), then wait until it answers."""
        alloc = self.allocation(addon)
        since = time.time_ns()
        self.nomad.restart(addon.job)
        deadline = time.monotonic() + self.settings.addon_ready_timeout
        while time.monotonic() < deadline:
            state = (self.nomad.allocation(alloc).get("TaskStates") or {}).get(addon.kind.value) or {}
            started = [
                e
                for e in state.get("Events") or []
                if e.get("Type") == "Started" and e.get("Time", 0) > since
            ]
            if started and state.get("State") == "running":
                with contextlib.suppress(ServiceError):
                    if self._exec(addon, ["redis-cli", "--no-auth-warning", "ping"]).strip() == "PONG":
                        return
            time.sleep(0.5)
        raise ServiceError(
            "nomad", f"{addon.name} did not come back after the restore", hint="Its log says why."
        )
