"""Config vars: ``config``, ``config:set``, ``config:unset``.

A change is rolled out as a new release; ``--wait`` (the default) follows it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from billowin.cli.client import ApiClient
from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, err, fail, finish_job, out, print_json
from billowin.config.vars import parse_assignments
from billowin.errors import BillowinError

WaitOpt = Annotated[bool, typer.Option(help="Wait until the new release is live.")]


@app.command("config")
def config(
    name: AppArg,
    reveal: Annotated[bool, typer.Option("--reveal", help="Also print the values.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The app's config var names (values only with --reveal)."""
    found = api_call(lambda c: c.get(f"/apps/{name}/config", params={"reveal": reveal}))
    if as_json:
        return print_json(found)
    err.print(f"=== {name} config vars (version {found['version']})")
    for key, value in found["values"].items():
        out.print(f"{key}: {value if reveal else '(hidden; --reveal shows it)'}", markup=False)
    return None


def _change(name: str, set_: dict[str, str], unset: list[str], wait: bool, as_json: bool) -> None:
    def call(c: ApiClient) -> None:
        changed = c.request("PATCH", f"/apps/{name}/config", json={"set": set_, "unset": unset})
        err.print(f"{name}: config version {changed['version']}; rolling it out as a new release")
        finish_job(c, name, changed["job"], wait, as_json)

    api_call(call)


@app.command("config:set")
def config_set(
    name: AppArg,
    assignments: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...")],
    wait: WaitOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Set config vars and roll them out as a new release."""
    try:
        values = parse_assignments(assignments)
    except BillowinError as exc:
        fail(exc)
    _change(name, values, [], wait, as_json)


@app.command("config:unset")
def config_unset(
    name: AppArg,
    keys: Annotated[list[str], typer.Argument(metavar="KEY...")],
    wait: WaitOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Remove config vars and roll that out as a new release."""
    _change(name, {}, keys, wait, as_json)
