"""Platform verbs, acting on this machine: ``setup``, ``up``, ``down``, ``status``,
``build``, ``tokens``, ``tokens:create``, ``tokens:revoke`` (``install`` is in
``billowin.cli.install``). ``up --production`` and ``down --production`` run the production
box (``billowin.stack.production``) with Billowin's own supervisor instead of systemd.

They take their parts from the composition root (``billowin.system.System``)
and the single-box stack, not from the HTTP API (``status`` only reads
``GET /health``, with the saved token: its detail is for admins). The token
verbs are for an admin on the Billowin host: they talk to Consul directly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.table import Table

from billowin.apps.tokens import Role, TokenInfo, TokenState, parse_expiry
from billowin.cli.client import load_config
from billowin.cli.install import (
    ADDRESS_HELP,
    DOMAIN_HELP,
    HTTP_PORT_HELP,
    INTERFACE_HELP,
    ROOT_HELP,
    OwnDockerOpt,
    base_images,
    option,
)
from billowin.cli.main import app
from billowin.cli.output import err, fail, out, print_json, when_ago
from billowin.errors import BillowinError, Conflict, InvalidInput
from billowin.settings import Settings
from billowin.stack.install import Installer
from billowin.stack.machine import box_options, production_box, systemd_running, unit_active
from billowin.stack.nomad_ui import served_ui, ui_note
from billowin.stack.production import DEFAULT_ROOT, MANIFEST, ProductionBox
from billowin.stack.single_box import Ports, SingleBox, docker_ping
from billowin.stack.tools import Toolset
from billowin.stack.units import TARGET
from billowin.system import System


def _box(settings: Settings) -> SingleBox:
    tools = Toolset.resolve(settings)
    state = settings.state_dir / "single-box"
    if (state / "stack.json").exists():
        return SingleBox.from_manifest(tools, state)
    return SingleBox(tools, Ports.from_settings(settings), state, domain=settings.domain)


def _ensure_engine(settings: Settings) -> None:
    """Start a dockerd of our own if no Docker Engine answers (the base image needs one)."""
    if not docker_ping():
        box = SingleBox(
            Toolset.resolve(settings),
            Ports.from_settings(settings),
            settings.state_dir / "single-box",
        )
        proc = box.dockerd()
        err.print("  starting dockerd (no Docker Engine was running)")
        proc.start()
        proc.wait_ready(60)


@app.command("setup")
def setup(
    skip_image: Annotated[bool, typer.Option(help="Do not build the base Docker image.")] = False,
    runtimes_for: Annotated[
        list[Path] | None,
        typer.Option(
            "--runtimes-for",
            help="An app's source directory: also build the runtime its version files ask for "
            "(.python-version, engines.node, go.mod…), so its first build starts warm. Repeatable.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Install Docker, HAProxy, Packer, the registry, Nomad, Consul, consul-template and the base image."""
    settings = Settings()
    installer = Installer(settings, err)
    try:
        installer.system_packages()
        installer.hashicorp_tools()
        if not skip_image:
            base_images(installer, settings, lambda: _ensure_engine(settings), runtimes_for or [])
    except BillowinError as exc:
        fail(exc)
    err.print(f"[bold green]Setup complete.[/] Cache: {settings.cache_dir}. Next: [bold]make up[/]")


@app.command("up")
def up(
    production: Annotated[
        bool, typer.Option("--production", help="The production box under --root (durable, ACLs on).")
    ] = False,
    root: Annotated[Path, option(ROOT_HELP)] = DEFAULT_ROOT,
    domain: Annotated[str | None, option(DOMAIN_HELP + " Needed for a new box.", show_default=False)] = None,
    interface: Annotated[str | None, option(INTERFACE_HELP)] = None,
    public_address: Annotated[
        str | None, option(ADDRESS_HELP + " (default: 0.0.0.0, or as installed)")
    ] = None,
    http_port: Annotated[int | None, option(HTTP_PORT_HELP, min=1, max=65535)] = None,
    own_docker: OwnDockerOpt = None,
) -> None:
    """Start the single-box stack (or, with --production, the production box) and wait until
    every part is healthy."""
    settings = Settings()
    given = (domain, interface, public_address, http_port, own_docker)
    try:
        if production:
            options = box_options(
                root,
                domain=domain,
                interface=interface,
                public_address=public_address,
                http_port=http_port,
                own_docker=own_docker,
            )
            _refuse_if_systemd_runs_it("start")
            box: SingleBox = production_box(Toolset.resolve(settings), options)
        elif any(value is not None for value in given) or root != DEFAULT_ROOT:
            raise InvalidInput(
                "--root, --domain, --interface, --public-address, --http-port and --own-docker "
                "are options of the production box",
                hint="Add --production, or leave them out for the development stack.",
            )
        else:
            box = _box(settings)
        box.start(lambda msg: err.print(f"  {msg}"))
    except BillowinError as exc:
        fail(exc)
    table = Table(title="Billowin is up", show_header=False)
    for name, where in box.endpoints().items():
        table.add_row(name, where)
    out.print(table)


@app.command("down")
def down(
    production: Annotated[
        bool, typer.Option("--production", help="Stop the production box under --root.")
    ] = False,
    root: Annotated[Path, option(ROOT_HELP)] = DEFAULT_ROOT,
) -> None:
    """Stop the single-box stack (apps first, then the platform); with --production, the
    production box (its apps stay registered, and come back at the next start)."""
    settings = Settings()
    try:
        if production:
            if not (root / MANIFEST).is_file():
                raise InvalidInput(
                    f"there is no production box under {root}", hint="Give its --root, if it is elsewhere."
                )
            _refuse_if_systemd_runs_it("stop")
            box: SingleBox = ProductionBox.from_root(Toolset.resolve(settings), root.absolute())
        else:
            box = _box(settings)
    except BillowinError as exc:
        fail(exc)
    box.stop()
    err.print("[green]Billowin is down.[/]")


def _refuse_if_systemd_runs_it(verb: str) -> None:
    """Billowin's supervisor and systemd must not both run the box: their processes would
    fight over its ports and data."""
    if systemd_running() and unit_active(TARGET):
        raise Conflict(
            f"systemd runs this production box ({TARGET} is active)",
            hint=f"Use `systemctl {verb} {TARGET}`.",
        )


@app.command("status")
def status() -> None:
    """Show the health and version of every part of the stack, as GET /health reports it."""
    settings = Settings()
    url = f"http://{settings.api_host}:{settings.api_port}/health"
    token = load_config().api_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        data = httpx.get(url, headers=headers, timeout=10).json()
    except (httpx.HTTPError, ValueError) as exc:
        fail(
            BillowinError(
                f"the Billowin API at {url} does not answer ({exc}).",
                hint="start the stack with `make up`.",
            )
        )
    if "components" not in data:  # no token, or not an admin's: the API says only ok or degraded
        out.print(f"Billowin is {data.get('status', 'in an unknown state')}.")
        err.print(
            "[yellow]Log in with an admin token (`billowin login`) to see each component.[/]", highlight=False
        )
        raise typer.Exit(0 if data.get("status") == "ok" else 1)
    table = Table("component", "ok", "version", "address / error")
    for name, comp in data["components"].items():
        table.add_row(
            name,
            "[green]yes[/]" if comp["ok"] else "[red]no[/]",
            comp.get("version") or "",
            comp.get("error") or comp.get("address") or "",
        )
    out.print(table)
    # Whether the Nomad the API uses serves its web UI (a Nomad built from source may not).
    nomad_addr = data["components"].get("nomad", {}).get("address") or settings.nomad_addr
    out.print(f"Nomad {nomad_addr}: {ui_note(served_ui(nomad_addr))}", highlight=False)
    raise typer.Exit(0 if data["ok"] else 1)


@app.command("build")
def build(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app's name (a DNS label).")],
    repository: Annotated[str, typer.Argument(help="An https:// URL or a local path.")],
    sha: Annotated[str, typer.Argument(help="The full 40-character commit SHA to build.")],
) -> None:
    """Build REPOSITORY at SHA into an image for APP, streaming the build log."""
    settings = Settings()
    try:
        record = System(settings).builder.build(
            app_name, repository, sha, log=lambda line: out.print(line, markup=False, highlight=False)
        )
    except BillowinError as exc:
        fail(exc)
    err.print(f"[green]Built[/] {record.image}@{record.digest} in {record.seconds}s")


def tokens_table(tokens: list[TokenInfo], now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table("id", "name", "role", "apps", "expires", "created", "state", title="API tokens")
    for t in tokens:
        expires = f"{t.expires_at.astimezone():%Y-%m-%d %H:%M}" if t.expires_at else "never"
        state = {TokenState.ACTIVE: "[green]active[/]", TokenState.EXPIRED: "[yellow]expired[/]"}.get(
            t.state, "[red]revoked[/]"
        )
        table.add_row(
            t.id,
            t.name,
            t.role.value,
            ", ".join(t.apps) or "(all)",
            expires,
            when_ago(t.created_at.isoformat(), now),
            state,
        )
    return table


def host_settings() -> Settings:
    """The settings for talking to this host's Consul directly (the token verbs).

    On a production box (``BILLOWIN_ROOT``, default /var/lib/billowin, holds ``production.json``)
    they are the box's: its addresses and the API's scoped Consul token, read from the box's
    0600 secrets, so root can make the first API token without copying any secret around.
    ``BILLOWIN_CONSUL_TOKEN`` (or ``CONSUL_HTTP_TOKEN``) set by hand wins.
    """
    settings = Settings()
    if settings.consul_token is None and (settings.production_root / MANIFEST).is_file():
        try:
            return ProductionBox.from_root(Toolset.resolve(settings), settings.production_root).settings
        except (BillowinError, OSError, ValueError, KeyError) as exc:
            fail(BillowinError(f"cannot read the production box at {settings.production_root}: {exc}"))
    return settings


@app.command("tokens")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List API tokens: id, name, role, apps, expiry (admin; talks to Consul). Never the secrets."""
    try:
        found = [TokenInfo.of(r) for r in System(host_settings()).tokens.all()]
    except BillowinError as exc:
        fail(exc)
    if as_json:
        return print_json([t.model_dump(mode="json") for t in found])
    if not found:
        err.print("No tokens yet. Make one: `billowin tokens:create NAME`.")
        return None
    out.print(tokens_table(found))
    return None


@app.command("tokens:create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what the token is for.")],
    role: Annotated[
        Role, typer.Option(help="admin: everything; deploy: change and run its apps; read: look at them.")
    ] = Role.ADMIN,
    apps: Annotated[
        list[str] | None, typer.Option("--app", help="An app a deploy or read token is for (repeatable).")
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="When it stops working: 30d, 12h, 2w, 2026-12-31 (UTC); default never.")
    ] = None,
) -> None:
    """Create an API token (admin; talks to Consul directly). It is printed once, never stored."""
    settings = host_settings()
    try:
        expires_at = parse_expiry(expires) if expires else None
        record, token = System(settings).access.issue(name, role=role, apps=apps or [], expires_at=expires_at)
    except BillowinError as exc:
        fail(exc)
    scope = f"{record.role.value} on {', '.join(record.apps)}" if record.apps else "admin"
    until = f", until {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else ""
    err.print(f"Token {record.id} for {name} ({scope}{until}); shown once, keep it secret:", highlight=False)
    print(token)


@app.command("tokens:revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id, from `billowin tokens`.")],
) -> None:
    """Revoke an API token: it, and its dashboard sessions, stop working at once (admin; talks to Consul)."""
    try:
        record = System(host_settings()).access.revoke(token_id)
    except BillowinError as exc:
        fail(exc)
    err.print(f"[green]Revoked[/] token {record.id} ({record.name}).", highlight=False)
