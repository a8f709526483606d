"""``billowin install``: make this machine (Debian 12, as root) a production box run by systemd.

Steps, each printed as it runs; rerunning it upgrades configurations and units in place and
keeps every piece of data:

1. Debian packages and the HashiCorp tools (``billowin setup``'s ``Installer``).
2. When systemd runs the machine: stop the box's units if they run (an upgrade), stop
   Debian's own ``docker-registry.service`` (it listens on the box's registry port), and
   start ``docker.service`` unless the box runs an engine of its own.
3. Start the box once with Billowin's supervisor: the first time, this bootstraps the ACLs and
   makes every component's token; then build the base images (unless ``--skip-image``),
   and stop it.
4. Write the units (:mod:`billowin.stack.units`), then ``systemctl daemon-reload`` and
   ``systemctl enable --now billowin.target``, and wait for the API to answer.
5. Print the DNS records to create and where the admin tokens are.

The options also come from ``BILLOWIN_INSTALL_*`` variables, so that ``make install`` passes
them without a shell ever reading them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from billowin.build.detect import LANGUAGES, detect
from billowin.cli.main import app
from billowin.cli.output import err, fail, out
from billowin.errors import BillowinError, InstallError, InvalidInput, ServiceError
from billowin.settings import Settings
from billowin.stack.cluster import ClusterNode
from billowin.stack.install import Installer
from billowin.stack.join import join_facts, write_join_secrets
from billowin.stack.machine import (
    BoxOptions,
    ClusterOptions,
    Run,
    box_options,
    cluster_node,
    cluster_options,
    production_box,
    systemctl,
    systemd_running,
    unit_active,
    unit_enabled,
)
from billowin.stack.production import API_HOSTNAME, DEFAULT_ROOT, ProductionBox
from billowin.stack.single_box import docker_ping
from billowin.stack.tools import Toolset
from billowin.stack.units import SYSTEM_DOCKER, TARGET, UNIT_DIR, write_units
from billowin.system import System

# Debian's docker-registry package starts its own registry on :5000, the box's registry port.
DEBIAN_REGISTRY = "docker-registry.service"
API_WAIT = 180.0  # seconds for the API to answer once systemd has started the units

DOMAIN_HELP = "Apps answer at <app>.DOMAIN, the API at billowin.DOMAIN."
INTERFACE_HELP = "Bind the router on this interface's IPv4 address (e.g. eth0)."
ADDRESS_HELP = "Bind the router on this IPv4 address (0.0.0.0: every address, e.g. behind a NAT)."
ROOT_HELP = "Where the box keeps all its state."
HTTP_PORT_HELP = "The router's HTTP port (default: 80, or as installed)."


def option(help_text: str, env: str | None = None, **kw: Any) -> Any:
    """A typer option; with ``env``, also read from ``BILLOWIN_INSTALL_<env>`` (for `make install`)."""
    return typer.Option(help=help_text, envvar=f"BILLOWIN_INSTALL_{env}" if env else None, **kw)


OwnDockerOpt = Annotated[
    bool | None,
    typer.Option(
        "--own-docker/--system-docker",
        help="Run a Docker Engine of the box's own, or use the system's docker.service "
        "(default: the system's, or as installed).",
        show_default=False,
    ),
]


PRIVATE_INTERFACE_HELP = (
    "A cluster node: the interface of the private network the nodes share (its agents and apps' "
    "ports listen there). Alone, this makes the box the cluster's first server."
)
JOIN_HELP = "Join the cluster whose first server has this private address (with --join-secrets)."
JOIN_SECRETS_HELP = (
    "The file `billowin join-secrets` wrote on the first server (copy it here; delete it after)."
)


@app.command("install")
def install(
    domain: Annotated[str | None, option(DOMAIN_HELP, "DOMAIN", show_default=False)] = None,
    interface: Annotated[str | None, option(INTERFACE_HELP, "INTERFACE")] = None,
    public_address: Annotated[str | None, option(ADDRESS_HELP, "PUBLIC_ADDRESS")] = None,
    root: Annotated[Path, option(ROOT_HELP, "ROOT")] = DEFAULT_ROOT,
    http_port: Annotated[int | None, option(HTTP_PORT_HELP, "HTTP_PORT", min=1, max=65535)] = None,
    own_docker: OwnDockerOpt = None,
    unit_dir: Annotated[Path, option("Where to write the systemd units (for tests).")] = UNIT_DIR,
    skip_image: Annotated[bool, option("Do not build the base Docker images.")] = False,
    private_interface: Annotated[str | None, option(PRIVATE_INTERFACE_HELP, "PRIVATE_INTERFACE")] = None,
    private_address: Annotated[
        str | None, option("The node's address on the private network (default: the interface's).")
    ] = None,
    join: Annotated[str | None, option(JOIN_HELP, "JOIN")] = None,
    join_secrets: Annotated[Path | None, option(JOIN_SECRETS_HELP, "JOIN_SECRETS")] = None,
    build: Annotated[bool, option("A joining node: run builds here too (a build node).")] = False,
    node_name: Annotated[str | None, option("The node's name (default: the host name).")] = None,
) -> None:
    """Install a production box run by systemd (Debian 12, as root); rerun it to upgrade in place.

    With --private-interface, the box is the first server of a cluster; with --join and
    --join-secrets too, a node joining that cluster (README, "Clusters")."""
    try:
        cluster = cluster_options(
            private_interface=private_interface,
            private_address=private_address,
            join=join,
            join_secrets=join_secrets,
            build=build,
            name=node_name,
        )
        if cluster is not None and cluster.join_secrets is not None and domain is None:
            domain = join_facts(cluster.join_secrets)["domain"]
        options = box_options(
            root,
            domain=domain,
            interface=interface,
            public_address=public_address,
            http_port=http_port,
            own_docker=own_docker,
            need_address=True,
        )
        _require_root()
        box = _install(options, unit_dir, skip_image=skip_image, cluster=cluster)
    except BillowinError as exc:
        fail(exc)
    _summary(box, unit_dir)


def _install(
    options: BoxOptions, unit_dir: Path, *, skip_image: bool, cluster: ClusterOptions | None = None
) -> ProductionBox:
    settings = Settings()
    installer = Installer(settings, err)
    installer.system_packages()
    installer.hashicorp_tools()
    tools = Toolset.resolve(settings)
    box = production_box(tools, options) if cluster is None else cluster_node(tools, options, cluster)
    if isinstance(box, ClusterNode) and not box.build:
        skip_image = True  # only build nodes build
    if systemd_running() and unit_dir == UNIT_DIR:
        prepare_systemd(box, installer)
    elif not box.own_docker and not docker_ping():
        raise ServiceError(
            "docker",
            "no Docker Engine answers on /var/run/docker.sock, and systemd is not here to start one",
            hint="Start the Docker Engine, or install with --own-docker (an engine of the box's own).",
        )
    with installer.step(f"production box under {box.root}: first start (ACLs and tokens)"):
        box.start(lambda msg: err.print(f"  {msg}", highlight=False))
    try:
        if not skip_image:
            with docker_host(box.docker_host):
                base_images(Installer(box.settings, err), box.settings, ensure_engine=lambda: None)
    finally:
        with installer.step("production box: stopped, for systemd to start"):
            box.stop()
    install_units(box, unit_dir, installer, systemd=systemd_running())
    return box


def _require_root() -> None:
    if os.geteuid() != 0:
        raise InstallError(
            "`billowin install` sets up system services, and must run as root",
            hint="Run it with sudo (`sudo .venv/bin/billowin install ...`, or `sudo make install ...`).",
        )


def prepare_systemd(box: ProductionBox, installer: Installer, run: Run = systemctl) -> None:
    """Make way for the supervisor's first start: stop the box's units (an upgrade), stop Debian's
    registry (same port), and start the system's Docker Engine if the box uses it."""
    if unit_active(TARGET, run):
        with installer.step(f"stopping {TARGET} (upgrade in place)"):
            run("stop", TARGET)
    if unit_enabled(DEBIAN_REGISTRY, run) or unit_active(DEBIAN_REGISTRY, run):
        with installer.step(f"disabling Debian's {DEBIAN_REGISTRY} (it takes port {box.ports.registry})"):
            run("disable", "--now", DEBIAN_REGISTRY)
    if not box.own_docker:
        with installer.step(f"{SYSTEM_DOCKER}: enabled and started"):
            run("enable", "--now", SYSTEM_DOCKER)


def install_units(
    box: ProductionBox,
    unit_dir: Path,
    installer: Installer,
    *,
    systemd: bool,
    system_dir: Path = UNIT_DIR,
    run: Run = systemctl,
    wait: Callable[[ProductionBox], None] | None = None,
) -> list[str]:
    """Write the units into ``unit_dir``; when that is the directory systemd reads and systemd
    runs this machine, reload it and start the box. Returns the unit files changed."""
    with installer.step(f"systemd units in {unit_dir}"):
        changed = write_units(box, unit_dir)
        err.print(f"  {', '.join(changed) + ' written' if changed else 'unchanged'}", highlight=False)
    if wait is None and all(proc.name != "api" for proc in box.plan()):
        wait = lambda _box: None  # noqa: E731 - a joining node runs no API to wait for
    if unit_dir != system_dir:
        err.print(f"[yellow]The units are in {unit_dir}, not {system_dir}: systemd was not told.[/]")
    elif not systemd:
        err.print(
            "[yellow]systemd is not this machine's init (there is no /run/systemd/system): the units "
            "are written, not enabled. Meanwhile, run the box with `billowin up --production`.[/]"
        )
    else:
        with installer.step(f"systemctl daemon-reload; systemctl enable --now {TARGET}"):
            run("daemon-reload")
            run("enable", "--now", TARGET)
        with installer.step("the API answers, started by systemd"):
            (wait or wait_for_api)(box)
    return changed


def wait_for_api(box: ProductionBox, timeout: float = API_WAIT) -> None:
    ready = box.api().ready
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceError(
                "api",
                f"does not answer on 127.0.0.1:{box.ports.api} {timeout:.0f}s after systemd started it",
                hint="See `systemctl status 'billowin-*'` and `journalctl -u 'billowin-*'`.",
            )
        time.sleep(1)


@contextmanager
def docker_host(host: str) -> Iterator[None]:
    """Point the docker CLI and Packer, which this process runs for the base images, at the
    box's engine (its own one has its socket under the box's root)."""
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before


def base_images(
    installer: Installer,
    settings: Settings,
    ensure_engine: Callable[[], None],
    runtimes_for: Sequence[Path] = (),
) -> None:
    """The base image and each language's default runtime image, as builds start from them;
    and the runtime images the source trees ``runtimes_for`` ask for (their version files)."""
    installer.base_image(ensure_engine)
    images = System(settings).builder.packer_images
    for language in LANGUAGES:
        with installer.step(f"{language} base image, the default runtime (Packer)"):
            images.language_image(language, installer.log_line)
    for src in runtimes_for:
        language = detect(src).language
        if language not in LANGUAGES:
            continue  # a Dockerfile app brings its own runtime
        with installer.step(f"{language} base image for {src}"):
            ref, chosen = images.language_image(language, installer.log_line, src)
            installer.log_line(f"{src}: {ref} ({chosen.asked})")


def dns_records(box: ProductionBox) -> list[tuple[str, str]]:
    """The A records the box needs: the API's name and a wildcard for the apps."""
    target = box.public_address if box.public_address != "0.0.0.0" else "<this machine's public IPv4 address>"
    return [(f"{API_HOSTNAME}.{box.domain}", target), (f"*.{box.domain}", target)]


def _summary(box: ProductionBox, unit_dir: Path) -> None:
    if isinstance(box, ClusterNode) and not box.bootstrap:
        servers = ", ".join(box.servers)
        err.print(f"[bold green]{box.name} has joined the cluster[/] ({box.host}; servers {servers}).")
        out.print(
            f"Its router answers every app of {box.domain}: add {box.public_address} to the "
            f'round-robin A records of *.{box.domain} (README, "DNS for a cluster").',
            highlight=False,
        )
        out.print(f"State: {box.root}; units: {unit_dir}/billowin-*.service and {TARGET}", highlight=False)
        return
    err.print("[bold green]Billowin is installed.[/]")
    out.print("Create these DNS records:", highlight=False)
    for name, target in dns_records(box):
        out.print(f"  {name:<30} A  {target}", highlight=False)
    port = "" if box.ports.router_http == 80 else f":{box.ports.router_http}"
    secrets = box.layout.secrets
    for line in (
        f"API: http://{API_HOSTNAME}.{box.domain}{port}; apps at http://<app>.{box.domain}{port}",
        f"Admin tokens of Consul and Nomad (0600): {secrets}/consul-bootstrap.token, nomad-bootstrap.token",
        f"State: {box.root}; units: {unit_dir}/billowin-*.service and {TARGET}",
        f"Status and logs: `systemctl status {TARGET}`, `journalctl -u 'billowin-*'`",
    ):
        out.print(line, highlight=False)


@app.command("join-secrets")
def join_secrets_command(
    file: Annotated[Path, typer.Argument(help="Where to write them (mode 0600).", show_default=False)],
    server: Annotated[
        bool, typer.Option("--server/--client", help="For a new server (three make Raft survive a loss).")
    ] = False,
    root: Annotated[Path, option(ROOT_HELP, "ROOT")] = DEFAULT_ROOT,
) -> None:
    """On a cluster's server: write what a new node needs to join (install --join --join-secrets)."""
    try:
        _require_root()
        box = ProductionBox.from_root(Toolset.resolve(Settings()), root.absolute())
        if not isinstance(box, ClusterNode) or not box.server:
            raise InvalidInput(
                f"the box under {root} is not a server of a cluster",
                hint="Run this on the cluster's first server (`billowin install --private-interface …`).",
            )
        names = write_join_secrets(box.secrets, box.join_facts(), file, server=server)
    except (BillowinError, OSError, ValueError, KeyError) as exc:
        fail(
            exc
            if isinstance(exc, BillowinError)
            else InvalidInput(f"cannot read the box under {root}: {exc}")
        )
    err.print(f"Wrote {file}: {len(names)} secrets for a new {'server' if server else 'client'} (0600).")
    out.print(
        "Copy it to the new node (scp), then there: `billowin install --join "
        f"{box.host} --join-secrets {file.name} --private-interface <its private interface> "
        "--interface <its public interface>`, and delete the file.",
        highlight=False,
    )
