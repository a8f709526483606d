"""What ``billowin install`` and ``billowin up --production`` need to know about this machine.

* The options of a production box, checked before anything is installed or started:
  its domain, the address the router binds (given, or read from an interface with
  ``ip -j addr``), its HTTP port, its root. A box already installed under that root
  keeps what its manifest says for every option not given again.
* Whether systemd runs this machine (``/run/systemd/system`` exists only when it is PID 1),
  and ``systemctl``, always with an argv (no shell), for the units of
  :mod:`billowin.stack.units`.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from billowin.errors import ConfigError, InvalidInput, ServiceError
from billowin.names import check_domain, is_app_name, normalize_domain
from billowin.stack.acl import Secrets
from billowin.stack.cluster import ClusterNode, join_options
from billowin.stack.join import read_join_secrets
from billowin.stack.production import MANIFEST, ProductionBox
from billowin.stack.single_box import Ports
from billowin.stack.tools import Toolset
from billowin.stack.units import unit_path

SYSTEMD_RUN_DIR = Path("/run/systemd/system")
OWN_CONTAINERD_SOCKET = "run/docker/containerd/containerd.sock"  # under a box's root
IpAddr = Callable[[], str]  # the output of `ip -j addr`
Run = Callable[..., "subprocess.CompletedProcess[str]"]  # systemctl(*args, check=...)


@dataclass(frozen=True)
class BoxOptions:
    """A production box's options as given; None keeps what the box's manifest says."""

    root: Path
    domain: str | None = None
    public_address: str | None = None
    http_port: int | None = None
    own_docker: bool | None = None

    @property
    def installed(self) -> bool:
        return (self.root / MANIFEST).is_file()


def box_options(
    root: Path,
    *,
    domain: str | None = None,
    interface: str | None = None,
    public_address: str | None = None,
    http_port: int | None = None,
    own_docker: bool | None = None,
    need_address: bool = False,
    ip_addr: IpAddr | None = None,
) -> BoxOptions:
    """Check every option; a new box (no manifest under ``root``) needs a domain, and an address
    too when ``need_address`` (``billowin install``: the DNS records point at it)."""
    root = root.absolute()
    unit_path(root)  # the units name paths under it: refuse what systemd would misread, now
    # A socket's path has room for 107 bytes; the deepest is the own engine's containerd's.
    if len(str(root / OWN_CONTAINERD_SOCKET).encode()) > 107:
        raise InvalidInput(
            f"{root} is too long a path for the sockets under it (containerd's would not fit)",
            hint="Give a shorter --root, like /var/lib/billowin.",
        )
    if interface is not None and public_address is not None:
        raise InvalidInput(
            "--interface and --public-address both say where the router listens",
            hint="Give one of them.",
        )
    if interface is not None:
        public_address = interface_ipv4(interface, (ip_addr or read_ip_addr)())
    options = BoxOptions(
        root=root,
        domain=_domain(domain) if domain is not None else None,
        public_address=check_ipv4(public_address) if public_address is not None else None,
        http_port=_port(http_port) if http_port is not None else None,
        own_docker=own_docker,
    )
    if not options.installed:
        if options.domain is None:
            raise InvalidInput(
                f"there is no production box under {root} yet, and a new one needs a domain",
                hint="Add --domain, e.g. --domain apps.example.com: apps answer at <app>.apps.example.com.",
            )
        if need_address and options.public_address is None:
            raise InvalidInput(
                "a new production box needs the address its router listens on",
                hint="Add --interface eth0 (its IPv4 address is used) or --public-address 203.0.113.7 "
                "(0.0.0.0: every address, e.g. behind a NAT).",
            )
    return options


@dataclass(frozen=True)
class ClusterOptions:
    """A cluster node's options: its private interface and address; with ``join``, the first
    server's private address and the join secrets it wrote (``billowin join-secrets``)."""

    interface: str
    address: str
    name: str
    join: str | None = None
    join_secrets: Path | None = None
    build: bool = False


def cluster_options(
    *,
    private_interface: str | None,
    private_address: str | None = None,
    join: str | None = None,
    join_secrets: Path | None = None,
    build: bool = False,
    name: str | None = None,
    ip_addr: IpAddr | None = None,
) -> ClusterOptions | None:
    """None for a single box; else a cluster node's options, each checked."""
    if not any((private_interface, private_address, join, join_secrets, build)):
        return None
    if private_interface is None:
        raise InvalidInput(
            "a cluster node needs the interface of the network the nodes share",
            hint="Add --private-interface eth1 (apps' ports and the agents listen there; keep that "
            "network private).",
        )
    if (join is None) != (join_secrets is None):
        raise InvalidInput(
            "--join and --join-secrets go together",
            hint="On the first server: `billowin join-secrets FILE` (--server for a server); copy FILE "
            "here; then `billowin install --join <its private address> --join-secrets FILE …`.",
        )
    if private_address is None:
        private_address = interface_ipv4(private_interface, (ip_addr or read_ip_addr)())
    node = (name or socket.gethostname().split(".")[0]).lower()
    if not is_app_name(node):
        raise InvalidInput(f"{node!r} is not a node name (a DNS label)", hint="Give one with --node-name.")
    return ClusterOptions(
        interface=private_interface,
        address=check_ipv4(private_address),
        name=node,
        join=check_ipv4(join) if join is not None else None,
        join_secrets=join_secrets,
        build=build,
    )


def cluster_node(tools: Toolset, options: BoxOptions, cluster: ClusterOptions) -> ClusterNode:
    """The node under ``options.root``: the one installed there (an upgrade in place), or the
    cluster's first server (no ``join``), or a node joining it with its join secrets."""
    if options.installed:
        saved = ProductionBox.from_root(tools, options.root)
        if isinstance(saved, ClusterNode):
            return saved
        raise ConfigError(
            f"a single production box is installed under {options.root}: it does not become a "
            "cluster node in place (its Consul and Nomad servers listen on the loopback)",
            hint="Back it up (`billowin backup FILE`), install the cluster's first server on a new "
            "machine or --root, and restore the backup there.",
        )
    common = {
        "name": cluster.name,
        "address": cluster.address,
        "interface": cluster.interface,
        "public_address": options.public_address,
    }
    if cluster.join is None:
        return ClusterNode(
            tools,
            options.root,
            servers=[cluster.address],
            domain=options.domain or "",
            registry=f"{cluster.address}:{Ports().registry}",
            api_address=cluster.address,
            bootstrap=True,
            api=True,
            build=True,
            **common,  # type: ignore[arg-type]
        )
    assert cluster.join_secrets is not None
    facts = read_join_secrets(cluster.join_secrets, Secrets(options.root / "secrets"))
    if cluster.join not in facts["servers"]:
        raise InvalidInput(
            f"{cluster.join} is not a server of the cluster these join secrets are from "
            f"({', '.join(facts['servers'])})",
            hint="Give --join the first server's private address.",
        )
    return ClusterNode(tools, options.root, build=cluster.build, **join_options(facts), **common)  # type: ignore[arg-type]


def production_box(tools: Toolset, options: BoxOptions) -> ProductionBox:
    """The box under ``options.root``: the one its manifest describes, with the options given
    applied over it, or a new one."""
    if options.installed:
        try:
            saved = ProductionBox.from_root(tools, options.root)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"cannot read {options.root / MANIFEST}: {exc}",
                hint="Restore it from a backup, or give every option again after moving it away.",
            ) from exc
        if isinstance(saved, ClusterNode):
            return saved  # a cluster node keeps what it was installed as (`install` again to change)
        domain, address, ports, own = saved.domain, saved.public_address, saved.ports, saved.own_docker
    else:
        domain, address, ports, own = "", "0.0.0.0", Ports(router_http=80, router_https=443), False
    if options.http_port is not None:
        ports = replace(ports, router_http=options.http_port)
    return ProductionBox(
        tools,
        options.root,
        domain=options.domain or domain,
        public_address=options.public_address or address,
        ports=ports,
        own_docker=own if options.own_docker is None else options.own_docker,
    )


# -- checks ------------------------------------------------------------------------
def _domain(value: str) -> str:
    return check_domain(normalize_domain(value))


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise InvalidInput(f"{value} is not a TCP port", hint="Give a port from 1 to 65535 (80 by default).")
    return value


def check_ipv4(value: str) -> str:
    """The IPv4 address the router binds to: one of this machine's, or 0.0.0.0 for all."""
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise InvalidInput(
            f"{value!r} is not an IPv4 address",
            hint="Give the address the router listens on, like 203.0.113.7 (0.0.0.0: every address), "
            "or --interface eth0.",
        ) from None
    if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        raise InvalidInput(f"{value} is not an address a router can listen on")
    return str(address)


def interface_ipv4(interface: str, ip_json: str) -> str:
    """The IPv4 address of ``interface`` in ``ip -j addr`` output: its first global one, else
    its first one."""
    try:
        parsed = json.loads(ip_json)
    except ValueError as exc:
        raise ServiceError("ip", f"`ip -j addr` printed something that is not JSON: {exc}") from exc
    links = [link for link in parsed if isinstance(link, dict)] if isinstance(parsed, list) else []
    for link in links:
        if link.get("ifname") != interface:
            continue
        address = _ipv4(link)
        if address is None:
            raise InvalidInput(
                f"the network interface {interface} has no IPv4 address", hint=_interfaces_hint(links)
            )
        return check_ipv4(address)
    raise InvalidInput(f"there is no network interface named {interface!r}", hint=_interfaces_hint(links))


def _ipv4(link: dict[str, Any]) -> str | None:
    """The link's first global IPv4 address, else its first one (`ip -j` may also print empty
    objects in addr_info: only complete IPv4 entries count)."""
    inet = [a for a in link.get("addr_info") or [] if a.get("family") == "inet" and a.get("local")]
    chosen = next((a for a in inet if a.get("scope") == "global"), inet[0] if inet else None)
    return str(chosen["local"]) if chosen else None


def _interfaces_hint(links: list[dict[str, Any]]) -> str:
    shown = [
        f"{link.get('ifname')} ({address})" if (address := _ipv4(link)) else str(link.get("ifname"))
        for link in links
    ]
    return f"Interfaces on this machine: {', '.join(shown) or 'none'}. Or give --public-address."


def read_ip_addr() -> str:
    try:
        proc = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(
            "ip", f"cannot run `ip -j addr`: {exc}", hint="Install iproute2, or give --public-address."
        ) from exc
    if proc.returncode != 0:
        raise ServiceError("ip", f"`ip -j addr` failed: {proc.stderr.strip()}", hint="Give --public-address.")
    return proc.stdout


# -- systemd -----------------------------------------------------------------------
def systemd_running(run_dir: Path = SYSTEMD_RUN_DIR) -> bool:
    """Is systemd this machine's init (PID 1)? It makes this directory at boot, and only then."""
    return run_dir.is_dir()


def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError("systemd", f"`systemctl {' '.join(args)}` did not run: {exc}") from exc
    if check and proc.returncode != 0:
        raise ServiceError(
            "systemd",
            f"`systemctl {' '.join(args)}` failed (exit {proc.returncode}): {proc.stderr.strip()}",
            hint="See `systemctl status 'billowin-*'` and `journalctl -u 'billowin-*'`.",
        )
    return proc


def unit_active(name: str, run: Run = systemctl) -> bool:
    return run("is-active", "--quiet", name, check=False).returncode == 0


def unit_enabled(name: str, run: Run = systemctl) -> bool:
    return run("is-enabled", "--quiet", name, check=False).returncode == 0
