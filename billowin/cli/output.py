"""What every ``billowin`` command prints, and how it reports an error.

``err`` is stderr (progress, confirmations, errors) and ``out`` is stdout
(tables, what a script reads). An error is one plain line and what to do::

    error: no app named 'shop'
    what to do: List apps with `billowin apps`.

``api_call`` runs a function against the configured API and turns any
``BillowinError`` into that output and exit code 1; ``follow_job`` and
``finish_job`` show a rollout the API queued until it is live or failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console

from billowin.cli.client import ApiClient, load_config
from billowin.errors import BillowinError

err = Console(stderr=True)
out = Console()

TERMINAL = {"live", "failed", "superseded"}


def fail(exc: BillowinError) -> NoReturn:
    """Print the error and what to do about it, and exit 1."""
    err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
    if exc.hint:
        err.print(f"[yellow]what to do:[/] {exc.hint}", highlight=False)
    raise typer.Exit(1)


def api_call(fn: Callable[[ApiClient], Any]) -> Any:
    """``fn(client)`` against the configured API; a ``BillowinError`` becomes ``fail``."""
    try:
        with ApiClient(load_config()) as client:
            return fn(client)
    except BillowinError as exc:
        fail(exc)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def when(value: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` (empty if there is none)."""
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def when_ago(text: str | None, now: datetime) -> str:
    """An ISO timestamp in local time with how long ago it was: ``2027-01-15 11:55 (5m ago)``."""
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


def follow_job(client: ApiClient, app: str, job: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
    """Print a pipeline job's steps as they happen, until it is live, failed or superseded."""
    seen = 0
    with err.status(f"{app}: {job['state']}…", spinner="dots") as status:
        while True:
            for step in job["steps"][seen:]:
                if not quiet:
                    err.print(f"  [dim]{step['at'][11:19]}[/] {step['message']}", highlight=False)
            seen = len(job["steps"])
            status.update(f"{app}: {job['state']}…")
            if job["state"] in TERMINAL:
                return job
            job = client.get(f"/apps/{app}/deploys/{job['id']}", params={"wait": 20, "seen": seen})


def finish_job(client: ApiClient, app: str, job: dict[str, Any] | None, wait: bool, as_json: bool) -> None:
    """Follow (or not) a rollout the API queued, and exit non-zero unless it went live."""
    if job is None:
        err.print("Nothing changed.")
        return
    if not wait:
        if as_json:
            print_json(job)
        else:
            err.print(f"Queued job {job['id']}: follow it with `billowin deploy:status {app} {job['id']}`")
        return
    job = follow_job(client, app, job, quiet=as_json)
    if as_json:
        print_json(job)
    if job["state"] == "live":
        err.print(f"[green]{app} {job.get('release') or ''} is live[/]: {job['steps'][-1]['message']}")
        return
    err.print(f"[bold red]{app}: {job['state']}[/]: {job.get('reason') or job['steps'][-1]['message']}")
    raise typer.Exit(1)
