"""``billowin alerts``: the monitoring alerts, through the HTTP API (``GET /alerts``).

``register(app, client_factory)`` adds the command to the ``billowin`` typer app;
``client_factory()`` returns an ``httpx.Client`` whose base URL and
``Authorization`` header already point at the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

TITLES = {
    "crash_loop": "crash loop",
    "deploy_failed": "deploy failed",
    "no_healthy_instance": "no healthy instance",
    "high_5xx": "high 5xx rate",
}


def _when(text: str | None, now: datetime) -> str:
    if not text:
        return ""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    seconds = max(0, int((now - at).total_seconds()))
    if seconds < 120:
        ago = f"{seconds}s"
    elif seconds < 7200:
        ago = f"{seconds // 60}m"
    elif seconds < 172800:
        ago = f"{seconds // 3600}h"
    else:
        ago = f"{seconds // 86400}d"
    return f"{at.astimezone():%Y-%m-%d %H:%M} ({ago} ago)"


def alerts_table(alerts: list[dict[str, Any]], now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table("state", "app", "alert", "since", "resolved", "what", title="Alerts")
    for alert in alerts:
        firing = alert.get("state") == "firing"
        table.add_row(
            "[bold red]firing[/]" if firing else "[green]resolved[/]",
            str(alert.get("app", "")),
            TITLES.get(str(alert.get("kind")), str(alert.get("kind"))),
            _when(alert.get("started_at"), now),
            _when(alert.get("resolved_at"), now),
            str(alert.get("summary") if firing else alert.get("resolution") or alert.get("summary") or ""),
        )
    return table


def _error(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if isinstance(body, dict) and "message" in body:
        hint = f"\n  what to do: {body['hint']}" if body.get("hint") else ""
        return f"{body['message']}{hint}"
    return f"HTTP {resp.status_code}"


def register(app: typer.Typer, client_factory: Callable[[], httpx.Client]) -> None:
    err = Console(stderr=True)

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
        try:
            with client_factory() as client:
                resp = client.get("/alerts", params=params)
        except httpx.HTTPError as exc:
            err.print(f"[bold red]error:[/] cannot reach the Billowin API: {type(exc).__name__}")
            raise typer.Exit(1) from exc
        if resp.status_code != 200:
            err.print(f"[bold red]error:[/] {_error(resp)}")
            raise typer.Exit(1)
        found: list[dict[str, Any]] = resp.json()
        if as_json:
            typer.echo(json.dumps(found, indent=2))
            return
        if not found:
            err.print("No alerts." if not firing else "No alert is firing.")
            return
        Console().print(alerts_table(found))
