"""``billowin audit [APP]``: the audit log, through the HTTP API (``GET /audit``), newest last.

An admin sees every entry; a ``deploy`` or ``read`` token only those about its apps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from billowin.cli.main import app
from billowin.cli.output import api_call, err, out, print_json, when_ago


def audit_table(entries: list[dict[str, Any]], now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table("when", "who", "action", "app", "outcome", "call", title="Audit log (newest last)")
    for e in entries:
        status = int(e.get("status", 0))
        colour = "green" if status < 400 else "red"
        where = " (dashboard)" if e.get("via") == "dashboard" else ""
        table.add_row(
            when_ago(e.get("at"), now),
            str(e.get("actor", "")) + (f" ({e['token_id']})" if e.get("token_id") else ""),
            str(e.get("action", "")),
            str(e.get("app") or ""),
            f"[{colour}]{status}[/]",
            f"{e.get('method', '')} {e.get('path', '')}{where}",
        )
    return table


@app.command("audit")
def audit(
    app_name: Annotated[str | None, typer.Argument(metavar="[APP]", help="Only this app's entries.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="How many entries.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Who changed what and when (newest last): every call that changes something, refused ones too."""
    params: dict[str, Any] = {"limit": limit}
    if app_name:
        params["app"] = app_name
    found: list[dict[str, Any]] = api_call(lambda c: c.get("/audit", params=params))
    if as_json:
        return print_json(found)
    if not found:
        err.print("Nothing in the audit log yet." if not app_name else f"Nothing about {app_name} yet.")
        return None
    out.print(audit_table(found))
    return None
