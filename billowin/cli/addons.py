"""Add-ons: ``addons``, ``addons:create``, ``addons:info``, ``addons:attach``, ``addons:detach``,
``addons:destroy``, and their backups: ``pg:backups``, ``pg:backups:capture``,
``pg:backups:restore`` (Postgres and Redis alike).

An add-on is always named through an app it is attached to; where the app has only one add-on
(of the kind the verb is about), its name can be left out.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from billowin.cli.client import ApiClient
from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, err, fail, finish_job, out, print_json, when
from billowin.cli.shell import interact
from billowin.errors import Conflict, InvalidInput, NotFound

AddonArg = Annotated[str, typer.Argument(metavar="ADDON", help="The add-on's name.")]
MaybeAddon = Annotated[
    str | None, typer.Argument(metavar="[ADDON]", help="The add-on; the app's only one if left out.")
]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Follow it until it is done.")]
AS_HELP = "The config var to set (DATABASE_URL for Postgres, REDIS_URL for Redis)."


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def resolve(client: ApiClient, name: str, addon: str | None, kind: str | None = None) -> dict[str, Any]:
    """The add-on ``addon`` of app ``name``; without one, the app's only add-on (of ``kind``)."""
    if addon is not None:
        found: dict[str, Any] = client.get(f"/apps/{name}/addons/{addon}")
        return found
    every = [a for a in client.get(f"/apps/{name}/addons") if kind is None or a["kind"] == kind]
    if not every:
        what = f"{kind} add-on" if kind else "add-on"
        raise NotFound(
            f"{name} has no {what}", hint=f"Create one: `billowin addons:create {name} {kind or 'postgres'}`."
        )
    if len(every) > 1:
        raise Conflict(
            f"{name} has several: {', '.join(a['name'] for a in every)}", hint="Name the one you mean."
        )
    chosen: dict[str, Any] = every[0]
    return chosen


def show(addon: dict[str, Any]) -> None:
    out.print(
        f"[bold]{addon['name']}[/]  {addon['kind']} {addon['version']}  {addon['state']}", highlight=False
    )
    if addon["reason"]:
        out.print(f"  reason:    {addon['reason']}", highlight=False)
    out.print(f"  status:    {addon['status']}", highlight=False)
    out.print(f"  app:       {addon['app']}", highlight=False)
    for att in addon["attachments"]:
        out.print(
            f"  attached:  {att['app']} as {att['var']}{'' if att['linked'] else ' (pending)'}",
            highlight=False,
        )
    if addon["url"]:
        out.print(f"  url:       {addon['url']}", highlight=False)
    out.print(
        f"  node:      {addon['node'] or '(not placed yet)'}  volume {addon['volume']}", highlight=False
    )
    out.print(f"  nomad job: {addon['job']}  created {when(addon['created_at'])}", highlight=False)
    if addon["backups"]:
        newest = addon["backups"][-1]
        out.print(
            f"  backups:   {len(addon['backups'])}, newest {newest['id']} {when(newest['created_at'])}",
            highlight=False,
        )


def _wait_ready(client: ApiClient, name: str, addon: str) -> dict[str, Any]:
    with err.status(f"{addon}: provisioning…", spinner="dots") as status:
        while True:
            found: dict[str, Any] = client.get(f"/apps/{name}/addons/{addon}")
            if found["state"] != "provisioning" and all(a["linked"] for a in found["attachments"]):
                return found
            if found["state"] == "failed":
                return found
            status.update(f"{addon}: {found['state']}…")
            time.sleep(1)


@app.command("addons")
def addons(name: AppArg, as_json: JsonOpt = False) -> None:
    """List the app's add-ons (the ones it created and the ones attached to it)."""
    found = api_call(lambda c: c.get(f"/apps/{name}/addons"))
    if as_json:
        print_json(found)
        return
    if not found:
        out.print(f"{name} has no add-ons: `billowin addons:create {name} postgres` makes one.")
    for addon in found:
        attached = ", ".join(f"{a['app']} as {a['var']}" for a in addon["attachments"])
        out.print(
            f"{addon['name']}  {addon['kind']} {addon['version']}  {addon['status']}  {attached}",
            highlight=False,
        )


@app.command("addons:create")
def create(
    name: AppArg,
    kind: Annotated[str, typer.Argument(metavar="KIND", help="postgres or redis.")],
    addon_name: Annotated[
        str | None, typer.Option("--name", help="The add-on's name (default: APP-KIND).")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="A major version: Postgres 15 or 17, Redis 7 or 8.")
    ] = None,
    as_: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
    wait: WaitOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Create a Postgres or Redis add-on and attach it: its URL becomes a config var (a new release)."""
    body = {"kind": kind, "name": addon_name, "version": version, "as": as_}

    def call(client: ApiClient) -> None:
        made = client.post(f"/apps/{name}/addons", json={k: v for k, v in body.items() if v is not None})
        addon = made["addon"]
        if not wait:
            print_json(made) if as_json else err.print(made["message"])
            return
        err.print(made["message"])
        addon = _wait_ready(client, name, addon["name"])
        if addon["state"] == "failed":
            fail(
                Conflict(
                    f"{addon['name']} could not be made: {addon['reason']}", hint="Destroy it and try again."
                )
            )
        if as_json:
            print_json(addon)
        else:
            err.print(f"[green]{addon['name']} is up[/]; {addon['attachments'][0]['var']} is set on {name}.")
        job_id = addon["attachments"][0]["job"]
        if job_id:
            finish_job(client, name, client.get(f"/apps/{name}/deploys/{job_id}"), True, as_json)

    api_call(call)


@app.command("addons:info")
def info(name: AppArg, addon: MaybeAddon = None, as_json: JsonOpt = False) -> None:
    """How an add-on is: its state, health, attachments, node and backups (never its password)."""
    found = api_call(lambda c: resolve(c, name, addon))
    print_json(found) if as_json else show(found)


@app.command("addons:attach")
def attach(
    name: AppArg,
    addon: AddonArg,
    as_: Annotated[str | None, typer.Option("--as", help=AS_HELP)] = None,
    wait: WaitOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Share another app's add-on with APP: its URL becomes one of APP's config vars."""
    body = {"as": as_} if as_ else {}
    api_call(
        lambda c: finish_job(
            c, name, c.request("PUT", f"/apps/{name}/addons/{addon}/attachment", json=body), wait, as_json
        )
    )


@app.command("addons:detach")
def detach(name: AppArg, addon: AddonArg, wait: WaitOpt = True, as_json: JsonOpt = False) -> None:
    """Stop sharing an add-on with APP: its config var is unset (a new release)."""
    api_call(
        lambda c: finish_job(
            c, name, c.request("DELETE", f"/apps/{name}/addons/{addon}/attachment"), wait, as_json
        )
    )


@app.command("addons:destroy")
def destroy(
    name: AppArg,
    addon: AddonArg,
    confirm: Annotated[str, typer.Option(help="The add-on's name again: its data goes for good.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Destroy an add-on: its Nomad job, its volume (the data), its backups and its config vars."""
    if confirm != addon:
        fail(InvalidInput(f"this deletes {addon}'s data for good", hint=f"Run it with `--confirm {addon}`."))

    def call(client: ApiClient) -> None:
        done = client.request("DELETE", f"/apps/{name}/addons/{addon}", params={"confirm": confirm})
        if as_json:
            print_json(done)
            return
        err.print(f"[green]{addon} is destroyed[/]")
        for job in done["jobs"]:
            finish_job(client, job["app"], job, True, False)

    api_call(call)


def _shell(name: str, addon: str | None, kind: str) -> None:
    found = api_call(lambda c: resolve(c, name, addon, kind))
    if found["kind"] != kind:
        fail(InvalidInput(f"{found['name']} is a {found['kind']} add-on, not {kind}"))
    raise typer.Exit(interact(f"/apps/{name}/addons/{found['name']}/shell", {}))


@app.command("pg:psql")
def psql(name: AppArg, addon: MaybeAddon = None) -> None:
    """psql on the app's Postgres add-on, connected as the app is (piped stdin works too)."""
    _shell(name, addon, "postgres")


@app.command("redis:cli")
def redis_cli(name: AppArg, addon: MaybeAddon = None) -> None:
    """redis-cli on the app's Redis add-on, connected as the app is (piped stdin works too)."""
    _shell(name, addon, "redis")


@app.command("pg:backups")
def backups(name: AppArg, addon: MaybeAddon = None, as_json: JsonOpt = False) -> None:
    """List an add-on's backups (Postgres dumps, Redis RDB files)."""

    def call(client: ApiClient) -> list[dict[str, Any]]:
        found = resolve(client, name, addon, None if addon else "postgres")
        listed: list[dict[str, Any]] = client.get(f"/apps/{name}/addons/{found['name']}/backups")
        return listed

    found = api_call(call)
    if as_json:
        print_json(found)
        return
    if not found:
        out.print(f"no backups yet: `billowin pg:backups:capture {name}` takes one")
    for b in found:
        held = ", ".join(f"{k} {v}" for k, v in b["counts"].items()) or "empty"
        out.print(
            f"{b['id']}  {when(b['created_at'])}  {_size(b['size'])}  {b['trigger']}  ({held})",
            highlight=False,
        )


@app.command("pg:backups:capture")
def capture(name: AppArg, addon: MaybeAddon = None, as_json: JsonOpt = False) -> None:
    """Take a backup now: pg_dump -Fc for Postgres, an RDB file for Redis."""

    def call(client: ApiClient) -> dict[str, Any]:
        found = resolve(client, name, addon, None if addon else "postgres")
        with err.status(f"{found['name']}: backing up…", spinner="dots"):
            made: dict[str, Any] = client.post(f"/apps/{name}/addons/{found['name']}/backups", timeout=3600)
        return made

    made = api_call(call)
    if as_json:
        print_json(made)
    else:
        err.print(f"[green]{made['id']}[/] of {made['addon']}: {_size(made['size'])}")


@app.command("pg:backups:restore")
def restore(
    name: AppArg,
    backup: Annotated[
        str | None, typer.Argument(metavar="[BACKUP]", help="Its id (b001…); the newest if left out.")
    ] = None,
    addon: Annotated[str | None, typer.Option(help="The add-on the backup is of.")] = None,
    into: Annotated[str | None, typer.Option(help="Restore into this add-on of the app instead.")] = None,
    confirm: Annotated[
        str, typer.Option(help="The app's name again: what the add-on holds is replaced.")
    ] = "",
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into its add-on (or --into another), replacing what it holds."""
    if confirm != name:
        fail(
            InvalidInput(
                "a restore replaces what the add-on holds now", hint=f"Run it with `--confirm {name}`."
            )
        )

    def call(client: ApiClient) -> dict[str, Any]:
        found = resolve(client, name, addon, None if addon else "postgres")
        chosen = backup
        if chosen is None:
            listed = client.get(f"/apps/{name}/addons/{found['name']}/backups")
            if not listed:
                raise NotFound(
                    f"{found['name']} has no backups", hint=f"`billowin pg:backups:capture {name}` takes one."
                )
            chosen = listed[-1]["id"]
        with err.status(f"{found['name']}: restoring {chosen}…", spinner="dots"):
            done: dict[str, Any] = client.post(
                f"/apps/{name}/addons/{found['name']}/backups/{chosen}/restore",
                json={"into": into},
                timeout=3600,
            )
        return done

    done = api_call(call)
    if as_json:
        print_json(done)
        return
    held = ", ".join(f"{k} {v}" for k, v in done["counts"].items()) or "nothing"
    if done["verified"]:
        err.print(
            f"[green]{done['backup']} restored into {done['into']}[/] in {done['seconds']}s; "
            f"read back: {held}"
        )
        return
    expected = ", ".join(f"{k} {v}" for k, v in done["expected"].items()) or "nothing"
    err.print(
        f"[bold red]{done['backup']} restored into {done['into']}, but it reads back {held}[/] "
        f"(the backup held {expected})"
    )
    raise typer.Exit(1)
