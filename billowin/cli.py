"""The ``billowin`` command line (typer).

Platform verbs live here: ``setup``, ``up``, ``down``, ``status``. App verbs
(Heroku-style ``apps:create``, ``config:set``, ``ps:scale``…) call the same
library code as the HTTP API.
"""

from __future__ import annotations

from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from billowin.adapters.consul import ConsulRegistry
from billowin.adapters.docker import DockerEngine, Registry
from billowin.adapters.nomad import NomadScheduler
from billowin.adapters.packer import Packer
from billowin.apps import App, AppStore, DeployOn
from billowin.auth import TokenStore
from billowin.build import Builder
from billowin.deploy import Deployer
from billowin.detect import LANGUAGES
from billowin.errors import BillowinError
from billowin.settings import Settings
from billowin.stack.install import Installer
from billowin.stack.single_box import Ports, SingleBox, docker_ping
from billowin.stack.tools import Toolset

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


def _builder(settings: Settings) -> Builder:
    tools = Toolset.resolve(settings)
    return Builder(
        settings, Packer(str(tools.packer), settings.packer_dir), DockerEngine(settings), Registry(settings)
    )


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
            builder = _builder(settings)
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
        record = _builder(settings).build(
            app_name, repository, sha, log=lambda line: Console().print(line, markup=False, highlight=False)
        )
    except BillowinError as exc:
        _fail(exc)
    console.print(f"[green]Built[/] {record.image}@{record.digest} in {record.seconds}s")


@app.command("apps:create")
def apps_create(
    name: Annotated[str, typer.Argument(help="The app's name: a DNS label, served at <name>.<domain>.")],
    repository: Annotated[str, typer.Option(help="What to build: an https:// URL or a local path.")],
    github_repo: Annotated[str | None, typer.Option(help="owner/name on GitHub, to match webhooks.")] = None,
    branch: Annotated[str, typer.Option(help="The branch to follow.")] = "main",
    deploy_on: Annotated[
        DeployOn, typer.Option(help="push: every push deploys; ci: wait for CI.")
    ] = DeployOn.PUSH,
    ci_workflow: Annotated[str | None, typer.Option(help="Only this GitHub Actions workflow counts.")] = None,
    domain: Annotated[list[str] | None, typer.Option(help="A custom domain (repeatable).")] = None,
) -> None:
    """Create an app that follows a repository's branch."""
    settings = Settings()
    try:
        new = App(
            name=name,
            repository=repository,
            github_repo=github_repo,
            branch=branch,
            deploy_on=deploy_on,
            ci_workflow=ci_workflow,
            domains=domain or [],
        )
        AppStore(ConsulRegistry(settings)).create(new)
    except ValueError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    except BillowinError as exc:
        _fail(exc)
    console.print(f"[green]Created[/] {name}: http://{name}.{settings.domain}:{settings.router_port}")
    console.print(
        f"Point a GitHub webhook at {settings.public_url or '<public url>'}/hooks/github "
        "(events: push, workflow_run)."
    )


@app.command("apps")
def apps_list() -> None:
    """List apps and the branch each follows."""
    settings = Settings()
    try:
        apps = AppStore(ConsulRegistry(settings)).all()
    except BillowinError as exc:
        _fail(exc)
    table = Table("app", "repository", "branch", "deploys on")
    for a in apps:
        table.add_row(a.name, a.github_repo or a.repository, a.branch, a.deploy_on.value)
    Console().print(table)


@app.command("tokens:create")
def tokens_create(name: Annotated[str, typer.Argument(help="Who or what the token is for.")]) -> None:
    """Create an API token (admin; talks to Consul directly). It is printed once, never stored."""
    settings = Settings()
    try:
        token = TokenStore(ConsulRegistry(settings)).create(name)
    except BillowinError as exc:
        _fail(exc)
    console.print(f"Token for {name} (shown once; keep it secret):")
    print(token)


def _deployer(settings: Settings) -> Deployer:
    return Deployer(settings, NomadScheduler(settings), ConsulRegistry(settings))


@app.command("releases")
def releases(app_name: Annotated[str, typer.Argument(metavar="APP")]) -> None:
    """List an app's releases, newest first."""
    settings = Settings()
    try:
        history = _deployer(settings).releases.list(app_name)
    except BillowinError as exc:
        _fail(exc)
    table = Table("release", "status", "image", "when", "note")
    for r in reversed(history):
        note = f"rollback to {r.rollback_of}" if r.rollback_of else r.description
        table.add_row(r.name, r.status.value, r.image, f"{r.created_at:%Y-%m-%d %H:%M:%S}", note)
    Console().print(table)


@app.command("rollback")
def rollback(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    release: Annotated[str | None, typer.Argument(help="vN; default: the previous live release.")] = None,
) -> None:
    """Roll APP back to an earlier release (its image, process types and domains), as a new release."""
    settings = Settings()
    number = None
    if release is not None:
        if not release.removeprefix("v").isdigit():
            console.print(f"[bold red]error:[/] {release!r} is not a release like v3")
            raise typer.Exit(1)
        number = int(release.removeprefix("v"))
    try:
        result = _deployer(settings).rollback(app_name, number, progress=lambda m: console.print(f"  {m}"))
    except BillowinError as exc:
        _fail(exc)
    if result.status.value != "live":
        console.print(f"[bold red]{result.name} failed:[/] {result.description}")
        raise typer.Exit(1)
    console.print(f"[green]{app_name} {result.name} is live[/] ({result.description})")


if __name__ == "__main__":
    app()
