"""Monitoring on the real stack: traffic through HAProxy becomes per-app series, a crash loop one alert.

The session's API runs the collector every 2 s and posts alerts to a real HTTP
receiver (``alert_receiver``); see ``api_env`` in conftest.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from billowin.adapters.consul import ConsulRegistry
from billowin.auth import TokenStore
from billowin.cli_monitoring import register
from billowin.deploy import Deployer
from billowin.releases import ReleaseStatus
from billowin.stack.single_box import SingleBox

from .alert_receiver import AlertReceiver
from .conftest import wait_for
from .test_run import WEB, deploy_live, get


@pytest.fixture(scope="module")
def token(stack: SingleBox) -> str:
    return TokenStore(ConsulRegistry(stack.settings)).create("monitoring tests")


@pytest.fixture
def api(stack: SingleBox, token: str) -> Iterator[httpx.Client]:
    """The stack's real API, as the CLI's client factory makes it: base URL and token set."""
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.ports.api}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    ) as client:
        yield client


def series(api: httpx.Client, app: str, *metrics: str) -> dict[tuple[str, str], list[tuple[int, float]]]:
    resp = api.get(f"/apps/{app}/metrics", params={"since": "15m", "metric": list(metrics)})
    assert resp.status_code == 200, resp.text
    return {(s["metric"], s["instance"]): [tuple(p) for p in s["points"]] for s in resp.json()["series"]}


def total(points: list[tuple[int, float]] | None) -> float:
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

    def counted() -> dict[tuple[str, str], list[tuple[int, float]]] | None:
        found = series(api, app_name, *wanted)
        enough = total(found.get(("requests", ""))) >= 50 and total(found.get(("responses_4xx", ""))) >= 10
        return found if enough and ("latency_p99_ms", "") in found else None

    found = wait_for(counted, 60, "the requests to be counted")
    p50, p99 = found[("latency_p50_ms", "")][-1][1], found[("latency_p99_ms", "")][-1][1]
    assert 0 <= p50 <= p99 < 10_000
    assert ("healthy_instances", "") in found  # the minute's worst moment: 0 while it was starting

    # CPU and memory of the one instance, per instance and for the web process as a whole.
    def per_instance() -> dict[tuple[str, str], list[tuple[int, float]]] | None:
        found = series(api, app_name, "memory_bytes", "cpu_percent")
        return found if any(instance for (_metric, instance) in found) else None

    usage = wait_for(per_instance, 30, "per-instance CPU and memory")
    (instance,) = {i for (_m, i) in usage if i}
    assert usage[("memory_bytes", instance)][-1][1] > 0

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


def run_cli(api: httpx.Client, *args: str) -> Any:
    """``billowin alerts …`` through its typer command, against the real API."""
    app = typer.Typer()
    register(app, lambda: httpx.Client(base_url=str(api.base_url), headers=dict(api.headers), timeout=20))
    app.command("noop")(lambda: None)  # a group with two commands, as in the real CLI
    result = CliRunner().invoke(app, ["alerts", *args])
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
    healthy_image = make_image(app_name, f"ok{uuid.uuid4().hex[:4]}", greeting="steady")
    flaky = deployer.deploy(app_name, make_image(app_name, "flaky", greeting="flaky", kind="flaky"), WEB)
    assert flaky.status == ReleaseStatus.LIVE, flaky.description  # healthy at first...

    def delivered(status: str) -> list[dict[str, Any]]:
        return [d for d in alert_receiver.for_app(app_name) if d["status"] == status]

    # ...then it dies every few seconds: one crash-loop alert reaches the webhook.
    (fired,) = wait_for(lambda: delivered("firing"), 90, "the crash-loop alert to be delivered")
    assert fired["kind"] == "crash_loop" and "instance crashes" in fired["summary"]
    assert fired["text"].startswith(f"[FIRING] {app_name}: crash loop")

    # The API and the CLI list it as firing.
    firing = api.get("/alerts", params={"state": "firing", "app": app_name}).json()
    assert [(a["id"], a["kind"]) for a in firing] == [(fired["id"], "crash_loop")]
    listed = json.loads(run_cli(api, "--json", "--app", app_name).stdout)
    assert [(a["id"], a["state"]) for a in listed] == [(fired["id"], "firing")]
    assert app_name in run_cli(api, "--app", app_name).stdout

    # A good release replaces it; once a crash window passes without a crash, the alert resolves.
    good = deployer.deploy(app_name, healthy_image, WEB)
    assert good.status == ReleaseStatus.LIVE, good.description
    wait_for(lambda: get(router, app_name).text.startswith("steady"), 30, "the good release to be served")
    (resolved,) = wait_for(lambda: delivered("resolved"), 150, "the resolved notification")
    assert resolved["id"] == fired["id"] and resolved["kind"] == "crash_loop"

    # Exactly one alert for the whole episode, firing then resolved.
    assert [(d["id"], d["status"]) for d in alert_receiver.for_app(app_name)] == [
        (fired["id"], "firing"),
        (fired["id"], "resolved"),
    ]
    (alert,) = api.get("/alerts", params={"app": app_name}).json()
    assert alert["state"] == "resolved" and alert["notified_resolved_at"] is not None
    # Crashes, restarts and the failed allocation were counted along the way.
    found = series(api, app_name, "crashes", "restarts")
    assert total(found.get(("crashes", ""))) >= 2 and total(found.get(("restarts", ""))) >= 1
    scraped = prometheus(api)
    assert (
        scraped[
            (
                "billowin_app_instance_events_total",
                (("app", app_name), ("event", "crashes"), ("process", "web")),
            )
        ]
        >= 2
    )
