"""The collector: a background thread in the API process that samples every app every interval.

One collection (every ``BILLOWIN_METRICS_INTERVAL`` seconds):

1. HAProxy's exporter -> requests, 4xx, 5xx per app (deltas, rates); the
   access ring (watched over the runtime socket) -> every request's latency (``router.py``).
2. Nomad -> the app jobs, instances per process type, restarts, crashes, OOM
   kills and failed allocations (from task events), CPU and memory of each
   running instance (allocation stats).
3. Consul -> healthy web instances per app; KV -> the newest finished deploy of
   each app, the pipeline's queue, and the names whose certificate keeps failing.
4. The samples go into the minute aggregator; finished minutes go to the SQLite
   store; the alert rules run; the latest view is published for ``/metrics``.

A source that fails is counted (``billowin_monitoring_source_errors_total``),
logged once until it recovers, and skipped: the rest of the collection goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from billowin.certs.manager import FailingName
from billowin.errors import BillowinError
from billowin.monitoring.aggregate import MinuteAggregator, Point, SeriesKey, minute_of
from billowin.monitoring.alerts import AlertBook, AppState, Notifier, Rules, Thresholds
from billowin.monitoring.metrics import AppView, BillowinMetrics, InstanceView
from billowin.monitoring.router import AccessLog, CounterDeltas, RouterStats, TrafficDelta
from billowin.monitoring.sources import NS, ConsulSource, KVView, NomadSource, classify_events
from billowin.monitoring.store import AlertKind, MetricStore
from billowin.settings import Settings

log = logging.getLogger("billowin.monitoring")
WEB = "web"
EVENT_METRICS = {
    "restart": "restarts",
    "crash": "crashes",
    "oom": "oom_kills",
    "failed_alloc": "failed_allocs",
}
PRUNE_EVERY = 3600.0
HOUSEKEEPING_EVERY = 60.0  # stopped containers are kept for an hour: once a minute is plenty


@dataclass
class NomadView:
    apps: set[str]
    processes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    running: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    web_wanted: Counter[str] = field(default_factory=Counter)
    crash_times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    new_events: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (app, process, kind)


@dataclass
class EventMemory:
    """Which task events and failed allocations were already counted."""

    since_ns: int  # events before this (the collector's start) are history, not counted
    newest: dict[tuple[str, str], int] = field(default_factory=dict)  # (alloc, task) -> newest counted
    failed: set[str] = field(default_factory=set)


def digest_allocations(allocs: Iterable[Mapping[str, Any]], apps: set[str], memory: EventMemory) -> NomadView:
    """Instances, wanted web instances, crash history and newly seen events, per app and process."""
    view = NomadView(apps=apps)
    listed: set[str] = set()
    for alloc in allocs:
        app, alloc_id = alloc.get("JobID", ""), alloc.get("ID", "")
        if app not in apps:
            continue
        listed.add(alloc_id)
        process = alloc.get("TaskGroup", "")
        view.processes[app].add(process)
        status = alloc.get("ClientStatus")
        if status == "running":
            view.running[(app, process)].append(alloc_id)
        if process == WEB and alloc.get("DesiredStatus") == "run":
            view.web_wanted[app] += 1
        for task, state in (alloc.get("TaskStates") or {}).items():
            mark = memory.newest.get((alloc_id, task), memory.since_ns)
            newest = mark
            for event in classify_events(state.get("Events") or []):
                if event.kind == "crash":
                    view.crash_times[app].append(event.at)
                if event.ns > mark:
                    view.new_events[(app, process, event.kind)] += 1
                    newest = max(newest, event.ns)
            memory.newest[(alloc_id, task)] = newest
        if status == "failed" and alloc_id not in memory.failed:
            memory.failed.add(alloc_id)
            if int(alloc.get("ModifyTime") or 0) > memory.since_ns:
                view.new_events[(app, process, "failed_alloc")] += 1
    # Forget allocations Nomad no longer lists (garbage-collected).
    memory.newest = {k: v for k, v in memory.newest.items() if k[0] in listed}
    memory.failed &= listed
    return view


class Collector:
    def __init__(
        self,
        settings: Settings,
        store: MetricStore,
        metrics: BillowinMetrics,
        *,
        nomad: NomadSource,
        consul: ConsulSource,
        router: RouterStats,
        access_log: AccessLog | None = None,
        notifier: Notifier | None = None,
        registered_apps: Callable[[], list[str]] = list,
        failing_certificates: Callable[[], Mapping[str, list[FailingName]]] | None = None,
        housekeeping: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = settings.metrics_interval
        self.retention = settings.metrics_retention_days * 86400
        self.crash_window = settings.alert_crash_window
        self.store = store
        self.metrics = metrics
        self.nomad = nomad
        self.consul = consul
        self.router = router
        self.access_log = access_log
        self.notifier = notifier
        self.registered_apps = registered_apps
        self.failing_certificates = failing_certificates
        self.housekeeping = housekeeping  # run once a minute with the time (stopped containers)
        self.clock = clock
        self.book = AlertBook(
            store,
            Rules(
                Thresholds(
                    crash_restarts=settings.alert_crash_restarts,
                    crash_window=settings.alert_crash_window,
                    unhealthy_after=settings.alert_unhealthy_after,
                    ratio_5xx=settings.alert_5xx_ratio,
                    min_requests_5xx=settings.alert_5xx_min_requests,
                    cert_failing_after=settings.alert_cert_failing_after,
                )
            ),
        )
        self.aggregator = MinuteAggregator()
        self._agg_lock = threading.Lock()
        self._deltas = CounterDeltas()
        self._events = EventMemory(since_ns=int(clock() * NS))
        self._last_scrape: float | None = None
        self._recent: dict[str, deque[tuple[float, float, float]]] = defaultdict(deque)
        self._totals: dict[str, AppView] = defaultdict(AppView)
        self._failing: set[str] = set()
        self._last_prune = 0.0
        self._last_housekeeping = 0.0
        self._last_minute_latency: dict[str, tuple[int, dict[str, float]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="billowin-monitoring-stats")
        self.cycles = 0

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.access_log is not None and not self.access_log.start():
            self.access_log = None
        if self.notifier is not None:
            self.notifier.start()
        self._thread = threading.Thread(target=self._loop, name="billowin-monitoring", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 30)
        if self.access_log is not None:
            self.access_log.stop()
        if self.notifier is not None:
            self.notifier.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.router.close()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.collect_once()
            except Exception:  # the thread must outlive any one bad collection
                log.exception("monitoring: a collection failed")
            self.metrics.cycle_seconds.observe(time.monotonic() - started)
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay < 0:  # a collection took longer than the interval: start again from now
                next_at, delay = time.monotonic(), 0.0
            self._stop.wait(delay)

    def _read(self, source: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or ``None`` when the source fails (logged once until it works again)."""
        try:
            result = fn()
        except BillowinError as exc:
            self.metrics.source_errors.labels(source=source).inc()
            if source not in self._failing:
                log.warning("monitoring: cannot read %s: %s", source, exc.message)
                self._failing.add(source)
            return None
        if source in self._failing:
            log.info("monitoring: %s readable again", source)
            self._failing.discard(source)
        return result

    # -- one collection ---------------------------------------------------------------
    def collect_once(self) -> None:
        now = self.clock()
        self.cycles += 1
        samples: list[tuple[SeriesKey, float]] = []
        dists: list[tuple[SeriesKey, list[float]]] = []

        traffic: dict[str, TrafficDelta] | None = None
        scrape = self._read("haproxy", self.router.scrape)
        if scrape is not None:
            traffic = self._deltas.update(scrape)
            elapsed = now - self._last_scrape if self._last_scrape is not None else None
            self._last_scrape = now
            for app, delta in traffic.items():
                samples += self._traffic_samples(app, delta, elapsed, now)
        latencies = self.access_log.drain() if self.access_log is not None else {}
        for app, values in latencies.items():
            dists.append((SeriesKey(app, "latency_ms", WEB), values))

        apps = self._read("nomad", self.nomad.app_jobs)
        allocs = self._read("nomad", self.nomad.allocations) if apps is not None else None
        nomad = (
            digest_allocations(allocs, set(apps), self._events)
            if apps is not None and allocs is not None
            else None
        )
        usage = self._usage(nomad) if nomad is not None else {}
        if nomad is not None:
            samples += self._nomad_samples(nomad, usage)

        health = self._read("consul", self.consul.instance_health)
        names = set(nomad.apps) if nomad is not None else set(traffic or {})
        registered = self._read("apps", self.registered_apps)
        if registered is not None:
            names |= set(registered)
        if health is not None:
            for app in names:
                has_web = app in health or (nomad is not None and WEB in nomad.processes.get(app, set()))
                if has_web:  # a worker-only app has no health checks to report
                    samples.append(
                        (SeriesKey(app, "healthy_instances", WEB), float(health.get(app, (0, 0))[0]))
                    )
        kv: KVView | None = self._read("consul", lambda: self.consul.kv_view(names))
        if kv is not None:
            for state, count in kv.pipeline.items():
                self.metrics.pipeline_jobs.labels(state=state).set(count)

        with self._agg_lock:
            for key, value in samples:
                self.aggregator.add(key, now, value)
            for key, values in dists:
                self.aggregator.add_many(key, now, values)
            finished = self.aggregator.close(now)
            current_latency = {
                app: self.aggregator.current_percentiles(SeriesKey(app, "latency_ms", WEB), now)
                for app in names
            }
        self._write(finished)
        current_latency = self._latency_view(current_latency, finished, now)

        certs = self._read("certificates", self.failing_certificates) if self.failing_certificates else None
        states = [self._state(app, now, traffic, nomad, health, kv) for app in sorted(names)]
        if certs is not None:
            for app_state in states:
                app_state.failing_certificates = list(certs.get(app_state.app, []))
        changes = self.book.update(states, now, apps_complete=nomad is not None and registered is not None)
        if changes and self.notifier is not None:
            self.notifier.wake()
        for change in changes:
            log.info("alert %s: %s %s", change.status.value, change.alert.app, change.alert.kind.value)
        firing = Counter(a.kind.value for a in self.store.firing())
        for kind in AlertKind:
            self.metrics.alerts_firing.labels(kind=kind.value).set(firing.get(kind.value, 0))

        self._publish(names, nomad, health, usage, current_latency)
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            self.store.prune(now - self.retention)
        tidy = self.housekeeping
        if tidy is not None and now - self._last_housekeeping >= HOUSEKEEPING_EVERY:
            self._last_housekeeping = now
            self._read("docker", lambda: tidy(now))

    def _latency_view(
        self, current: dict[str, dict[str, float]], finished: list[Point], now: float
    ) -> dict[str, dict[str, float]]:
        """Each app's latency percentiles for /metrics: the current minute, else the minute before it."""
        for point in finished:
            if point.key.metric.startswith("latency_p") and point.key.instance == "":
                name = point.key.metric.removeprefix("latency_").removesuffix("_ms")
                self._last_minute_latency.setdefault(point.key.app, (point.minute, {}))
                minute, values = self._last_minute_latency[point.key.app]
                if point.minute > minute:
                    values = {}
                    self._last_minute_latency[point.key.app] = (point.minute, values)
                values[name] = point.value
        previous = minute_of(now) - 60
        out: dict[str, dict[str, float]] = {}
        for app, values in current.items():
            last = self._last_minute_latency.get(app)
            out[app] = values or (last[1] if last and last[0] == previous else {})
        return out

    def _write(self, points: list[Point]) -> None:
        try:
            self.store.write(points)
        except BillowinError as exc:
            self.metrics.source_errors.labels(source="store").inc()
            log.warning("monitoring: %s", exc.message)

    def _traffic_samples(
        self, app: str, delta: TrafficDelta, elapsed: float | None, now: float
    ) -> list[tuple[SeriesKey, float]]:
        out = [
            (SeriesKey(app, "requests", WEB), delta.requests),
            (SeriesKey(app, "responses_4xx", WEB), delta.responses_4xx),
            (SeriesKey(app, "responses_5xx", WEB), delta.responses_5xx),
        ]
        if elapsed:
            out += [
                (SeriesKey(app, "rps", WEB), delta.requests / elapsed),
                (SeriesKey(app, "rate_4xx", WEB), delta.responses_4xx / elapsed),
                (SeriesKey(app, "rate_5xx", WEB), delta.responses_5xx / elapsed),
            ]
        if delta.requests and delta.average_total_s is not None:
            out.append((SeriesKey(app, "latency_avg_ms", WEB), delta.average_total_s * 1000))
        recent = self._recent[app]
        recent.append((now, delta.requests, delta.responses_5xx))
        while recent and recent[0][0] < now - 60:
            recent.popleft()
        totals = self._totals[app]
        totals.requests_total += delta.requests
        for code, count in (("4xx", delta.responses_4xx), ("5xx", delta.responses_5xx)):
            totals.responses_total[code] = totals.responses_total.get(code, 0.0) + count
        totals.rps = delta.requests / elapsed if elapsed else None
        return out

    def _usage(self, nomad: NomadView) -> dict[tuple[str, str], list[InstanceView]]:
        """CPU and memory of every running instance (a few stats requests to Nomad at a time)."""
        running = [
            (app, process, alloc_id) for (app, process), ids in nomad.running.items() for alloc_id in ids
        ]
        results = self._pool.map(
            lambda r: self._read("nomad", partial(self.nomad.allocation_usage, r[2])), running
        )
        out: dict[tuple[str, str], list[InstanceView]] = defaultdict(list)
        for (app, process, alloc_id), used in zip(running, results, strict=True):
            if used is not None:
                out[(app, process)].append(InstanceView(process, alloc_id[:8], used[0], used[1]))
        return out

    def _nomad_samples(
        self, nomad: NomadView, usage: dict[tuple[str, str], list[InstanceView]]
    ) -> list[tuple[SeriesKey, float]]:
        out: list[tuple[SeriesKey, float]] = []
        for app in nomad.apps:
            for process in nomad.processes.get(app, set()):
                running = len(nomad.running.get((app, process), []))
                out.append((SeriesKey(app, "instances", process), float(running)))
                for kind, metric in EVENT_METRICS.items():
                    count = nomad.new_events.get((app, process, kind), 0)
                    out.append((SeriesKey(app, metric, process), float(count)))
                    if count:
                        events = self._totals[app].events_total
                        events[(process, metric)] = events.get((process, metric), 0.0) + count
                instances = usage.get((app, process), [])
                if instances:  # the process type as a whole
                    cpu = sum(i.cpu_percent for i in instances)
                    memory = sum(i.memory_bytes for i in instances)
                    out.append((SeriesKey(app, "cpu_percent", process), cpu))
                    out.append((SeriesKey(app, "memory_bytes", process), memory))
                for inst in instances:
                    out.append((SeriesKey(app, "cpu_percent", process, inst.instance), inst.cpu_percent))
                    out.append((SeriesKey(app, "memory_bytes", process, inst.instance), inst.memory_bytes))
        return out

    def _state(
        self,
        app: str,
        now: float,
        traffic: dict[str, TrafficDelta] | None,
        nomad: NomadView | None,
        health: dict[str, tuple[int, int]] | None,
        kv: KVView | None,
    ) -> AppState:
        state = AppState(app=app)
        if nomad is not None:
            state.crash_times = nomad.crash_times.get(app, [])
            state.web_wanted = nomad.web_wanted.get(app, 0)
        if health is not None:
            state.healthy = health.get(app, (0, 0))[0]
        if kv is not None:
            state.deploy_known = True
            state.deploy = kv.outcomes.get(app)
        if traffic is not None:
            recent = self._recent.get(app, deque())
            state.requests_last_minute = sum(r for _, r, _ in recent)
            state.responses_5xx_last_minute = sum(e for _, _, e in recent)
        return state

    def _publish(
        self,
        names: set[str],
        nomad: NomadView | None,
        health: dict[str, tuple[int, int]] | None,
        usage: dict[tuple[str, str], list[InstanceView]],
        latency: dict[str, dict[str, float]],
    ) -> None:
        views: dict[str, AppView] = {}
        for app in sorted(names | set(self._totals)):
            if app not in names:
                if nomad is not None:
                    del self._totals[app]  # the app is gone: its series end
                continue
            totals = self._totals[app]
            view = AppView(
                requests_total=totals.requests_total,
                responses_total=dict(totals.responses_total),
                rps=totals.rps,
                latency_ms=latency.get(app, {}),
                events_total=dict(totals.events_total),
            )
            if nomad is not None:
                view.instances = {
                    p: len(nomad.running.get((app, p), [])) for p in sorted(nomad.processes.get(app, set()))
                }
            if health is not None and (app in health or WEB in view.instances):
                view.healthy_instances = health.get(app, (0, 0))[0]
            view.usage = [i for (a, _p), insts in sorted(usage.items()) if a == app for i in insts]
            views[app] = view
        self.metrics.publish(views)

    # -- what the API asks -----------------------------------------------------------
    def live_points(self, app: str) -> list[Point]:
        """The unfinished minute of ``app`` so far."""
        with self._agg_lock:
            return self.aggregator.partial(app, self.clock())

    def notify_now(self) -> None:
        if self.notifier is not None:
            self.notifier.wake()
