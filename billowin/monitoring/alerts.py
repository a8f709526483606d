"""Alerts: what triggers them, one alert per (app, kind) while it fires, and webhook delivery.

Triggers (thresholds are settings):

- ``crash_loop``: at least ``BILLOWIN_ALERT_CRASH_RESTARTS`` instance crashes
  (exits nobody asked for, OOM kills included) within ``BILLOWIN_ALERT_CRASH_WINDOW``
  seconds. It clears only once the window holds no crash at all, so a loop
  slowed by Nomad's reschedule back-off does not resolve and fire again.
- ``deploy_failed``: the app's newest finished deploy (release or pipeline job)
  failed, whether Nomad auto-reverted it or not; clears when a newer one is live.
- ``no_healthy_instance``: Nomad wants web instances but none has passed its
  Consul check for ``BILLOWIN_ALERT_UNHEALTHY_AFTER`` seconds.
- ``high_5xx``: over the last minute, at least ``BILLOWIN_ALERT_5XX_MIN_REQUESTS``
  requests and a 5xx share of at least ``BILLOWIN_ALERT_5XX_RATIO``.
- ``certificate_failing``: the certificate of one of the app's names has failed every attempt
  to order or renew it for ``BILLOWIN_ALERT_CERT_FAILING_AFTER`` seconds (a day); clears once
  it is issued (``billowin/certs/manager.py``, ``failing_certificates``).

A condition that cannot be evaluated (its source is unreachable) changes
nothing: unknown is not "cleared". Alerts are rows in the SQLite store, which
enforces the one-firing-alert-per-(app, kind) rule, so de-duplication and the
notifications still to send survive API restarts.

Delivery: a POST to ``BILLOWIN_ALERT_WEBHOOK_URL`` when an alert fires and
again when it resolves, as JSON or as Slack's ``{"text": ...}``, retried with
exponential back-off (tenacity). A notification is marked sent only after a 2xx
answer, so delivery is at least once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import SecretStr
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from billowin.certs.manager import FailingName
from billowin.errors import BillowinError
from billowin.monitoring.sources import DeployOutcome
from billowin.monitoring.store import Alert, AlertKind, AlertState, MetricStore

log = logging.getLogger("billowin.monitoring")

TITLES = {
    AlertKind.CRASH_LOOP: "crash loop",
    AlertKind.DEPLOY_FAILED: "deploy failed",
    AlertKind.NO_HEALTHY_INSTANCE: "no healthy instance",
    AlertKind.HIGH_5XX: "high 5xx rate",
    AlertKind.CERTIFICATE_FAILING: "certificate failing",
}
FIVE_XX_WINDOW = 60.0


@dataclass(frozen=True)
class Thresholds:
    crash_restarts: int = 5
    crash_window: float = 600.0
    unhealthy_after: float = 60.0
    ratio_5xx: float = 0.05
    min_requests_5xx: int = 20
    cert_failing_after: float = 86400.0


@dataclass(frozen=True)
class Condition:
    firing: bool
    summary: str


@dataclass
class AppState:
    """What the rules need to know about one app; ``None`` = its source could not be read."""

    app: str
    crash_times: list[float] | None = None  # unix seconds of the crashes Nomad remembers
    web_wanted: int | None = None  # web instances Nomad wants running
    healthy: int | None = None  # web instances passing their Consul check
    deploy: DeployOutcome | None = None  # newest finished deploy
    deploy_known: bool = False
    requests_last_minute: float | None = None
    responses_5xx_last_minute: float | None = None
    failing_certificates: list[FailingName] | None = None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


@dataclass
class Rules:
    """Evaluates the triggers; keeps only the "unhealthy since" clocks between evaluations."""

    thresholds: Thresholds
    _unhealthy_since: dict[str, float] = field(default_factory=dict)

    def evaluate(self, state: AppState, now: float, firing: set[AlertKind]) -> dict[AlertKind, Condition]:
        t = self.thresholds
        out: dict[AlertKind, Condition] = {}
        if state.crash_times is not None:
            crashes = sum(1 for at in state.crash_times if at >= now - t.crash_window)
            was = AlertKind.CRASH_LOOP in firing
            counted = f"{crashes} instance crashes" if crashes > 1 else f"{crashes or 'no'} instance crash"
            out[AlertKind.CRASH_LOOP] = Condition(
                crashes >= t.crash_restarts or (was and crashes > 0),
                f"{counted} in the last {_minutes(t.crash_window)}",
            )
        if state.deploy_known:
            deploy = state.deploy
            out[AlertKind.DEPLOY_FAILED] = Condition(
                deploy is not None and deploy.failed, deploy.summary if deploy else "no deploy yet"
            )
        if state.web_wanted is not None and state.healthy is not None:
            if state.web_wanted == 0 or state.healthy > 0:
                self._unhealthy_since.pop(state.app, None)
                out[AlertKind.NO_HEALTHY_INSTANCE] = Condition(
                    False, f"{state.healthy} healthy web instance(s) of {state.web_wanted}"
                )
            else:
                since = self._unhealthy_since.setdefault(state.app, now)
                out[AlertKind.NO_HEALTHY_INSTANCE] = Condition(
                    now - since >= t.unhealthy_after,
                    f"no healthy web instance for {now - since:.0f} s ({state.web_wanted} wanted)",
                )
        if state.requests_last_minute is not None and state.responses_5xx_last_minute is not None:
            requests, errors = state.requests_last_minute, state.responses_5xx_last_minute
            ratio = errors / requests if requests else 0.0
            out[AlertKind.HIGH_5XX] = Condition(
                requests >= t.min_requests_5xx and ratio >= t.ratio_5xx,
                f"{ratio:.1%} of {requests:.0f} requests answered 5xx in the last minute",
            )
        if state.failing_certificates is not None:
            late = [f for f in state.failing_certificates if now - f.since >= t.cert_failing_after]
            worst = min(late, key=lambda f: f.since) if late else None
            out[AlertKind.CERTIFICATE_FAILING] = Condition(
                worst is not None,
                f"no certificate for {worst.name} for {_duration(now - worst.since)}: {worst.last_error}"
                + (f" (and {len(late) - 1} more name(s))" if len(late) > 1 else "")
                if worst is not None
                else "every name's certificate was issued",
            )
        return out

    def forget(self, apps_seen: Iterable[str]) -> None:
        seen = set(apps_seen)
        for app in list(self._unhealthy_since):
            if app not in seen:
                del self._unhealthy_since[app]


@dataclass(frozen=True)
class Change:
    alert: Alert
    status: AlertState  # FIRING: it just started; RESOLVED: it just cleared


class AlertBook:
    """Applies the rules to every app and records what starts and stops firing."""

    def __init__(self, store: MetricStore, rules: Rules) -> None:
        self.store = store
        self.rules = rules

    def update(self, states: list[AppState], now: float, *, apps_complete: bool) -> list[Change]:
        """``apps_complete``: ``states`` covers every app (so an app missing from it is gone)."""
        open_alerts: dict[tuple[str, AlertKind], Alert] = {(a.app, a.kind): a for a in self.store.firing()}
        changes: list[Change] = []
        for state in states:
            firing = {kind for (app, kind) in open_alerts if app == state.app}
            for kind, condition in self.rules.evaluate(state, now, firing).items():
                current = open_alerts.get((state.app, kind))
                if condition.firing:
                    alert, created = self.store.fire(state.app, kind, condition.summary, now)
                    if created:
                        changes.append(Change(alert, AlertState.FIRING))
                elif current is not None:
                    resolved = self.store.resolve(current.id, now, condition.summary)
                    if resolved is not None:
                        changes.append(Change(resolved, AlertState.RESOLVED))
        if apps_complete:
            present = {s.app for s in states}
            self.rules.forget(present)
            for (app, _kind), alert in open_alerts.items():
                if app not in present:
                    resolved = self.store.resolve(alert.id, now, "the app no longer runs")
                    if resolved is not None:
                        changes.append(Change(resolved, AlertState.RESOLVED))
        return changes


def message(alert: Alert, status: AlertState) -> str:
    title = TITLES[alert.kind]
    if status == AlertState.FIRING:
        return f"[FIRING] {alert.app}: {title}: {alert.summary}"
    return f"[RESOLVED] {alert.app}: {title} cleared: {alert.resolution or 'condition cleared'}"


def payload(alert: Alert, status: AlertState, fmt: Literal["json", "slack"]) -> dict[str, Any]:
    text = message(alert, status)
    if fmt == "slack":
        return {"text": text}
    return {
        "status": status.value,
        "id": alert.id,
        "app": alert.app,
        "kind": alert.kind.value,
        "summary": alert.summary,
        "started_at": alert.started_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "resolution": alert.resolution,
        "text": text,
    }


class _Retry(Exception):
    """A delivery worth retrying: no answer, 429 or 5xx."""


class Notifier:
    """Sends pending alert notifications to the webhook; runs in its own thread.

    The store is the queue: whatever is not marked sent is sent, oldest first,
    so nothing is lost across restarts (notifications older than a day are dropped).
    """

    def __init__(
        self,
        store: MetricStore,
        url: SecretStr,
        fmt: Literal["json", "slack"] = "json",
        *,
        attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        on_result: Callable[[bool], None] = lambda _ok: None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store = store
        self._url = url  # a Slack webhook URL is a secret: never logged
        self.fmt = fmt
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_result = on_result
        self._client = httpx.Client(timeout=timeout, follow_redirects=False, transport=transport)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="billowin-alert-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._client.close()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_pending()
            except BillowinError as exc:
                log.warning("alert notifications: %s", exc.message)
            self._wake.wait(30)
            self._wake.clear()

    def send_pending(self) -> int:
        sent = 0
        for alert, status in self.store.unnotified(since=time.time() - 86400):
            if self._stop.is_set():
                break
            if not self._deliver(alert, status):
                break  # keep the order: this one (and those after it) go again on the next round
            self.store.mark_notified(alert.id, status, time.time())
            sent += 1
        return sent

    def _post(self, body: dict[str, Any]) -> None:
        resp = self._client.post(self._url.get_secret_value(), json=body)
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retry(f"HTTP {resp.status_code}")
        if resp.status_code >= 300:
            raise BillowinError(f"HTTP {resp.status_code}")

    def _give_up(self, state: RetryCallState) -> bool:
        return state.attempt_number >= self.attempts or self._stop.is_set()

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a stopping API does not sit out the back-off

    def _deliver(self, alert: Alert, status: AlertState) -> bool:
        retrying = Retrying(
            stop=self._give_up,
            wait=wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            retry=retry_if_exception_type((httpx.TransportError, _Retry)),
            sleep=self._pause,
            reraise=True,
        )
        try:
            retrying(self._post, payload(alert, status, self.fmt))
        except (httpx.HTTPError, _Retry, BillowinError) as exc:
            # httpx's messages can carry the URL, which is a secret for Slack: name the error only.
            why = type(exc).__name__ if isinstance(exc, httpx.HTTPError) else str(exc)
            log.warning(
                "alert webhook: %s notification of alert %s (%s) not delivered: %s",
                status.value,
                alert.id,
                alert.app,
                why,
            )
            self.on_result(False)
            return False
        self.on_result(True)
        return True
