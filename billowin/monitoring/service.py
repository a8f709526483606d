"""``Monitoring``: everything monitoring, built once per API app from its settings.

The API's lifespan starts and stops it; routes ask it for series and alerts;
the pipeline, the builder and the webhooks report to ``monitoring.metrics``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from billowin.certs.manager import FailingName
from billowin.errors import InvalidInput
from billowin.monitoring.aggregate import stored_metrics
from billowin.monitoring.alerts import Notifier
from billowin.monitoring.collector import Collector
from billowin.monitoring.metrics import BillowinMetrics
from billowin.monitoring.router import AccessLog, RouterStats
from billowin.monitoring.sources import ConsulSource, NomadSource
from billowin.monitoring.store import Alert, MetricStore, Series
from billowin.ports import KeyValueStore, Scheduler, ServiceRegistry
from billowin.settings import Settings

DB_NAME = "monitoring.sqlite3"
ALL_INSTANCES = "*"
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """Where a window starts: a duration back from now (``90s``, ``15m``, ``1h``, ``7d``), ISO 8601, unix."""
    text = text.strip()
    match = DURATION.match(text)
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(
            f"since={text!r} is neither a duration, a date nor unix seconds",
            hint="Use e.g. since=15m, since=24h, or since=2026-01-31T12:00:00Z.",
        ) from exc
    return when.timestamp()


def check_metrics(names: Iterable[str]) -> list[str]:
    known = stored_metrics()
    wanted = [n.strip() for name in names for n in name.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InvalidInput(f"unknown metric(s): {', '.join(unknown)}", hint=f"Known: {', '.join(known)}.")
    return wanted


class Monitoring:
    def __init__(
        self,
        settings: Settings,
        *,
        nomad: Scheduler,
        kv: KeyValueStore,
        registry: ServiceRegistry,
        registered_apps: Callable[[], list[str]] = list,
        failing_certificates: Callable[[], Mapping[str, list[FailingName]]] | None = None,
        housekeeping: Callable[[float], object] | None = None,
        metrics: BillowinMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or BillowinMetrics()
        self.store = MetricStore(settings.state_dir / DB_NAME)
        self.collector: Collector | None = None
        if not settings.monitoring:
            return
        notifier = None
        if settings.alert_webhook_url is not None:
            notifier = Notifier(
                self.store,
                settings.alert_webhook_url,
                settings.alert_webhook_format,
                attempts=settings.alert_webhook_attempts,
                on_result=self._count_notification,
            )
        self.collector = Collector(
            settings,
            self.store,
            self.metrics,
            nomad=NomadSource(nomad),
            consul=ConsulSource(kv, registry),
            router=RouterStats(f"http://127.0.0.1:{settings.router_stats_port}/metrics"),
            access_log=AccessLog(settings.haproxy_socket) if settings.haproxy_socket else None,
            notifier=notifier,
            registered_apps=registered_apps,
            failing_certificates=failing_certificates,
            housekeeping=housekeeping,
        )

    def _count_notification(self, ok: bool) -> None:
        self.metrics.notifications.labels(outcome="sent" if ok else "failed").inc()

    def start(self) -> None:
        if self.collector is not None:
            self.collector.start()

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()
        self.store.close()

    # -- queries -------------------------------------------------------------------------
    def series(
        self,
        app: str,
        *,
        since: float,
        metrics: Iterable[str] = (),
        process: str | None = None,
        instance: str = "",
    ) -> list[Series]:
        """Stored one-minute points, plus the unfinished current minute so far.

        ``instance``: ``""`` (the default) gives one series per metric and process type
        (CPU and memory summed over its instances), ``"*"`` adds every instance's own
        series, anything else is one instance (the first 8 characters of its allocation id).
        """
        wanted = check_metrics(metrics)
        only = None if instance == ALL_INSTANCES else instance
        found = self.store.series(app, since=since, metrics=wanted, process=process, instance=only)
        if self.collector is None:
            return found
        by_key = {(s.metric, s.process, s.instance): s for s in found}
        for point in self.collector.live_points(app):
            key = point.key
            if (wanted and key.metric not in wanted) or (process is not None and key.process != process):
                continue
            if (only is not None and key.instance != only) or point.minute < since // 60 * 60:
                continue
            series = by_key.get((key.metric, key.process, key.instance))
            if series is None:
                series = by_key[(key.metric, key.process, key.instance)] = Series(
                    metric=key.metric, process=key.process, instance=key.instance
                )
            if series.points and series.points[-1][0] == point.minute:
                series.points[-1] = (point.minute, point.value)
            else:
                series.points.append((point.minute, point.value))
        return sorted(by_key.values(), key=lambda s: (s.metric, s.process, s.instance))

    def alerts(self, *, since: float, app: str | None = None) -> list[Alert]:
        return self.store.alerts(since=since, app=app)

    def firing(self, app: str | None = None) -> list[Alert]:
        return self.store.firing(app)

    @staticmethod
    def now() -> float:
        return time.time()
