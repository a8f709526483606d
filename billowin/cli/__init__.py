"""The ``billowin`` command line (typer).

Platform verbs live here and act on this machine: ``setup``, ``up``, ``down``,
``status``, ``build``, ``tokens:create``. App verbs (Heroku-style
``apps:create``, ``config:set``, ``ps:scale``…) talk to the HTTP API; they
live in ``billowin.cli_apps``.
"""

from __future__ import annotations

from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from billowin.build.detect import LANGUAGES
from billowin.cli.apps import register as register_app_verbs
from billowin.cli.client import ApiClient, load_config
from billowin.cli.monitoring import register as register_monitoring_verbs
from billowin.errors import BillowinError
from billowin.settings import Settings
from billowin.stack.install import Installer
from billowin.stack.single_box import Ports, SingleBox, docker_ping
from billowin.stack.tools import Toolset
from billowin.system import System

app = typer.Typer(
    help="Billowin: a self-hosted Heroku on Nomad, Consul, Docker and HAProxy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _fail(exc: BillowinError) -> None:
    console.print(f"[bold red]error:[/] {exc.message}")
    if exc.hint:
        console.print(f"[yellow]what to do:[/] {exc.hint}")
    raise typer.Exit(1)


def _box(settings: Settings) -> SingleBox:
    tools = Toolset.resolve(settings)
    state = settings.state_dir / "single-box"
    if (state / "stack.json").exists():
        return SingleBox.from_manifest(tools, state)
    return SingleBox(tools, Ports.from_settings(settings), state, domain=settings.domain)


@app.command()
def setup(
    skip_image: Annotated[bool, typer.Option(help="Do not build the base Docker image.")] = False,
) -> None:
    """Install Docker, HAProxy, Packer, the registry, Nomad, Consul, consul-template and the base image."""
    settings = Settings()
    installer = Installer(settings, console)
    try:
        installer.system_packages()
        installer.hashicorp_tools()
        if not skip_image:

            def ensure_engine() -> None:
                if not docker_ping():
                    box = SingleBox(
                        Toolset.resolve(settings),
                        Ports.from_settings(settings),
                        settings.state_dir / "single-box",
                    )
                    proc = box.dockerd()
                    console.print("  starting dockerd (no Docker Engine was running)")
                    proc.start()
                    proc.wait_ready(60)

            installer.base_image(ensure_engine)
            builder = System(settings).builder
            for language in LANGUAGES:
                with installer.step(f"{language} base image (Packer)"):
                    builder.language_image(language, log=installer.log_line)
    except BillowinError as exc:
        _fail(exc)
    console.print(f"[bold green]Setup complete.[/] Cache: {settings.cache_dir}. Next: [bold]make up[/]")


@app.command()
def up() -> None:
    """Start the single-box stack and wait until every part is healthy."""
    settings = Settings()
    try:
        box = _box(settings)
        box.start(lambda msg: console.print(f"  {msg}"))
    except BillowinError as exc:
        _fail(exc)
    table = Table(title="Billowin is up", show_header=False)
    for name, where in box.endpoints().items():
        table.add_row(name, where)
    Console().print(table)


@app.command()
def down() -> None:
    """Stop the single-box stack (apps first, then the platform)."""
    settings = Settings()
    try:
        box = _box(settings)
    except BillowinError as exc:
        _fail(exc)
    box.stop()
    console.print("[green]Billowin is down.[/]")


@app.command()
def status() -> None:
    """Show the health and version of every part of the stack, as GET /health reports it."""
    settings = Settings()
    url = f"http://{settings.api_host}:{settings.api_port}/health"
    try:
        data = httpx.get(url, timeout=10).json()
    except httpx.HTTPError as exc:
        console.print(f"[bold red]error:[/] the Billowin API at {url} does not answer ({exc}).")
        console.print("[yellow]what to do:[/] start the stack with `make up`.")
        raise typer.Exit(1) from exc
    table = Table("component", "ok", "version", "address / error")
    for name, comp in data["components"].items():
        table.add_row(
            name,
            "[green]yes[/]" if comp["ok"] else "[red]no[/]",
            comp.get("version") or "",
            comp.get("error") or comp.get("address") or "",
        )
    Console().print(table)
    raise typer.Exit(0 if data["ok"] else 1)


@app.command()
def build(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app's name (a DNS label).")],
    repository: Annotated[str, typer.Argument(help="An https:// URL or a local path.")],
    sha: Annotated[str, typer.Argument(help="The full 40-character commit SHA to build.")],
) -> None:
    """Build REPOSITORY at SHA into an image for APP, streaming the build log."""
    settings = Settings()
    try:
        record = System(settings).builder.build(
            app_name, repository, sha, log=lambda line: Console().print(line, markup=False, highlight=False)
        )
    except BillowinError as exc:
        _fail(exc)
    console.print(f"[green]Built[/] {record.image}@{record.digest} in {record.seconds}s")


@app.command("tokens:create")
def tokens_create(name: Annotated[str, typer.Argument(help="Who or what the token is for.")]) -> None:
    """Create an API token (admin; talks to Consul directly). It is printed once, never stored."""
    settings = Settings()
    try:
        token = System(settings).tokens.create(name)
    except BillowinError as exc:
        _fail(exc)
    console.print(f"Token for {name} (shown once; keep it secret):")
    print(token)


register_app_verbs(app)
register_monitoring_verbs(app, lambda: ApiClient(load_config()).http)


if __name__ == "__main__":
    app()
