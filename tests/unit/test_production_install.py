"""`billowin install` and `billowin up --production`: their checks and their systemd steps, offline.

Nothing is installed or started: the options are checked before anything happens, ``ip -j
addr`` output is parsed from samples, and the unit step writes into a temporary directory
with a recording stand-in for ``systemctl``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from billowin.cli import app
from billowin.cli.install import dns_records, docker_host, install_units, prepare_systemd
from billowin.errors import InvalidInput, ServiceError
from billowin.settings import Settings
from billowin.stack.install import Installer
from billowin.stack.machine import (
    box_options,
    check_ipv4,
    interface_ipv4,
    production_box,
    read_ip_addr,
    systemd_running,
)
from billowin.stack.production import MANIFEST, ProductionBox
from billowin.stack.single_box import Ports
from billowin.stack.tools import Toolset
from billowin.stack.units import SYSTEM_DOCKER, TARGET, unit_name

IP_ADDR = json.dumps(
    [
        {
            "ifname": "lo",
            "addr_info": [
                {"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"},
                {"family": "inet6", "local": "::1", "prefixlen": 128, "scope": "host"},
            ],
        },
        {"ifname": "ifb0", "addr_info": []},
        {
            "ifname": "eth0",
            "addr_info": [
                {},  # `ip -j` prints these for addresses it filtered out
                {"family": "inet6", "local": "fd00::2", "prefixlen": 64, "scope": "global"},
                {"family": "inet", "local": "169.254.3.4", "prefixlen": 16, "scope": "link"},
                {"family": "inet", "local": "192.0.2.2", "prefixlen": 24, "scope": "global"},
            ],
        },
    ]
)


@pytest.fixture(scope="module")
def tools() -> Toolset:
    return Toolset.resolve(Settings())


@pytest.fixture
def installer(tmp_path: Path) -> Installer:
    return Installer(Settings(cache_dir=tmp_path / "cache"), Console(file=io.StringIO()))


# -- the router's address ---------------------------------------------------------------
def test_an_interface_gives_its_global_ipv4_address() -> None:
    assert interface_ipv4("eth0", IP_ADDR) == "192.0.2.2"
    assert interface_ipv4("lo", IP_ADDR) == "127.0.0.1"  # no global one: the first


def test_an_unknown_interface_is_refused_naming_those_there_are() -> None:
    with pytest.raises(InvalidInput, match="no network interface named 'wlan0'") as info:
        interface_ipv4("wlan0", IP_ADDR)
    assert info.value.hint == (
        "Interfaces on this machine: lo (127.0.0.1), ifb0, eth0 (192.0.2.2). Or give --public-address."
    )


def test_an_interface_without_ipv4_is_refused() -> None:
    with pytest.raises(InvalidInput, match="ifb0 has no IPv4 address"):
        interface_ipv4("ifb0", IP_ADDR)


def test_output_that_is_not_json_is_a_clear_error() -> None:
    with pytest.raises(ServiceError, match="not JSON"):
        interface_ipv4("eth0", "Usage: ip [ OPTIONS ] OBJECT")


def test_this_machines_own_ip_output_parses() -> None:
    assert interface_ipv4("lo", read_ip_addr()) == "127.0.0.1"


@pytest.mark.parametrize(("given", "kept"), [("203.0.113.7", "203.0.113.7"), (" 0.0.0.0 ", "0.0.0.0")])
def test_an_ipv4_address_is_accepted(given: str, kept: str) -> None:
    assert check_ipv4(given) == kept


@pytest.mark.parametrize("value", ["::1", "example.com", "203.0.113", "224.0.0.1", "255.255.255.255", ""])
def test_anything_else_is_refused_as_an_address(value: str) -> None:
    with pytest.raises(InvalidInput):
        check_ipv4(value)


# -- the options ---------------------------------------------------------------------
def test_options_are_checked_and_normalized(tmp_path: Path) -> None:
    options = box_options(
        tmp_path,
        domain="Apps.Example.COM.",
        interface="eth0",
        http_port=8080,
        need_address=True,
        ip_addr=lambda: IP_ADDR,
    )
    assert (options.domain, options.public_address, options.http_port) == (
        "apps.example.com",
        "192.0.2.2",
        8080,
    )


def test_a_new_box_needs_a_domain_and_for_install_an_address(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="needs a domain"):
        box_options(tmp_path, public_address="192.0.2.2")
    with pytest.raises(InvalidInput, match="needs the address"):
        box_options(tmp_path, domain="example.com", need_address=True)
    assert box_options(tmp_path, domain="example.com").public_address is None  # `up`: 0.0.0.0


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"interface": "eth0", "public_address": "192.0.2.2"}, "both say where"),
        ({"public_address": "192.0.2.2", "domain": "localhost"}, "not a valid domain"),
        ({"public_address": "192.0.2.2", "domain": "example.com", "http_port": 0}, "not a TCP port"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, kw: dict[str, object], error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        box_options(tmp_path, ip_addr=lambda: IP_ADDR, **kw)  # type: ignore[arg-type]


def test_a_root_systemd_would_misread_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="systemd"):
        box_options(tmp_path / "100%", domain="example.com", public_address="192.0.2.2")


def test_an_installed_box_keeps_what_is_not_given_again(tools: Toolset, tmp_path: Path) -> None:
    ports = Ports(router_http=80, api=9000)
    saved = {
        "ports": ports.__dict__,
        "domain": "old.example.com",
        "public_address": "192.0.2.7",
        "own_docker": True,
    }
    (tmp_path / MANIFEST).write_text(json.dumps(saved))
    options = box_options(tmp_path, http_port=8080)  # no domain needed any more
    box = production_box(tools, options)
    assert (box.domain, box.public_address, box.own_docker) == ("old.example.com", "192.0.2.7", True)
    assert (box.ports.router_http, box.ports.api) == (8080, 9000)
    box = production_box(tools, box_options(tmp_path, domain="new.example.com", own_docker=False))
    assert (box.domain, box.own_docker, box.ports.router_http) == ("new.example.com", False, 80)


def test_a_new_box_listens_on_80_and_443_with_the_systems_docker(tools: Toolset, tmp_path: Path) -> None:
    box = production_box(tools, box_options(tmp_path, domain="example.com", public_address="192.0.2.2"))
    expected = (Ports(router_http=80, router_https=443), "192.0.2.2", False)
    assert (box.ports, box.public_address, box.own_docker) == expected
    assert not (tmp_path / MANIFEST).exists()  # nothing written before the box starts


# -- the systemd steps --------------------------------------------------------------
class Systemctl:
    """Records each call; ``ok`` names the units `is-active` / `is-enabled` answer yes for."""

    def __init__(self, ok: set[tuple[str, str]] | None = None) -> None:
        self.ok = ok or set()
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        code = 0 if args[0] not in ("is-active", "is-enabled") or (args[0], args[-1]) in self.ok else 3
        return subprocess.CompletedProcess(["systemctl", *args], code, "", "")

    @property
    def changes(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] not in ("is-active", "is-enabled")]


def box_for(tools: Toolset, root: Path, *, own_docker: bool = False) -> ProductionBox:
    return ProductionBox(
        tools, root, domain="example.com", public_address="192.0.2.10", own_docker=own_docker
    )


def test_units_go_to_the_unit_dir_and_systemd_is_told_only_when_it_reads_it(
    tools: Toolset, tmp_path: Path, installer: Installer
) -> None:
    box = box_for(tools, tmp_path / "root")
    unit_dir = tmp_path / "units"
    run, waited = Systemctl(), []
    changed = install_units(box, unit_dir, installer, systemd=True, run=run, wait=waited.append)
    assert sorted(changed) == sorted(p.name for p in unit_dir.iterdir())
    assert {unit_name("api"), unit_name("nomad"), TARGET} <= set(changed)
    assert run.calls == [] and waited == []  # not systemd's directory: systemd is not told

    install_units(box, unit_dir, installer, systemd=False, system_dir=unit_dir, run=run, wait=waited.append)
    assert run.calls == [] and waited == []  # systemd does not run this machine

    again = install_units(
        box, unit_dir, installer, systemd=True, system_dir=unit_dir, run=run, wait=waited.append
    )
    assert again == []  # a rerun changes nothing that has not changed
    assert run.calls == [("daemon-reload",), ("enable", "--now", TARGET)]
    assert waited == [box]


def test_an_upgrade_stops_the_running_units_and_debians_registry_first(
    tools: Toolset, tmp_path: Path, installer: Installer
) -> None:
    run = Systemctl(ok={("is-active", TARGET), ("is-enabled", "docker-registry.service")})
    prepare_systemd(box_for(tools, tmp_path), installer, run=run)
    assert run.changes == [
        ("stop", TARGET),
        ("disable", "--now", "docker-registry.service"),
        ("enable", "--now", SYSTEM_DOCKER),
    ]
    fresh = Systemctl()
    prepare_systemd(box_for(tools, tmp_path, own_docker=True), installer, run=fresh)
    assert fresh.changes == []  # nothing running, and an engine of its own


def test_systemd_is_pid_1_only_where_it_made_its_run_directory(tmp_path: Path) -> None:
    assert not systemd_running(tmp_path / "system")
    (tmp_path / "system").mkdir()
    assert systemd_running(tmp_path / "system")


def test_the_dns_records_point_at_the_public_address(tools: Toolset, tmp_path: Path) -> None:
    assert dns_records(box_for(tools, tmp_path)) == [
        ("billowin.example.com", "192.0.2.10"),
        ("*.example.com", "192.0.2.10"),
    ]
    anywhere = ProductionBox(tools, tmp_path, domain="example.com")
    assert dns_records(anywhere)[0][1] == "<this machine's public IPv4 address>"


def test_docker_host_is_set_for_the_images_then_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    with docker_host("unix:///var/lib/billowin/run/docker.sock"):
        assert os.environ["DOCKER_HOST"] == "unix:///var/lib/billowin/run/docker.sock"
    assert "DOCKER_HOST" not in os.environ


# -- the command line ----------------------------------------------------------------
def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", **(env or {})})
    return result.exit_code, result.output


def test_install_checks_its_options_before_installing_anything(tmp_path: Path) -> None:
    code, output = invoke(
        ["install", "--domain", "bad_domain", "--public-address", "192.0.2.2", "--root", str(tmp_path)]
    )
    assert code == 1
    assert output.splitlines()[0] == "error: 'bad_domain' is not a valid domain name"
    code, output = invoke(["install", "--domain", "example.com", "--root", str(tmp_path)])
    assert code == 1 and "needs the address its router listens on" in output
    assert list(tmp_path.iterdir()) == []


def test_make_install_passes_the_options_through_the_environment(tmp_path: Path) -> None:
    env = {
        "BILLOWIN_INSTALL_DOMAIN": "bad_domain",
        "BILLOWIN_INSTALL_PUBLIC_ADDRESS": "192.0.2.2",
        "BILLOWIN_INSTALL_ROOT": str(tmp_path),
        "BILLOWIN_INSTALL_INTERFACE": "",  # `make install` without INTERFACE=: as if not given
        "BILLOWIN_INSTALL_HTTP_PORT": "",
    }
    code, output = invoke(["install"], env)
    assert code == 1
    assert output.splitlines()[0] == "error: 'bad_domain' is not a valid domain name"


def test_up_refuses_production_options_without_production(tmp_path: Path) -> None:
    code, output = invoke(["up", "--domain", "example.com"])
    assert code == 1 and "Add --production" in output
    code, output = invoke(["up", "--production", "--root", str(tmp_path)])
    assert code == 1 and "a new one needs a domain" in output


def test_down_production_needs_an_installed_box(tmp_path: Path) -> None:
    code, output = invoke(["down", "--production", "--root", str(tmp_path)])
    assert code == 1 and f"there is no production box under {tmp_path}" in output
