"""Where monitoring keeps its one-minute points and its alerts: one SQLite file.

Why SQLite and not a Prometheus server (or another time-series database):
Billowin targets one cheap box. A day of one-minute points for 20 apps is
about 600,000 rows, 13 MB on disk (series are numbered, a point is ~20 bytes),
and reading an app's hour takes milliseconds: SQLite (in the standard
library) holds that in one file under ``BILLOWIN_STATE_DIR``, survives API
restarts, needs no extra daemon to install, start, secure and watch, and its
queries for one app's series over a window are an index range scan. Whoever
wants Prometheus anyway can scrape ``GET /metrics``, which exposes the same
figures. The file is pruned to ``BILLOWIN_METRICS_RETENTION_DAYS``.

Alerts live here too, so their de-duplication (one alert per app and kind
while it fires) and their pending notifications survive a restart.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from billowin.errors import ServiceError
from billowin.monitoring.aggregate import Point, SeriesKey

SYSTEM = "monitoring store"
T = TypeVar("T")

SCHEMA = """
-- One row per series (app, metric, process type, instance); points refer to it by number,
-- which keeps a point at about 20 bytes on disk.
CREATE TABLE IF NOT EXISTS series (
    id       INTEGER PRIMARY KEY,
    app      TEXT NOT NULL,
    metric   TEXT NOT NULL,
    process  TEXT NOT NULL,
    instance TEXT NOT NULL,
    UNIQUE (app, metric, process, instance)
);
CREATE TABLE IF NOT EXISTS points (
    series INTEGER NOT NULL,
    minute INTEGER NOT NULL,  -- unix seconds at the start of the minute
    value  REAL    NOT NULL,
    PRIMARY KEY (series, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    app                  TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    state                TEXT NOT NULL,
    summary              TEXT NOT NULL,
    started_at           REAL NOT NULL,
    resolved_at          REAL,
    resolution           TEXT,
    notified_firing_at   REAL,
    notified_resolved_at REAL
);
-- One alert per (app, kind) while it fires: de-duplication the database enforces.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_firing ON alerts (app, kind) WHERE state = 'firing';
CREATE INDEX IF NOT EXISTS alerts_by_start ON alerts (started_at);
"""


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertKind(StrEnum):
    CRASH_LOOP = "crash_loop"
    DEPLOY_FAILED = "deploy_failed"
    NO_HEALTHY_INSTANCE = "no_healthy_instance"
    HIGH_5XX = "high_5xx"
    CERTIFICATE_FAILING = "certificate_failing"


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Alert(BaseModel):
    id: int
    app: str
    kind: AlertKind
    state: AlertState
    summary: str
    started_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None
    notified_firing_at: datetime | None = None
    notified_resolved_at: datetime | None = None


class Series(BaseModel):
    metric: str
    process: str = ""
    instance: str = ""
    points: list[tuple[int, float]] = Field(default_factory=list)  # (minute start, unix s; value)


def _alert(row: tuple[Any, ...]) -> Alert:
    """A row of ``SELECT * FROM alerts`` (columns in the order of the table)."""
    return Alert(
        id=row[0],
        app=row[1],
        kind=AlertKind(row[2]),
        state=AlertState(row[3]),
        summary=row[4],
        started_at=datetime.fromtimestamp(row[5], UTC),
        resolved_at=_dt(row[6]),
        resolution=row[7],
        notified_firing_at=_dt(row[8]),
        notified_resolved_at=_dt(row[9]),
    )


class MetricStore:
    """Thread-safe: one connection behind a lock (the collector, the notifier and API requests share it).

    The file is opened on first use, so building an API app costs nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._ids: dict[SeriesKey, int] = {}

    def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                if self._db is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.executescript(SCHEMA)
                    self._db = db
                return fn(self._db)
            except (sqlite3.Error, OSError) as exc:
                raise ServiceError(SYSTEM, f"{what} in {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- points ----------------------------------------------------------------
    def _series_id(self, db: sqlite3.Connection, key: SeriesKey) -> int:
        found = self._ids.get(key)
        if found is None:
            row = (key.app, key.metric, key.process, key.instance)
            db.execute(
                "INSERT INTO series (app, metric, process, instance) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                row,
            )
            (found,) = db.execute(
                "SELECT id FROM series WHERE app = ? AND metric = ? AND process = ? AND instance = ?", row
            ).fetchone()
            self._ids[key] = found
        return int(found)

    def write(self, points: Iterable[Point]) -> int:
        listed = list(points)
        if not listed:
            return 0

        def go(db: sqlite3.Connection) -> int:
            with db:  # one transaction
                rows = [(self._series_id(db, p.key), p.minute, p.value) for p in listed]
                db.executemany(
                    "INSERT INTO points (series, minute, value) VALUES (?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET value = excluded.value",
                    rows,
                )
            return len(rows)

        return self._run("writing points", go)

    def series(
        self,
        app: str,
        *,
        since: float,
        until: float | None = None,
        metrics: Iterable[str] | None = None,
        process: str | None = None,
        instance: str | None = None,
    ) -> list[Series]:
        """Every series of ``app`` with points in ``[since, until]``, sorted by metric, process, instance."""
        sql = (
            "SELECT s.metric, s.process, s.instance, p.minute, p.value FROM series s "
            "JOIN points p ON p.series = s.id WHERE s.app = ? AND p.minute >= ? AND p.minute <= ?"
        )
        args: list[Any] = [app, int(since // 60 * 60), int(until) if until is not None else 2**62]
        wanted = list(metrics or [])
        if wanted:
            sql += f" AND s.metric IN ({','.join('?' * len(wanted))})"
            args += wanted
        if process is not None:
            sql += " AND s.process = ?"
            args.append(process)
        if instance is not None:
            sql += " AND s.instance = ?"
            args.append(instance)
        sql += " ORDER BY s.metric, s.process, s.instance, p.minute"
        rows = self._run("reading points", lambda db: db.execute(sql, args).fetchall())
        out: dict[tuple[str, str, str], Series] = {}
        for metric, proc, inst, minute, value in rows:
            found = out.get((metric, proc, inst))
            if found is None:
                found = out[(metric, proc, inst)] = Series(metric=metric, process=proc, instance=inst)
            found.points.append((int(minute), float(value)))
        return list(out.values())

    def prune(self, before: float) -> tuple[int, int]:
        """Drop points, and resolved alerts, older than ``before``; returns how many of each."""

        def go(db: sqlite3.Connection) -> tuple[int, int]:
            with db:
                # Per series, through the primary key: no index on minute needed.
                points = db.execute(
                    "DELETE FROM points WHERE series IN (SELECT id FROM series) AND minute < ?",
                    (int(before),),
                ).rowcount
                db.execute(
                    "DELETE FROM series WHERE NOT EXISTS "
                    "(SELECT 1 FROM points WHERE points.series = series.id)"
                )
                alerts = db.execute(
                    "DELETE FROM alerts WHERE state = 'resolved' AND resolved_at < ?", (before,)
                ).rowcount
            self._ids.clear()
            return points, alerts

        return self._run("pruning", go)

    # -- alerts ----------------------------------------------------------------
    def fire(self, app: str, kind: AlertKind, summary: str, at: float) -> tuple[Alert, bool]:
        """The firing alert of (app, kind), created if none fires yet; the bool says whether it is new."""

        def go(db: sqlite3.Connection) -> tuple[Alert, bool]:
            with db:
                cur = db.execute(
                    "INSERT INTO alerts (app, kind, state, summary, started_at) "
                    "VALUES (?, ?, 'firing', ?, ?) "
                    "ON CONFLICT (app, kind) WHERE state = 'firing' DO NOTHING",
                    (app, kind.value, summary, at),
                )
                created = cur.rowcount == 1
                if not created:
                    db.execute(
                        "UPDATE alerts SET summary = ? WHERE app = ? AND kind = ? AND state = 'firing'",
                        (summary, app, kind.value),
                    )
                row = db.execute(
                    "SELECT * FROM alerts WHERE app = ? AND kind = ? AND state = 'firing'",
                    (app, kind.value),
                ).fetchone()
            return _alert(row), created

        return self._run("recording an alert", go)

    def resolve(self, alert_id: int, at: float, resolution: str) -> Alert | None:
        def go(db: sqlite3.Connection) -> Alert | None:
            with db:
                cur = db.execute(
                    "UPDATE alerts SET state = 'resolved', resolved_at = ?, resolution = ? "
                    "WHERE id = ? AND state = 'firing'",
                    (at, resolution, alert_id),
                )
                if cur.rowcount != 1:
                    return None
                row = db.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            return _alert(row)

        return self._run("resolving an alert", go)

    def firing(self, app: str | None = None) -> list[Alert]:
        def go(db: sqlite3.Connection) -> list[Any]:
            if app is None:
                return db.execute("SELECT * FROM alerts WHERE state='firing' ORDER BY started_at").fetchall()
            return db.execute(
                "SELECT * FROM alerts WHERE state = 'firing' AND app = ? ORDER BY started_at", (app,)
            ).fetchall()

        return [_alert(r) for r in self._run("reading alerts", go)]

    def alerts(self, *, since: float, app: str | None = None, limit: int = 200) -> list[Alert]:
        """Firing alerts, then those resolved since ``since``, newest first."""

        def go(db: sqlite3.Connection) -> list[Any]:
            if app is None:
                return db.execute(
                    "SELECT * FROM alerts WHERE (state = 'firing' OR resolved_at >= ?) "
                    "ORDER BY state = 'firing' DESC, started_at DESC LIMIT ?",
                    (since, limit),
                ).fetchall()
            return db.execute(
                "SELECT * FROM alerts WHERE (state = 'firing' OR resolved_at >= ?) AND app = ? "
                "ORDER BY state = 'firing' DESC, started_at DESC LIMIT ?",
                (since, app, limit),
            ).fetchall()

        return [_alert(r) for r in self._run("reading alerts", go)]

    def unnotified(self, since: float) -> list[tuple[Alert, AlertState]]:
        """Notifications still to send, oldest first: (alert, which of its two notifications)."""
        sql = (
            "SELECT * FROM alerts WHERE "
            "(notified_firing_at IS NULL AND started_at >= ?) OR "
            "(state = 'resolved' AND notified_resolved_at IS NULL AND resolved_at >= ?) ORDER BY id"
        )
        rows = self._run("reading alerts", lambda db: db.execute(sql, (since, since)).fetchall())
        out: list[tuple[Alert, AlertState]] = []
        for row in rows:
            alert = _alert(row)
            if alert.notified_firing_at is None and alert.started_at.timestamp() >= since:
                out.append((alert, AlertState.FIRING))
            if alert.state == AlertState.RESOLVED and alert.notified_resolved_at is None:
                out.append((alert, AlertState.RESOLVED))
        return out

    def mark_notified(self, alert_id: int, which: AlertState, at: float) -> None:
        column = "notified_firing_at" if which == AlertState.FIRING else "notified_resolved_at"

        def go(db: sqlite3.Connection) -> None:
            with db:
                db.execute(f"UPDATE alerts SET {column} = ? WHERE id = ?", (at, alert_id))  # noqa: S608

        self._run("recording a notification", go)
