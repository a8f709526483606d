"""Monitoring: the SQLite store, the query helpers, Billowin's own /metrics."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.responses import JSONResponse
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from billowin.api.app import create_app
from billowin.errors import InvalidInput
from billowin.monitoring.aggregate import Point, SeriesKey
from billowin.monitoring.metrics import AppView, BillowinMetrics, webhook_outcome
from billowin.monitoring.service import check_metrics, parse_since
from billowin.monitoring.store import MetricStore
from billowin.settings import Settings
from billowin.system import System

T0 = 1_800_000_000


def test_points_survive_reopening_and_are_read_by_window(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    store = MetricStore(path)
    rps = SeriesKey("shop", "rps", "web")
    store.write(Point(rps, T0 + 60 * i, float(i)) for i in range(10))
    store.write([Point(SeriesKey("shop", "cpu_percent", "web", "a1b2c3d4"), T0, 3.5)])
    store.write([Point(SeriesKey("blog", "rps", "web"), T0, 1.0)])
    store.write([Point(rps, T0, 42.0)])  # the same minute again replaces it
    store.close()

    again = MetricStore(path)
    (series,) = again.series("shop", since=T0 + 500, metrics=["rps"])
    assert series.metric == "rps" and series.process == "web"
    assert series.points == [(T0 + 60 * i, float(i)) for i in range(8, 10)]
    everything = again.series("shop", since=T0)
    assert [(s.metric, s.instance) for s in everything] == [("cpu_percent", "a1b2c3d4"), ("rps", "")]
    assert everything[1].points[0] == (T0, 42.0)
    assert again.series("shop", since=T0, until=T0 + 60, metrics=["rps"])[0].points == [
        (T0, 42.0),
        (T0 + 60, 1.0),
    ]


def test_prune_drops_old_points_only(tmp_path: Path) -> None:
    store = MetricStore(tmp_path / "m.sqlite3")
    key = SeriesKey("shop", "requests", "web")
    store.write(Point(key, T0 + 60 * i, 1.0) for i in range(5))
    assert store.prune(before=T0 + 120) == (2, 0)
    assert [m for m, _ in store.series("shop", since=0)[0].points] == [T0 + 120, T0 + 180, T0 + 240]


def test_since_accepts_durations_dates_and_unix_time() -> None:
    now = 1_800_000_000.0
    assert parse_since("15m", now) == now - 900
    assert parse_since("24h", now) == now - 86400
    assert parse_since("90s", now) == now - 90
    assert parse_since("1700000000", now) == 1_700_000_000
    assert parse_since("2027-01-15T08:00:00Z", now) == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    with pytest.raises(InvalidInput):
        parse_since("yesterday", now)


def test_metric_names_are_checked() -> None:
    assert check_metrics(["rps,latency_p99_ms", "requests"]) == ["rps", "latency_p99_ms", "requests"]
    with pytest.raises(InvalidInput, match="latency_ms"):
        check_metrics(["latency_ms"])  # stored as its percentiles


def test_webhook_outcomes() -> None:
    def reply(status: int, **content: object) -> JSONResponse:
        return JSONResponse(status_code=status, content=content)

    assert webhook_outcome(reply(202, message="queued", jobs=[{"app": "shop"}])) == "queued"
    assert webhook_outcome(reply(202, message="nothing to deploy for x")) == "ignored"
    assert webhook_outcome(reply(200, message="duplicate delivery: already accepted")) == "duplicate"
    assert webhook_outcome(reply(200, message="pong")) == "ignored"
    assert webhook_outcome(reply(401, message="invalid")) == "rejected"
    assert webhook_outcome(reply(400, message="bad")) == "malformed"
    assert webhook_outcome(reply(413, message="big")) == "too_large"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_own_metrics_and_app_views_render_as_prometheus_text() -> None:
    metrics = BillowinMetrics()
    metrics.webhook("github", JSONResponse(status_code=401, content={"message": "no"}))
    metrics.pipeline_jobs.labels(state="queued").set(3)
    metrics.publish(
        {
            "shop": AppView(
                requests_total=120, responses_total={"5xx": 2}, latency_ms={"p99": 250.0}, healthy_instances=2
            )
        }
    )
    got = samples(metrics.render().decode())
    assert got[("billowin_webhooks_total", (("outcome", "rejected"), ("source", "github")))] == 1
    assert got[("billowin_pipeline_jobs", (("state", "queued"),))] == 3
    assert got[("billowin_app_http_requests_total", (("app", "shop"),))] == 120
    assert got[("billowin_app_latency_seconds", (("app", "shop"), ("quantile", "0.99")))] == 0.25
    assert got[("billowin_app_healthy_instances", (("app", "shop"),))] == 2


def test_each_api_app_has_its_own_registry_and_metrics_needs_a_token(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, pipeline=False, metrics_token=SecretStr("scrape-secret"))
    first, second = create_app(settings), create_app(settings)  # no "Duplicated timeseries" error
    assert (
        first.state.system.monitoring.metrics.registry is not second.state.system.monitoring.metrics.registry
    )

    async def get(path: str, token: str | None = None) -> httpx.Response:
        # The app is not started (no lifespan): no collector thread, no network.
        transport = httpx.ASGITransport(app=first)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path, headers=headers)

    assert asyncio.run(get("/metrics")).status_code == 401
    assert asyncio.run(get("/metrics", "wrong")).status_code == 401
    resp = asyncio.run(get("/metrics", "scrape-secret"))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert "# TYPE billowin_deploys_total counter" in resp.text
    # The scrape token opens /metrics only.
    assert asyncio.run(get("/alerts", "scrape-secret")).status_code == 401
    assert asyncio.run(get("/apps/shop/metrics")).json()["error"] == "Unauthorized"


def test_series_default_to_whole_process_types_and_include_the_live_minute(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, pipeline=False)
    system = System(settings)
    monitoring = system.monitoring  # not started: nothing is contacted
    assert monitoring.collector is not None
    now = time.time()
    monitoring.collector.clock = lambda: now  # the same minute throughout
    minute = int(now // 60 * 60)
    web, one = SeriesKey("shop", "memory_bytes", "web"), SeriesKey("shop", "memory_bytes", "web", "a1b2c3d4")
    monitoring.store.write([Point(web, minute - 60, 100.0), Point(one, minute - 60, 100.0)])
    monitoring.collector.aggregator.add(web, now, 300.0)  # the unfinished minute
    monitoring.collector.aggregator.add(one, now, 300.0)

    (total,) = monitoring.series("shop", since=now - 600, metrics=["memory_bytes"])
    assert (total.instance, total.points) == ("", [(minute - 60, 100.0), (minute, 300.0)])
    everything = monitoring.series("shop", since=now - 600, metrics=["memory_bytes"], instance="*")
    assert [s.instance for s in everything] == ["", "a1b2c3d4"]
    (only,) = monitoring.series("shop", since=now - 600, instance="a1b2c3d4")
    assert only.points == [(minute - 60, 100.0), (minute, 300.0)]
