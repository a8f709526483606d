"""``billowin alerts``: how alerts are shown."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from billowin.cli import app
from billowin.cli.client import ApiClient, ClientConfig
from billowin.cli.monitoring import alerts_table

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
ALERTS = [
    {
        "id": 2,
        "app": "shop",
        "kind": "crash_loop",
        "state": "firing",
        "summary": "6 instance crashes in the last 10 min",
        "started_at": "2027-01-15T11:55:00Z",
        "resolved_at": None,
        "resolution": None,
    },
    {
        "id": 1,
        "app": "blog",
        "kind": "deploy_failed",
        "state": "resolved",
        "summary": "v3 failed: Failed due to unhealthy allocations",
        "started_at": "2027-01-14T09:00:00Z",
        "resolved_at": "2027-01-15T09:00:00Z",
        "resolution": "v4 is live",
    },
]


def render(alerts: list[dict[str, object]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(alerts_table(alerts, now=NOW))
    return console.export_text()


def test_firing_alerts_show_what_is_wrong_and_resolved_ones_how_they_cleared() -> None:
    text = render(ALERTS)
    shop = next(line for line in text.splitlines() if "shop" in line)
    assert "firing" in shop and "crash loop" in shop and "6 instance crashes" in shop and "(5m ago)" in shop
    blog = next(line for line in text.splitlines() if "blog" in line)
    assert "resolved" in blog and "deploy failed" in blog and "v4 is live" in blog
    assert "(27h ago)" in blog and "(3h ago)" in blog


Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Answer the CLI's API calls with ``handler``; returns the requests it got."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("BILLOWIN_API_URL", "http://api.test")
    monkeypatch.setenv("BILLOWIN_API_TOKEN", "bw_test_token")

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []
        original = ApiClient.__init__

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        def init(self: ApiClient, config: ClientConfig) -> None:
            original(self, config)
            self.http = httpx.Client(
                base_url=config.api_url, headers=self.http.headers, transport=httpx.MockTransport(answer)
            )

        monkeypatch.setattr(ApiClient, "__init__", init)
        return seen

    return install


def test_alerts_asks_the_api_with_its_filters_and_says_when_there_is_none(
    serve: Callable[[Handler], list[httpx.Request]],
) -> None:
    seen = serve(lambda _: httpx.Response(200, json=[]))
    result = CliRunner().invoke(app, ["alerts", "--app", "shop", "--firing", "--since", "7d"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "No alert is firing."
    (request,) = seen
    assert request.url.path == "/alerts"
    assert dict(request.url.params) == {"since": "7d", "state": "firing", "app": "shop"}
    assert request.headers["authorization"] == "Bearer bw_test_token"
    result = CliRunner().invoke(app, ["alerts"])
    assert result.output.strip() == "No alerts."
    assert dict(seen[-1].url.params) == {"since": "24h", "state": "all"}


def test_alerts_prints_the_api_answer_as_json_or_a_table(
    serve: Callable[[Handler], list[httpx.Request]],
) -> None:
    serve(lambda _: httpx.Response(200, json=ALERTS))
    result = CliRunner().invoke(app, ["alerts", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ALERTS
    result = CliRunner().invoke(app, ["alerts"])
    assert result.exit_code == 0, result.output
    assert "Alerts" in result.stdout and "crash loop" in result.stdout and "blog" in result.stdout


def test_an_api_error_is_one_plain_line_and_what_to_do(
    serve: Callable[[Handler], list[httpx.Request]],
) -> None:
    body = {"message": "a valid API token is required", "hint": "Run `billowin login`."}
    serve(lambda _: httpx.Response(401, json=body))
    result = CliRunner().invoke(app, ["alerts"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: a valid API token is required",
        "what to do: Run `billowin login`.",
    ]
