"""``billowin alerts``: the monitoring alerts, through the HTTP API (``GET /alerts``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from billowin.cli.main import app
from billowin.cli.output import api_call, err, out, print_json, when_ago

TITLES = {
    "crash_loop": "crash loop",
    "deploy_failed": "deploy failed",
    "no_healthy_instance": "no healthy instance",
    "high_5xx": "high 5xx rate",
}


def alerts_table(alerts: list[dict[str, Any]], now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table("state", "app", "alert", "since", "resolved", "what", title="Alerts")
    for alert in alerts:
        firing = alert.get("state") == "firing"
        table.add_row(
            "[bold red]firing[/]" if firing else "[green]resolved[/]",
            str(alert.get("app", "")),
            TITLES.get(str(alert.get("kind")), str(alert.get("kind"))),
            when_ago(alert.get("started_at"), now),
            when_ago(alert.get("resolved_at"), now),
            str(alert.get("summary") if firing else alert.get("resolution") or alert.get("summary") or ""),
        )
    return table


@app.command("alerts")
def alerts(
    app_name: Annotated[str | None, typer.Option("--app", help="Only this app's alerts.")] = None,
    firing: Annotated[bool, typer.Option("--firing", help="Only the alerts firing now.")] = False,
    since: Annotated[str, typer.Option(help="How far back resolved alerts go: 90m, 24h, 7d…")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Alerts firing now, then those resolved recently (crash loops, failed deploys, ...)."""
    params = {"since": since, "state": "firing" if firing else "all"}
    if app_name:
        params["app"] = app_name
    found: list[dict[str, Any]] = api_call(lambda c: c.get("/alerts", params=params))
    if as_json:
        return print_json(found)
    if not found:
        err.print("No alerts." if not firing else "No alert is firing.")
        return None
    out.print(alerts_table(found))
    return None
