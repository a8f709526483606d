"""The app verbs: ``apps``, ``apps:create``, ``apps:info``, ``apps:destroy``, ``open``.

Like every app verb, each is a thin call to the HTTP API (``billowin.cli.client``);
``--json`` prints what the API answered, for scripts.
"""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer
from rich.table import Table

from billowin.apps.store import DeployOn
from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, err, out, print_json


@app.command("apps")
def apps_list(as_json: JsonOpt = False) -> None:
    """List apps."""
    apps = api_call(lambda c: c.get("/apps"))
    if as_json:
        return print_json(apps)
    table = Table("app", "url", "repository", "branch", "deploys on")
    for a in apps:
        table.add_row(a["name"], a["url"], a["repository"], a["branch"], a["deploy_on"])
    out.print(table)
    return None


@app.command("apps:create")
def apps_create(
    name: Annotated[str, typer.Argument(help="A DNS label: the app answers at <name>.<domain>.")],
    repository: Annotated[str, typer.Option(help="What to build: an https:// URL or a path.")],
    github_repo: Annotated[str | None, typer.Option(help="owner/name on GitHub, for webhooks.")] = None,
    branch: Annotated[str, typer.Option(help="The branch to follow.")] = "main",
    deploy_on: Annotated[DeployOn, typer.Option(help="push: every push; ci: after CI passes.")] = (
        DeployOn.PUSH
    ),
    ci_workflow: Annotated[str | None, typer.Option(help="Only this GitHub Actions workflow.")] = None,
    domain: Annotated[list[str] | None, typer.Option(help="A custom domain (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an app that follows a repository's branch."""
    body = {
        "name": name,
        "repository": repository,
        "github_repo": github_repo,
        "branch": branch,
        "deploy_on": deploy_on.value,
        "ci_workflow": ci_workflow,
        "domains": domain or [],
    }
    info = api_call(lambda c: c.post("/apps", json=body))
    if as_json:
        return print_json(info)
    err.print(f"[green]Created[/] {name}: {info['url']}")
    err.print(
        f"Deploy: `billowin deploy {name} --sha <commit> --wait`, or a GitHub webhook to /hooks/github."
    )
    return None


@app.command("apps:info")
def apps_info(name: AppArg, as_json: JsonOpt = False) -> None:
    """An app's URL, current release and processes."""
    info = api_call(lambda c: c.get(f"/apps/{name}"))
    if as_json:
        return print_json(info)
    release = info.get("release") or {}
    table = Table(show_header=False, title=f"=== {name}")
    table.add_row("URL", info["url"])
    table.add_row("Repository", f"{info['github_repo'] or info['repository']} ({info['branch']})")
    table.add_row("Deploys on", info["deploy_on"])
    table.add_row("Domains", ", ".join(info["domains"]) or "-")
    table.add_row("Release", f"v{release['number']} {release['image']}" if release else "not deployed")
    for p in info["processes"]:
        table.add_row(f"Process {p['process']}", f"{p['running']}/{p['desired']} running")
    out.print(table)
    return None


@app.command("apps:destroy")
def apps_destroy(
    name: AppArg,
    confirm: Annotated[str, typer.Option(help="The app's name again, to confirm.")] = "",
) -> None:
    """Destroy an app: its instances, routes, images, config vars and history."""
    if confirm != name:
        confirm = typer.prompt(f"This destroys {name} for good. Type its name to confirm")
    api_call(lambda c: c.request("DELETE", f"/apps/{name}", params={"confirm": confirm}))
    err.print(f"[green]Destroyed[/] {name}.")


@app.command("open")
def open_app(name: AppArg) -> None:
    """Open the app in a browser (prints its URL)."""
    info = api_call(lambda c: c.get(f"/apps/{name}"))
    print(info["url"])
    webbrowser.open(info["url"])
