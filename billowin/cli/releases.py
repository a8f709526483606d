"""Releases and deploys: ``releases``, ``rollback``, ``deploy``, ``deploy:status``,
``builds``, ``builds:output``.

A deploy or rollback is a pipeline job the API queues; with ``--wait`` the
command follows its steps and exits non-zero unless it goes live.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, fail, finish_job, out, print_json, when
from billowin.errors import BillowinError


def _cause(release: dict[str, Any]) -> str:
    """Why a release exists (and, if it failed, why it failed)."""
    rollback_of = release.get("rollback_of")
    cause: str = release.get("cause") or (f"rollback to {rollback_of}" if rollback_of else "")
    if release["status"] == "failed" and release.get("description"):
        cause = f"{cause}: {release['description']}" if cause else release["description"]
    return cause


@app.command("releases")
def releases(name: AppArg, as_json: JsonOpt = False) -> None:
    """The app's releases, newest first: SHA, runtime, image, config version, status, when and why."""
    found = api_call(lambda c: c.get(f"/apps/{name}/releases"))
    if as_json:
        return print_json(found)
    table = Table("release", "status", "sha", "runtime", "image", "config", "when", "cause")
    for r in reversed(found):
        table.add_row(
            f"v{r['number']}",
            r["status"],
            (r.get("sha") or "")[:7],
            r.get("runtime") or "-",
            r["image"],
            f"v{r['config_version']}" if r.get("config_version") else "-",
            when(r["created_at"]),
            _cause(r),
        )
    out.print(table)
    return None


@app.command("rollback")
def rollback(
    name: AppArg,
    release: Annotated[str | None, typer.Argument(help="vN; default: the previous live release.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until it is live.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Roll back to an earlier release (its image and its config vars), as a new release."""
    number = None
    if release is not None:
        if not release.removeprefix("v").isdigit():
            fail(
                BillowinError(
                    f"{release!r} is not a release like v3", hint=f"See `billowin releases {name}`."
                )
            )
        number = int(release.removeprefix("v"))
    api_call(
        lambda c: finish_job(
            c, name, c.post(f"/apps/{name}/releases/rollback", json={"release": number}), wait, as_json
        )
    )


@app.command("deploy")
def deploy(
    name: AppArg,
    sha: Annotated[str | None, typer.Option(help="The full commit SHA to build and deploy.")] = None,
    image: Annotated[str | None, typer.Option(help="Or an image that is already built.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow it; exit 1 unless it ends up live and healthy.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a commit (built first) or an image. With --wait, exits non-zero unless it goes live."""
    api_call(
        lambda c: finish_job(
            c, name, c.post(f"/apps/{name}/deploys", json={"sha": sha, "image": image}), wait, as_json
        )
    )


@app.command("deploy:status")
def deploy_status(name: AppArg, job_id: str, wait: bool = True, as_json: JsonOpt = False) -> None:
    """Follow a deploy (or any rollout) the API queued."""
    api_call(lambda c: finish_job(c, name, c.get(f"/apps/{name}/deploys/{job_id}"), wait, as_json))


@app.command("builds")
def builds(name: AppArg, as_json: JsonOpt = False) -> None:
    """Recent deploys and builds of the app (the pipeline's jobs)."""
    found = api_call(lambda c: c.get(f"/apps/{name}/deploys"))
    if as_json:
        return print_json(found)
    table = Table("job", "kind", "state", "sha", "release", "when", "what happened")
    for j in reversed(found):
        table.add_row(
            j["id"],
            j["kind"],
            j["state"],
            j["sha"][:7],
            j.get("release") or "",
            when(j["created_at"]),
            j.get("reason") or j["steps"][-1]["message"],
        )
    out.print(table)
    return None


@app.command("builds:output")
def builds_output(name: AppArg, job_id: str) -> None:
    """A deploy's steps and its full build log."""
    print(api_call(lambda c: c.get(f"/apps/{name}/deploys/{job_id}/log")))
