"""Monitoring on the real stack: traffic through HAProxy becomes per-app series, a crash loop one alert.

The session's API runs the collector every 2 s and posts alerts to a real HTTP
receiver (``alert_receiver``); see ``api_env`` in conftest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from billowin.cli import app as cli_app
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import ReleaseStatus
from billowin.stack.single_box import SingleBox
from billowin.system import System

from .alert_receiver import AlertReceiver
from .conftest import wait_for
from .test_run import WEB, deploy_live, get


@pytest.fixture(scope="module")
def token(stack: SingleBox) -> str:
    return System(stack.settings).tokens.create("monitoring tests")


@pytest.fixture
def api(stack: SingleBox, token: str) -> Iterator[httpx.Client]:
    """The stack's real API, as the CLI's client factory makes it: base URL and token set."""
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.ports.api}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    ) as client:
        yield client


Points = list[tuple[int, float]]


def series(
    api: httpx.Client, app: str, *metrics: str, instance: str = ""
) -> dict[tuple[str, str, str], Points]:
    """(metric, process type, instance) -> points, from the real API."""
    params = {"since": "15m", "metric": list(metrics), "instance": instance}
    resp = api.get(f"/apps/{app}/metrics", params=params)
    assert resp.status_code == 200, resp.text
    return {
        (one["metric"], one["process"], one["instance"]): [tuple(p) for p in one["points"]]
        for one in resp.json()["series"]
    }


def total(points: Points | None) -> float:
    return sum(v for _, v in points or [])


def prometheus(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = api.get("/metrics")
    assert resp.status_code == 200, resp.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def test_traffic_through_the_router_becomes_the_apps_series_and_metrics(
    stack: SingleBox, make_image, deployer: Deployer, app_name: str, router: httpx.Client, cleanup_apps, api
) -> None:
    cleanup_apps.append(app_name)
    deploy_live(deployer, make_image, router, app_name, "metered")

    for _ in range(40):
        assert get(router, app_name).status_code == 200
    for _ in range(10):
        assert router.get("/missing", headers={"Host": f"{app_name}.localhost"}).status_code == 404

    wanted = ("requests", "responses_4xx", "latency_p50_ms", "latency_p99_ms", "healthy_instances")

    def counted() -> dict[tuple[str, str, str], Points] | None:
        found = series(api, app_name, *wanted)
        requests, errors = found.get(("requests", "web", "")), found.get(("responses_4xx", "web", ""))
        enough = total(requests) >= 50 and total(errors) >= 10
        return found if enough and ("latency_p99_ms", "web", "") in found else None

    found = wait_for(counted, 60, "the requests to be counted")
    p50, p99 = found[("latency_p50_ms", "web", "")][-1][1], found[("latency_p99_ms", "web", "")][-1][1]
    assert 0 <= p50 <= p99 < 10_000
    assert ("healthy_instances", "web", "") in found  # the minute's worst moment: 0 while starting

    # CPU and memory of the one instance, per instance and for the web process as a whole.
    def per_instance() -> dict[tuple[str, str, str], Points] | None:
        found = series(api, app_name, "memory_bytes", "cpu_percent", instance="*")
        return found if any(instance for (_metric, _process, instance) in found) else None

    usage = wait_for(per_instance, 30, "per-instance CPU and memory")
    (instance,) = {i for (_m, _p, i) in usage if i}
    assert usage[("memory_bytes", "web", instance)][-1][1] > 0
    assert usage[("memory_bytes", "web", "")][-1][1] > 0

    # The same figures on /metrics, for a Prometheus server.
    scraped = prometheus(api)
    assert scraped[("billowin_app_http_requests_total", (("app", app_name),))] >= 50
    assert scraped[("billowin_app_http_responses_total", (("app", app_name), ("code", "4xx")))] >= 10
    assert ("billowin_app_latency_seconds", (("app", app_name), ("quantile", "0.99"))) in scraped
    assert scraped[("billowin_app_healthy_instances", (("app", app_name),))] == 1
    labels = (("app", app_name), ("instance", instance), ("process", "web"))
    assert scraped[("billowin_instance_memory_bytes", labels)] > 0

    # Without a token there is nothing to read.
    anonymous = httpx.get(f"http://127.0.0.1:{stack.ports.api}/metrics", timeout=10)
    assert anonymous.status_code == 401


def answers(router: httpx.Client, app: str, text: str) -> bool:
    """Does the router serve ``text`` for the app? (A reload may close a kept-alive connection.)"""
    try:
        resp = get(router, app)
    except httpx.TransportError:
        return False
    return resp.status_code == 200 and resp.text.startswith(text)


def run_cli(api: httpx.Client, *args: str) -> Any:
    """``billowin alerts …`` through the real CLI's typer app, against the real API."""
    token = api.headers["Authorization"].removeprefix("Bearer ")
    env = {"BILLOWIN_API_URL": str(api.base_url).rstrip("/"), "BILLOWIN_API_TOKEN": token}
    result = CliRunner().invoke(cli_app, ["alerts", *args], env=env)
    assert result.exit_code == 0, result.output
    return result


def test_a_crash_loop_raises_one_alert_which_resolves_when_the_app_recovers(
    stack: SingleBox,
    make_image,
    deployer: Deployer,
    app_name: str,
    router: httpx.Client,
    cleanup_apps,
    api,
    alert_receiver: AlertReceiver,
) -> None:
    cleanup_apps.append(app_name)
    image = make_image(app_name, "v1", greeting="steady")
    # The app's worker runs long enough to be called healthy, then dies, again and again.
    flaky = [*WEB, Process(name="worker", command=["sh", "-c", "sleep 8; exit 1"])]
    release = deployer.deploy(app_name, image, flaky)
    assert release.status == ReleaseStatus.LIVE, release.description

    def delivered(status: str) -> list[dict[str, Any]]:
        return [d for d in alert_receiver.for_app(app_name) if d["status"] == status]

    # Two crashes within a minute (the session's thresholds): one alert reaches the webhook.
    (fired,) = wait_for(lambda: delivered("firing"), 90, "the crash-loop alert to be delivered")
    assert fired["kind"] == "crash_loop" and "instance crashes" in fired["summary"]
    assert fired["text"].startswith(f"[FIRING] {app_name}: crash loop")

    # The API and the CLI list it as firing.
    firing = api.get("/alerts", params={"state": "firing", "app": app_name}).json()
    assert [(a["id"], a["kind"]) for a in firing] == [(fired["id"], "crash_loop")]
    listed = json.loads(run_cli(api, "--json", "--app", app_name).stdout)
    assert [(a["id"], a["state"]) for a in listed] == [(fired["id"], "firing")]
    assert app_name in run_cli(api, "--app", app_name).stdout

    # A fixed release; once a crash window passes without a crash, the alert resolves.
    fixed = [*WEB, Process(name="worker", command=["sh", "-c", "exec sleep 100000"])]
    good = deployer.deploy(app_name, image, fixed)
    assert good.status == ReleaseStatus.LIVE, good.description
    (resolved,) = wait_for(lambda: delivered("resolved"), 150, "the resolved notification")
    assert resolved["id"] == fired["id"] and resolved["kind"] == "crash_loop"
    assert resolved["text"].startswith(f"[RESOLVED] {app_name}: crash loop cleared")

    # Exactly one alert for the whole episode, firing then resolved; the web kept serving.
    assert [(d["id"], d["status"]) for d in alert_receiver.for_app(app_name)] == [
        (fired["id"], "firing"),
        (fired["id"], "resolved"),
    ]
    (alert,) = api.get("/alerts", params={"app": app_name}).json()
    assert alert["state"] == "resolved" and alert["notified_resolved_at"] is not None
    assert answers(router, app_name, "steady")
    # The crashes and restarts were counted, against the process type that had them.
    found = series(api, app_name, "crashes", "restarts")
    assert total(found.get(("crashes", "worker", ""))) >= 2
    assert total(found.get(("restarts", "worker", ""))) >= 1
    assert total(found.get(("crashes", "web", ""))) == 0
    events = prometheus(api)
    worker_crashes = (("app", app_name), ("event", "crashes"), ("process", "worker"))
    assert events[("billowin_app_instance_events_total", worker_crashes)] >= 2
