"""Joining a cluster, offline: the join secrets a node gets (and never more), the options of
`billowin install --private-interface` / `--join`, a node's manifest, and its units."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billowin.cli import app
from billowin.errors import ConfigError, InvalidInput
from billowin.settings import Settings
from billowin.stack.acl import Secrets
from billowin.stack.cluster import ClusterNode
from billowin.stack.join import (
    CLIENT_SECRETS,
    SERVER_SECRETS,
    ensure_registry_password,
    ensure_registry_tls,
    read_join_secrets,
    write_join_secrets,
)
from billowin.stack.machine import BoxOptions, cluster_node, cluster_options
from billowin.stack.production import ProductionBox
from billowin.stack.tools import Toolset
from billowin.stack.units import render_units

IP_JSON = json.dumps(
    [
        {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "203.0.113.7", "scope": "global"}]},
        {"ifname": "eth1", "addr_info": [{"family": "inet", "local": "10.0.0.2", "scope": "global"}]},
    ]
)
NEVER_SHARED = ("nomad-bootstrap.token", "consul-api.token", "nomad-api.token", "registry-ca.key")


def tools() -> Toolset:
    return Toolset.resolve(Settings())


def first_server(root: Path) -> ClusterNode:
    node = cluster_node(
        tools(),
        BoxOptions(root=root, domain="apps.example.com", public_address="203.0.113.7"),
        cluster_options(private_interface="eth1", name="alpha", ip_addr=lambda: IP_JSON),  # type: ignore[arg-type]
    )
    # What its first start makes: every secret, as one production box does.
    node.write_configs()
    for name in (
        "consul-nomad",
        "consul-router",
        "consul-api",
        "nomad-router",
        "nomad-api",
        "nomad-bootstrap",
    ):
        node.secrets.ensure(name)
    ensure_registry_tls(node.secrets, node.host)
    ensure_registry_password(node.secrets)
    return node


def test_the_first_server_bootstraps_and_runs_the_registry_and_the_api(tmp_path: Path) -> None:
    node = first_server(tmp_path / "alpha")
    assert (node.name, node.host, node.public_address) == ("alpha", "10.0.0.2", "203.0.113.7")
    assert node.bootstrap and node.server and node.runs_api and node.build
    assert node.registry_address == "10.0.0.2:5000"
    assert [p.name for p in node.plan()] == [
        "dockerd", "registry", "consul", "nomad", "haproxy", "consul-template", "api",
    ]  # fmt: skip
    assert node.consul_config()["bootstrap_expect"] == 1
    assert node.nomad_config()["client"]["network_interface"] == "eth1"


@pytest.mark.parametrize("server", [True, False])
def test_join_secrets_hold_what_a_node_needs_and_never_the_first_servers_own(
    tmp_path: Path, server: bool
) -> None:
    first = first_server(tmp_path / "alpha")
    bundle = tmp_path / "join.json"
    names = write_join_secrets(first.secrets, first.join_facts(), bundle, server=server)
    assert set(names) == set(SERVER_SECRETS if server else CLIENT_SECRETS)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    text = bundle.read_text()
    for name in NEVER_SHARED:  # neither by name nor by value
        assert name not in json.loads(text)["secrets"]
        assert (first.secrets.dir / name).read_text() not in text
    facts = read_join_secrets(bundle, Secrets(tmp_path / "beta" / "secrets"))
    assert facts == {
        "domain": "apps.example.com",
        "servers": ["10.0.0.2"],
        "registry": "10.0.0.2:5000",
        "api_address": "10.0.0.2",
        "server": server,
    }
    copied = sorted(p.name for p in (tmp_path / "beta" / "secrets").iterdir())
    assert copied == sorted(SERVER_SECRETS if server else CLIENT_SECRETS)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "beta" / "secrets").iterdir())


def test_join_secrets_naming_anything_else_are_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "join.json"
    bundle.write_text(json.dumps({"server": False, "cluster": {}, "secrets": {"../../etc/cron.d/x": "boom"}}))
    with pytest.raises(ConfigError, match="not a join secret"):
        read_join_secrets(bundle, Secrets(tmp_path / "secrets"))
    assert not (tmp_path / "etc").exists()
    bundle.write_text("{not json")
    with pytest.raises(ConfigError, match="not a file of join secrets"):
        read_join_secrets(bundle, Secrets(tmp_path / "secrets"))


def test_a_joining_node_is_built_from_its_join_secrets_and_survives_its_manifest(tmp_path: Path) -> None:
    first = first_server(tmp_path / "alpha")
    bundle = tmp_path / "join.json"
    write_join_secrets(first.secrets, first.join_facts(), bundle, server=False)
    ip_json = IP_JSON.replace("10.0.0.2", "10.0.0.3").replace("203.0.113.7", "203.0.113.8")
    options = cluster_options(
        private_interface="eth1", join="10.0.0.2", join_secrets=bundle, name="beta", ip_addr=lambda: ip_json
    )
    assert options is not None
    node = cluster_node(tools(), BoxOptions(root=tmp_path / "beta", public_address="203.0.113.8"), options)
    assert (node.host, node.domain, node.servers, node.server, node.bootstrap) == (
        "10.0.0.3", "apps.example.com", ["10.0.0.2"], False, False,
    )  # fmt: skip
    # A client: no registry, no API, no server; its router sends the API's name to the first server.
    assert [p.name for p in node.plan()] == ["dockerd", "consul", "nomad", "haproxy", "consul-template"]
    assert node.consul_config()["server"] is False and "bootstrap_expect" not in node.consul_config()
    assert node.nomad_config()["server"] == {"enabled": False}
    assert node._router_env()["BILLOWIN_API_BACKEND"] == "10.0.0.2:8000"
    node._write_manifest()
    again = ProductionBox.from_root(tools(), tmp_path / "beta")
    assert isinstance(again, ClusterNode) and again.manifest() == node.manifest()
    assert again.public_address == "203.0.113.8"
    units = render_units(node)
    assert "billowin-api.service" not in units and "billowin-registry.service" not in units
    assert "billowin-consul.service" in units


def test_cluster_options_say_what_is_missing() -> None:
    assert cluster_options(private_interface=None) is None  # a single box
    with pytest.raises(InvalidInput, match="--join and --join-secrets go together"):
        cluster_options(private_interface="eth1", join="10.0.0.2", ip_addr=lambda: IP_JSON)
    with pytest.raises(InvalidInput, match="the network the nodes share"):
        cluster_options(private_interface=None, join="10.0.0.2", join_secrets=Path("x"))
    with pytest.raises(InvalidInput, match="not a node name"):
        cluster_options(private_interface="eth1", name="Not_A_Label", ip_addr=lambda: IP_JSON)


def test_a_single_box_does_not_become_a_cluster_node_in_place(tmp_path: Path) -> None:
    box = ProductionBox(tools(), tmp_path / "box", domain="apps.example.com", public_address="203.0.113.7")
    box.root.mkdir(parents=True)
    box._write_manifest()
    options = cluster_options(private_interface="eth1", name="alpha", ip_addr=lambda: IP_JSON)
    assert options is not None
    with pytest.raises(ConfigError, match="does not become a cluster node in place"):
        cluster_node(tools(), BoxOptions(root=tmp_path / "box"), options)


def test_join_secrets_refuses_a_box_that_is_not_a_cluster_server(tmp_path: Path) -> None:
    box = ProductionBox(tools(), tmp_path / "box", domain="apps.example.com", public_address="203.0.113.7")
    box.root.mkdir(parents=True)
    box._write_manifest()
    result = CliRunner().invoke(
        app, ["join-secrets", str(tmp_path / "out.json"), "--root", str(tmp_path / "box")]
    )
    assert result.exit_code != 0
    assert "not a server of a cluster" in " ".join(result.output.split())
    assert not (tmp_path / "out.json").exists()
