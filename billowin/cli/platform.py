"""Platform verbs, acting on this machine: ``setup``, ``up``, ``down``, ``status``,
``build``, ``tokens:create``.

They take their parts from the composition root (``billowin.system.System``)
and the single-box stack, not from the HTTP API (``status`` only reads
``GET /health``).
"""

from __future__ import annotations

from typing import Annotated

import httpx
import typer
from rich.table import Table

from billowin.build.detect import LANGUAGES
from billowin.cli.main import app
from billowin.cli.output import err, fail, out
from billowin.errors import BillowinError
from billowin.settings import Settings
from billowin.stack.install import Installer
from billowin.stack.single_box import Ports, SingleBox, docker_ping
from billowin.stack.tools import Toolset
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
) -> None:
    """Install Docker, HAProxy, Packer, the registry, Nomad, Consul, consul-template and the base image."""
    settings = Settings()
    installer = Installer(settings, err)
    try:
        installer.system_packages()
        installer.hashicorp_tools()
        if not skip_image:
            installer.base_image(lambda: _ensure_engine(settings))
            builder = System(settings).builder
            for language in LANGUAGES:
                with installer.step(f"{language} base image (Packer)"):
                    builder.language_image(language, log=installer.log_line)
    except BillowinError as exc:
        fail(exc)
    err.print(f"[bold green]Setup complete.[/] Cache: {settings.cache_dir}. Next: [bold]make up[/]")


@app.command("up")
def up() -> None:
    """Start the single-box stack and wait until every part is healthy."""
    settings = Settings()
    try:
        box = _box(settings)
        box.start(lambda msg: err.print(f"  {msg}"))
    except BillowinError as exc:
        fail(exc)
    table = Table(title="Billowin is up", show_header=False)
    for name, where in box.endpoints().items():
        table.add_row(name, where)
    out.print(table)


@app.command("down")
def down() -> None:
    """Stop the single-box stack (apps first, then the platform)."""
    settings = Settings()
    try:
        box = _box(settings)
    except BillowinError as exc:
        fail(exc)
    box.stop()
    err.print("[green]Billowin is down.[/]")


@app.command("status")
def status() -> None:
    """Show the health and version of every part of the stack, as GET /health reports it."""
    settings = Settings()
    url = f"http://{settings.api_host}:{settings.api_port}/health"
    try:
        data = httpx.get(url, timeout=10).json()
    except httpx.HTTPError as exc:
        fail(
            BillowinError(
                f"the Billowin API at {url} does not answer ({exc}).",
                hint="start the stack with `make up`.",
            )
        )
    table = Table("component", "ok", "version", "address / error")
    for name, comp in data["components"].items():
        table.add_row(
            name,
            "[green]yes[/]" if comp["ok"] else "[red]no[/]",
            comp.get("version") or "",
            comp.get("error") or comp.get("address") or "",
        )
    out.print(table)
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


@app.command("tokens:create")
def tokens_create(name: Annotated[str, typer.Argument(help="Who or what the token is for.")]) -> None:
    """Create an API token (admin; talks to Consul directly). It is printed once, never stored."""
    settings = Settings()
    try:
        token = System(settings).tokens.create(name)
    except BillowinError as exc:
        fail(exc)
    err.print(f"Token for {name} (shown once; keep it secret):")
    print(token)
