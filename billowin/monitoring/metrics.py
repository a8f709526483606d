"""Billowin's own metrics, served at ``GET /metrics`` in Prometheus' text format (prometheus-client).

Each API app has its own ``CollectorRegistry`` (never the process-wide default),
so ``create_app`` can be called any number of times. The parts that do the work
get small callbacks from here (``build_finished``, ``job_finished``,
``webhook``) instead of importing anything from this module.

Alongside Billowin's own figures, the collector's latest per-app view is
exposed as gauges and counters (``billowin_app_*``, ``billowin_instance_*``),
so a Prometheus that scrapes Billowin sees what the built-in store sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

if TYPE_CHECKING:
    from billowin.build.builder import BuildRecord
    from billowin.pipeline.jobs import Job

QUANTILES = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}
BUILD_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800)


def webhook_outcome(response: Response) -> str:
    """What a webhook reply meant: queued, ignored, duplicate, rejected, malformed, too_large or error."""
    status = response.status_code
    if status == 202:
        try:
            body = json.loads(bytes(response.body))
        except ValueError:
            body = {}
        return "queued" if isinstance(body, dict) and body.get("jobs") else "ignored"
    if status == 200:
        try:
            message = str(json.loads(bytes(response.body)).get("message", ""))
        except (ValueError, AttributeError):
            message = ""
        return "duplicate" if message.startswith("duplicate") else "ignored"
    return {400: "malformed", 401: "rejected", 413: "too_large"}.get(status, "error")


@dataclass
class InstanceView:
    process: str
    instance: str
    cpu_percent: float
    memory_bytes: float


@dataclass
class AppView:
    """The latest figures for one app, as the collector last saw them."""

    requests_total: float = 0.0
    responses_total: dict[str, float] = field(default_factory=dict)  # "4xx" / "5xx" -> count
    rps: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # "p50" -> ms
    instances: dict[str, int] = field(default_factory=dict)  # process -> running
    healthy_instances: int | None = None
    events_total: dict[tuple[str, str], float] = field(default_factory=dict)  # (process, kind) -> count
    usage: list[InstanceView] = field(default_factory=list)


class _AppCollector(Collector):
    """Yields the collector's latest per-app view at scrape time (gone instances simply disappear)."""

    def __init__(self, source: Callable[[], dict[str, AppView]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        views = self._source()
        requests = CounterMetricFamily(
            "billowin_app_http_requests", "Requests routed to the app (since the API started)", labels=["app"]
        )
        responses = CounterMetricFamily(
            "billowin_app_http_responses",
            "Answers by status class (since the API started)",
            labels=["app", "code"],
        )
        rps = GaugeMetricFamily(
            "billowin_app_requests_per_second", "Request rate, last interval", labels=["app"]
        )
        latency = GaugeMetricFamily(
            "billowin_app_latency_seconds",
            "Request latency percentiles through the router, current minute",
            labels=["app", "quantile"],
        )
        running = GaugeMetricFamily("billowin_app_instances", "Instances running", labels=["app", "process"])
        healthy = GaugeMetricFamily(
            "billowin_app_healthy_instances", "Web instances passing their health check", labels=["app"]
        )
        events = CounterMetricFamily(
            "billowin_app_instance_events",
            "Restarts, crashes, OOM kills and failed allocations (since the API started)",
            labels=["app", "process", "event"],
        )
        cpu = GaugeMetricFamily(
            "billowin_instance_cpu_percent", "CPU used, % of one core", labels=["app", "process", "instance"]
        )
        memory = GaugeMetricFamily(
            "billowin_instance_memory_bytes", "Memory used", labels=["app", "process", "instance"]
        )
        for app, view in sorted(views.items()):
            requests.add_metric([app], view.requests_total)
            for code, count in sorted(view.responses_total.items()):
                responses.add_metric([app, code], count)
            if view.rps is not None:
                rps.add_metric([app], view.rps)
            for name, millis in sorted(view.latency_ms.items()):
                latency.add_metric([app, QUANTILES.get(name, name)], millis / 1000)
            for process, count in sorted(view.instances.items()):
                running.add_metric([app, process], count)
            if view.healthy_instances is not None:
                healthy.add_metric([app], view.healthy_instances)
            for (process, kind), count in sorted(view.events_total.items()):
                events.add_metric([app, process, kind], count)
            for inst in view.usage:
                cpu.add_metric([app, inst.process, inst.instance], inst.cpu_percent)
                memory.add_metric([app, inst.process, inst.instance], inst.memory_bytes)
        yield from (requests, responses, rps, latency, running, healthy, events, cpu, memory)


class BillowinMetrics:
    """One registry per API app, and the hooks that feed it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deploys = Counter(
            "billowin_deploys", "Pipeline jobs finished, by outcome", ["outcome", "kind"], registry=r
        )
        self.build_seconds = Histogram(
            "billowin_build_duration_seconds",
            "Build durations",
            ["outcome"],
            buckets=BUILD_BUCKETS,
            registry=r,
        )
        self.pipeline_jobs = Gauge(
            "billowin_pipeline_jobs", "Pipeline jobs by state (queued = queue depth)", ["state"], registry=r
        )
        self.webhooks = Counter(
            "billowin_webhooks",
            "Webhook deliveries, by source and outcome",
            ["source", "outcome"],
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "billowin_monitoring_cycle_seconds",
            "How long one monitoring collection takes",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.source_errors = Counter(
            "billowin_monitoring_source_errors", "Failed reads of a monitoring source", ["source"], registry=r
        )
        self.alerts_firing = Gauge("billowin_alerts_firing", "Alerts firing, by kind", ["kind"], registry=r)
        self.notifications = Counter(
            "billowin_alert_notifications", "Alert webhook deliveries, by outcome", ["outcome"], registry=r
        )
        self._apps: dict[str, AppView] = {}
        r.register(_AppCollector(lambda: self._apps))

    # -- hooks the rest of Billowin calls ----------------------------------------
    def build_finished(self, record: BuildRecord) -> None:
        if record.seconds is not None:
            self.build_seconds.labels(outcome=record.status).observe(record.seconds)

    def job_finished(self, job: Job) -> None:
        self.deploys.labels(outcome=job.state.value, kind=job.kind.value).inc()

    def webhook(self, source: str, response: Response) -> Response:
        self.webhooks.labels(source=source, outcome=webhook_outcome(response)).inc()
        return response

    # -- from the collector -----------------------------------------------------------
    def publish(self, apps: dict[str, AppView]) -> None:
        self._apps = apps  # replaced whole: a scrape sees one collection, never half of two

    def render(self) -> bytes:
        return generate_latest(self.registry)
