"""Processes: ``ps``, ``ps:scale``, ``ps:restart``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, err, fail, out, print_json
from billowin.errors import BillowinError


def _age(seconds: int | None) -> str:
    """``1h05m`` from an hour on, ``4m07s`` below; empty if unknown."""
    if seconds is None:
        return ""
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _pinned(volumes: list[str]) -> str:
    return f" (pinned: volume {', '.join(volumes)})" if volumes else ""


@app.command("ps")
def ps(name: AppArg, as_json: JsonOpt = False) -> None:
    """Every instance: its state, release, restarts, age and the node it runs on."""
    found = api_call(lambda c: c.get(f"/apps/{name}/ps"))
    if as_json:
        return print_json(found)
    table = Table("instance", "state", "release", "restarts", "age", "node", "alloc")
    for i in found:
        table.add_row(
            i["name"],
            i["state"],
            i["release"] or "",
            str(i["restarts"]),
            _age(i["age_seconds"]),
            (i.get("node") or "") + _pinned(i.get("pinned_by") or []),
            i["alloc"],
        )
    out.print(table)
    return None


@app.command("ps:scale")
def ps_scale(
    name: AppArg,
    counts: Annotated[list[str], typer.Argument(metavar="TYPE=N...", help="e.g. web=2 worker=1")],
) -> None:
    """Set how many instances of each process type run."""
    wanted: dict[str, int] = {}
    for item in counts:
        process, _, number = item.partition("=")
        if not process or not number.isdigit():
            fail(BillowinError(f"{item!r} is not TYPE=N", hint="For example: billowin ps:scale APP web=2"))
        wanted[process] = int(number)
    done = api_call(lambda c: c.post(f"/apps/{name}/ps/scale", json={"counts": wanted}))
    err.print("Scaled " + ", ".join(f"{k} to {v}" for k, v in done.items()))


@app.command("ps:restart")
def ps_restart(
    name: AppArg, process: Annotated[str | None, typer.Argument(help="Only this process type.")] = None
) -> None:
    """Restart the app's instances (all, or one process type)."""
    done = api_call(lambda c: c.post(f"/apps/{name}/ps/restart", json={"process": process}))
    err.print(f"Restarted {done['restarted']} instance(s) of {name}.")
