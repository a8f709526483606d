"""Monitoring: the alert rules, one alert per (app, kind) while it fires, and what is delivered."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from billowin.monitoring.alerts import AlertBook, AppState, Notifier, Rules, Thresholds, message, payload
from billowin.monitoring.sources import DeployOutcome
from billowin.monitoring.store import AlertKind, AlertState, MetricStore

NOW = 1_800_000_000.0
THRESHOLDS = Thresholds(
    crash_restarts=3, crash_window=300, unhealthy_after=60, ratio_5xx=0.1, min_requests_5xx=20
)


@pytest.fixture
def store(tmp_path: Path) -> MetricStore:
    return MetricStore(tmp_path / "monitoring.sqlite3")


@pytest.fixture
def book(store: MetricStore) -> AlertBook:
    return AlertBook(store, Rules(THRESHOLDS))


def crashing(app: str, times: list[float]) -> AppState:
    return AppState(app=app, crash_times=times)


def test_a_crash_loop_fires_once_while_it_lasts_then_resolves(book: AlertBook, store: MetricStore) -> None:
    # Two crashes: below the threshold.
    assert book.update([crashing("shop", [NOW - 20, NOW - 10])], NOW, apps_complete=True) == []
    # A third: it fires, once.
    (change,) = book.update([crashing("shop", [NOW - 20, NOW - 10, NOW])], NOW, apps_complete=True)
    assert change.status == AlertState.FIRING
    assert (change.alert.app, change.alert.kind) == ("shop", AlertKind.CRASH_LOOP)
    assert change.alert.summary == "3 instance crashes in the last 5 min"
    # Still crashing, and later only one crash left in the window: still the same alert, no new one.
    assert (
        book.update([crashing("shop", [NOW - 20, NOW - 10, NOW, NOW + 5])], NOW + 10, apps_complete=True)
        == []
    )
    assert book.update([crashing("shop", [NOW + 5])], NOW + 290, apps_complete=True) == []
    assert len(store.firing()) == 1
    # No crash in the window any more: resolved, once.
    (resolved,) = book.update([crashing("shop", [NOW + 5])], NOW + 400, apps_complete=True)
    assert resolved.status == AlertState.RESOLVED
    assert resolved.alert.id == change.alert.id
    assert resolved.alert.resolution == "no instance crash in the last 5 min"
    assert book.update([crashing("shop", [])], NOW + 500, apps_complete=True) == []
    assert store.firing() == []


def test_a_new_episode_after_resolution_is_a_new_alert(book: AlertBook) -> None:
    burst = [NOW, NOW + 1, NOW + 2]
    (first,) = book.update([crashing("shop", burst)], NOW + 3, apps_complete=True)
    book.update([crashing("shop", burst)], NOW + 1000, apps_complete=True)  # resolves
    later = [NOW + 2000, NOW + 2001, NOW + 2002]
    (second,) = book.update([crashing("shop", later)], NOW + 2003, apps_complete=True)
    assert second.status == AlertState.FIRING and second.alert.id != first.alert.id


def test_unknown_is_not_cleared(book: AlertBook) -> None:
    book.update([crashing("shop", [NOW, NOW, NOW])], NOW, apps_complete=True)
    # Nomad could not be read: no crash information at all; the alert stays.
    assert book.update([AppState(app="shop")], NOW + 1000, apps_complete=False) == []
    assert [a.kind for a in book.store.firing()] == [AlertKind.CRASH_LOOP]


def test_an_app_that_is_gone_has_its_alerts_resolved(book: AlertBook) -> None:
    book.update([crashing("shop", [NOW, NOW, NOW])], NOW, apps_complete=True)
    assert book.update([], NOW + 10, apps_complete=False) == []  # the list of apps is not known
    (change,) = book.update([], NOW + 20, apps_complete=True)
    assert change.status == AlertState.RESOLVED and change.alert.resolution == "the app no longer runs"


def test_firing_alerts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.sqlite3"
    first = AlertBook(MetricStore(path), Rules(THRESHOLDS))
    assert len(first.update([crashing("shop", [NOW, NOW, NOW])], NOW, apps_complete=True)) == 1
    first.store.close()
    # A new API process: same file, same firing alert, no second notification.
    again = AlertBook(MetricStore(path), Rules(THRESHOLDS))
    assert again.update([crashing("shop", [NOW, NOW, NOW])], NOW + 10, apps_complete=True) == []
    assert len(again.store.firing()) == 1


def test_no_healthy_instance_fires_only_after_the_grace_period(book: AlertBook) -> None:
    def state(healthy: int, wanted: int = 1) -> AppState:
        return AppState(app="shop", web_wanted=wanted, healthy=healthy)

    assert book.update([state(0)], NOW, apps_complete=True) == []
    assert book.update([state(0)], NOW + 59, apps_complete=True) == []
    (change,) = book.update([state(0)], NOW + 61, apps_complete=True)
    assert change.alert.kind == AlertKind.NO_HEALTHY_INSTANCE
    assert change.alert.summary == "no healthy web instance for 61 s (1 wanted)"
    (cleared,) = book.update([state(1)], NOW + 70, apps_complete=True)
    assert cleared.status == AlertState.RESOLVED
    # A blip shorter than the grace period starts the clock over.
    assert book.update([state(0)], NOW + 100, apps_complete=True) == []
    assert book.update([state(1)], NOW + 130, apps_complete=True) == []
    assert book.update([state(0)], NOW + 140, apps_complete=True) == []
    assert book.update([state(0)], NOW + 190, apps_complete=True) == []


def test_an_app_scaled_to_zero_is_not_unhealthy(book: AlertBook) -> None:
    assert book.update([AppState(app="shop", web_wanted=0, healthy=0)], NOW, apps_complete=True) == []
    assert book.update([AppState(app="shop", web_wanted=0, healthy=0)], NOW + 600, apps_complete=True) == []


def test_a_failed_deploy_fires_until_a_newer_one_is_live(book: AlertBook) -> None:
    failed = DeployOutcome(
        True, "v3 failed: Failed due to unhealthy allocations; Nomad rolled the app back", NOW
    )
    (change,) = book.update([AppState(app="shop", deploy=failed, deploy_known=True)], NOW, apps_complete=True)
    assert change.alert.kind == AlertKind.DEPLOY_FAILED and "rolled the app back" in change.alert.summary
    worse = DeployOutcome(True, "v4 failed", NOW + 10)
    assert (
        book.update([AppState(app="shop", deploy=worse, deploy_known=True)], NOW + 10, apps_complete=True)
        == []
    )
    live = DeployOutcome(False, "v5 is live", NOW + 20)
    (resolved,) = book.update(
        [AppState(app="shop", deploy=live, deploy_known=True)], NOW + 20, apps_complete=True
    )
    assert resolved.status == AlertState.RESOLVED and resolved.alert.resolution == "v5 is live"


def test_high_5xx_needs_enough_requests_and_a_high_share(book: AlertBook) -> None:
    def traffic(requests: float, errors: float) -> AppState:
        return AppState(app="shop", requests_last_minute=requests, responses_5xx_last_minute=errors)

    assert book.update([traffic(10, 10)], NOW, apps_complete=True) == []  # too few requests to judge
    assert book.update([traffic(100, 9)], NOW, apps_complete=True) == []  # 9% < 10%
    (change,) = book.update([traffic(100, 25)], NOW, apps_complete=True)
    assert change.alert.summary == "25.0% of 100 requests answered 5xx in the last minute"
    (resolved,) = book.update([traffic(0, 0)], NOW + 60, apps_complete=True)  # no traffic, no errors
    assert resolved.status == AlertState.RESOLVED


def test_notifications_are_pending_until_marked(book: AlertBook, store: MetricStore) -> None:
    (change,) = book.update([crashing("shop", [NOW, NOW, NOW])], NOW, apps_complete=True)
    assert [(a.id, s) for a, s in store.unnotified(since=NOW - 10)] == [(change.alert.id, AlertState.FIRING)]
    store.mark_notified(change.alert.id, AlertState.FIRING, NOW + 1)
    assert store.unnotified(since=NOW - 10) == []
    book.update([crashing("shop", [])], NOW + 10, apps_complete=True)
    assert [s for _, s in store.unnotified(since=NOW - 10)] == [AlertState.RESOLVED]
    assert store.unnotified(since=NOW + 3600) == []  # too old to send any more


def test_webhook_bodies(book: AlertBook) -> None:
    (change,) = book.update([crashing("shop", [NOW, NOW, NOW])], NOW, apps_complete=True)
    alert = change.alert
    assert payload(alert, AlertState.FIRING, "slack") == {
        "text": "[FIRING] shop: crash loop: 3 instance crashes in the last 5 min"
    }
    body = payload(alert, AlertState.FIRING, "json")
    assert body["status"] == "firing" and body["app"] == "shop" and body["kind"] == "crash_loop"
    assert body["resolved_at"] is None and body["id"] == alert.id
    (resolved,) = book.update([crashing("shop", [])], NOW + 10, apps_complete=True)
    assert message(resolved.alert, AlertState.RESOLVED) == (
        "[RESOLVED] shop: crash loop cleared: no instance crash in the last 5 min"
    )


def test_notifications_are_retried_then_marked_sent(book: AlertBook, store: MetricStore) -> None:
    now = time.time()  # the notifier sends what started in the last day
    (change,) = book.update([crashing("shop", [now, now, now])], now, apps_complete=True)
    answers = iter([503, 429, 204])
    received: list[dict[str, object]] = []

    def webhook(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        return httpx.Response(next(answers))

    results: list[bool] = []
    notifier = Notifier(
        store,
        SecretStr("https://hooks.example.invalid/T000/B000/secret"),
        "slack",
        attempts=3,
        backoff=0.001,
        on_result=results.append,
        transport=httpx.MockTransport(webhook),  # the transport only: no network in unit tests
    )
    assert notifier.send_pending() == 1
    assert len(received) == 3 and received[-1] == {"text": message(change.alert, AlertState.FIRING)}
    assert results == [True]
    assert store.unnotified(since=0) == []
    assert notifier.send_pending() == 0  # sent once


def test_a_refused_notification_stays_pending(book: AlertBook, store: MetricStore) -> None:
    now = time.time()
    book.update([crashing("shop", [now, now, now])], now, apps_complete=True)
    calls: list[int] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500)

    notifier = Notifier(
        store,
        SecretStr("http://alerts.invalid/"),
        attempts=2,
        backoff=0.001,
        transport=httpx.MockTransport(down),
    )
    assert notifier.send_pending() == 0
    assert len(calls) == 2
    assert len(store.unnotified(since=0)) == 1  # tried again on the next round


def test_a_certificate_failing_for_a_day_fires_once_and_clears_when_issued(book: AlertBook) -> None:
    from billowin.certs.manager import FailingName

    def failing(*names: tuple[str, float]) -> AppState:
        reason = "www.shop.example: the CA's http-01 check failed, it could not reach the name"
        return AppState(app="shop", failing_certificates=[FailingName(n, at, reason) for n, at in names])

    day = 86400.0
    # Failing for an hour: a renewal may still succeed, nobody is woken.
    assert book.update([failing(("www.shop.example", NOW - 3600))], NOW, apps_complete=True) == []
    (fired,) = book.update([failing(("www.shop.example", NOW - 3600))], NOW + day, apps_complete=True)
    assert (fired.status, fired.alert.kind) == (AlertState.FIRING, AlertKind.CERTIFICATE_FAILING)
    assert fired.alert.summary.startswith(
        "no certificate for www.shop.example for 1.0 days: www.shop.example:"
    )
    assert "[FIRING] shop: certificate failing: no certificate for www.shop.example" in message(
        fired.alert, AlertState.FIRING
    )
    # Still failing, with a second name: the same alert.
    later = failing(("www.shop.example", NOW - 3600), ("shop.example", NOW - day))
    assert book.update([later], NOW + day + 60, apps_complete=True) == []
    # The certificates cannot be read this round: nothing changes.
    assert book.update([AppState(app="shop")], NOW + day + 120, apps_complete=True) == []
    (cleared,) = book.update([failing()], NOW + day + 180, apps_complete=True)
    assert cleared.status == AlertState.RESOLVED
    assert cleared.alert.resolution == "every name's certificate was issued"
