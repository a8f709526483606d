"""``billowin alerts``: how alerts are shown."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

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
