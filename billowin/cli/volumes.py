"""Persistent volumes: ``volumes``, ``volumes:add`` and ``volumes:remove``.

A process type with a volume runs only on the node that holds the volume (``ps`` says so), and
its deploys are stop-first: the old instances stop before the new ones start, a short gap in
service, so two releases never write the same files at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from billowin.cli.client import ApiClient
from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, err, finish_job, out, print_json

WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the rollout until it is done.")]


@app.command("volumes")
def volumes(name: AppArg, as_json: JsonOpt = False) -> None:
    """The app's volumes: where each is mounted, and the node that holds it."""
    found = api_call(lambda c: c.get(f"/apps/{name}/volumes"))
    if as_json:
        print_json(found)
        return
    if not found:
        out.print(f"{name} has no volumes: `billowin volumes:add {name} data /data` mounts one.")
    for v in found:
        node = v["node"] or "(placed at the next rollout)"
        out.print(f"{v['name']}  {v['process']}:{v['path']}  node {node}", highlight=False)


@app.command("volumes:add")
def add(
    name: AppArg,
    volume: Annotated[str, typer.Argument(metavar="NAME", help="The volume's name, like data.")],
    path: Annotated[str, typer.Argument(metavar="PATH", help="Where it is mounted, like /data.")],
    process: Annotated[str, typer.Option(help="The process type it is mounted into.")] = "web",
    wait: WaitOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Mount a persistent volume into a process type (a new release; then deploys are stop-first)."""
    body = {"name": volume, "path": path, "process": process}

    def call(c: ApiClient) -> None:
        job = c.post(f"/apps/{name}/volumes", json=body)
        if not as_json:
            err.print(
                f"{process} gets {volume} at {path}: it runs on the node that holds it from now on, "
                "and its deploys stop the old instances before starting new ones."
            )
        finish_job(c, name, job, wait, as_json)

    api_call(call)


@app.command("volumes:remove")
def remove(
    name: AppArg,
    volume: Annotated[str, typer.Argument(metavar="NAME", help="The volume's name.")],
    wait: WaitOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Unmount a volume (a new release). Its files stay until the app is destroyed."""
    api_call(
        lambda c: finish_job(c, name, c.request("DELETE", f"/apps/{name}/volumes/{volume}"), wait, as_json)
    )
