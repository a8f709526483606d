"""Review apps: ``apps:review-apps``, ``review-apps`` and ``review-apps:approve``.

A review app is ``<app>-pr-<number>``, one per open pull request, made and destroyed by the
API as GitHub's ``pull_request`` webhooks arrive (``billowin/review/apps.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, fail, out, print_json
from billowin.errors import InvalidInput
from billowin.review.model import Forks


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pairs(values: list[str]) -> dict[str, str]:
    found = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(InvalidInput(f"{item!r} is not KEY=VALUE", hint="Give each one as --config KEY=VALUE."))
        found[key] = value
    return found


def show(view: dict[str, Any]) -> None:
    if not view["enabled"]:
        out.print("review apps: off")
    else:
        ttl = _age(view["ttl_seconds"]) if view["ttl_seconds"] else "never"
        source = view["config_from"] or "none"
        keys = ", ".join(view["config_keys"]) or "none"
        out.print(
            f"review apps: on  max {view['max']}  ttl {ttl}  forks {view['forks']}  "
            f"config from {source}  config {keys}"
        )
    for row in view["review_apps"]:
        fork = f"  fork {row['head_repository'] or '(deleted)'}" if row["fork"] else ""
        out.print(
            f"#{row['number']}  {row['app']}  {row['state']}  {row['sha'][:7]}  "
            f"{_age(row['age_seconds'])}  {row['url']}{fork}"
        )
    if view["enabled"] and not view["review_apps"]:
        out.print("no open pull request has a review app yet")


@app.command("apps:review-apps")
def configure(
    name: AppArg,
    enable: Annotated[bool, typer.Option("--enable/--disable", help="Turn review apps on or off.")],
    max_apps: Annotated[int | None, typer.Option("--max", min=1, max=100, help="Live ones at most.")] = None,
    ttl: Annotated[
        str | None, typer.Option(help="Destroyed after this long idle: 7d, 12h, 0 for never.")
    ] = None,
    config_from: Annotated[
        str | None, typer.Option(help="Start each with this app's config vars (never a fork's).")
    ] = None,
    config: Annotated[list[str] | None, typer.Option(help="KEY=VALUE every review app gets.")] = None,
    forks: Annotated[Forks | None, typer.Option(help="approve: forks wait for review-apps:approve.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn review apps on (one app per pull request) or off (every one is destroyed)."""
    body = {  # None: keep what is stored
        "enabled": enable,
        "max": max_apps,
        "ttl": ttl,
        "config_from": config_from,
        "config": _pairs(config) if config else None,
        "forks": forks.value if forks else None,
    }
    view = api_call(lambda c: c.request("PUT", f"/apps/{name}/review-apps", json=body))
    if as_json:
        return print_json(view)
    show(view)
    return None


@app.command("review-apps")
def review_apps(name: AppArg, as_json: JsonOpt = False) -> None:
    """The app's review apps: pull request, state, commit, age and URL."""
    view = api_call(lambda c: c.get(f"/apps/{name}/review-apps"))
    if as_json:
        return print_json(view)
    show(view)
    return None


@app.command("review-apps:approve")
def approve(
    name: AppArg,
    number: Annotated[int, typer.Argument(min=1, help="The pull request's number.")],
    as_json: JsonOpt = False,
) -> None:
    """Let a fork's pull request build its current commit (a later push needs approval again)."""
    row = api_call(lambda c: c.post(f"/apps/{name}/review-apps/{number}/approve"))
    if as_json:
        return print_json(row)
    out.print(f"#{row['number']} approved at {row['sha'][:7]}: {row['app']} builds next ({row['url']})")
    return None
