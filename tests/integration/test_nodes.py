"""``billowin nodes`` against the session's real stack: its one Nomad node, listed and named.

The session's single box has one node, and every other test's apps run on it: nothing here
drains, activates or removes it. What is checked is what cannot hurt it: the listing (with an
app of this test's own running there, so its allocations, CPU and memory are not zero), the
node ``ps`` names, an unknown or too short node refused with the choices, and ``nodes:remove``
refusing a node that is ready. Draining for real is the multi-node cluster's to test.
"""

from __future__ import annotations

from typing import Any

import httpx

from billowin.apps.store import App
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import ReleaseStatus
from billowin.stack.single_box import SingleBox
from billowin.system import System

from .conftest import Cli


def the_node(cli: Cli) -> dict[str, Any]:
    (node,) = cli.json("nodes")
    return node  # type: ignore[no-any-return]


def test_nodes_lists_the_one_node_ready_with_what_runs_there_and_ps_names_it(  # type: ignore[no-untyped-def]
    stack: SingleBox, cli: Cli, make_image, deployer: Deployer, app_name: str, destroy_after: list[str]
) -> None:
    system = System(stack.settings)
    system.apps.create(App(name=app_name, repository="/nowhere"))
    destroy_after.append(app_name)
    release = deployer.deploy(app_name, make_image(app_name, "v1"), [Process(name="web")])
    assert release.status == ReleaseStatus.LIVE, release.description

    node = the_node(cli)
    assert (node["status"], node["state"], node["eligible"]) == ("ready", "ready", True)
    assert not node["draining"] and node["last_drain"] is None
    ours = [a for a in system.nomad.allocations(app_name) if a["ClientStatus"] == "running"]
    assert ours and {a["NodeID"] for a in ours} == {node["id"]}
    assert node["allocations"] >= len(ours) and node["allocations_left"] >= node["allocations"]
    assert 0 < node["cpu_mhz"] <= node["cpu_total_mhz"] and 0 < node["memory_mib"] <= node["memory_total_mib"]
    assert node["version"] and node["address"] and node["datacenter"]
    # The name its Consul agent goes by: the one the app's instance is registered on.
    (instance,) = system.catalog.healthy_instances(app_name)
    assert instance.node == node["consul_name"]

    table = cli("nodes").stdout
    row = next(line for line in table.splitlines() if node["id"][:8] in line)
    assert node["name"] in row and "ready" in row and "yes" in row
    assert f"{node['cpu_mhz']}/{node['cpu_total_mhz']} MHz" in row, row
    assert f"{node['memory_mib']}/{node['memory_total_mib']} MiB" in row, row

    (web,) = cli.json("ps", app_name)
    assert web["node"] == node["name"]
    assert node["name"] in cli("ps", app_name).stdout


def test_an_unknown_node_is_refused_with_the_nodes_there_are(stack: SingleBox, cli: Cli) -> None:
    node = the_node(cli)
    listed = f"{node['name']} ({node['id'][:8]}, ready)"
    unknown = cli("nodes:activate", "no-such-node", ok=False)
    assert unknown.returncode == 1
    lines = unknown.stderr.splitlines()
    assert lines[0] == "error: no node is named 'no-such-node' or has an id starting 'no-such-node'"
    assert lines[1].startswith("what to do: ") and listed in unknown.stderr
    short = cli("nodes:activate", node["id"][:4], ok=False)
    assert short.returncode == 1 and "at least its first 8 characters" in short.stderr

    admin = System(stack.settings).tokens.create("nodes test")
    api = f"http://127.0.0.1:{stack.ports.api}"
    headers = {"Authorization": f"Bearer {admin}"}
    assert httpx.get(f"{api}/nodes/no-such-node", headers=headers).status_code == 404
    assert httpx.get(f"{api}/nodes/{node['id'][:8]}", headers=headers).json()["name"] == node["name"]
    assert httpx.get(f"{api}/nodes/a%2Fb", headers=headers).status_code in (404, 422)


def test_removing_a_ready_node_is_refused_with_what_to_do(stack: SingleBox, cli: Cli) -> None:
    node = the_node(cli)
    name = node["name"]
    refused = cli("nodes:remove", name, "--confirm", name, ok=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: {name} is ready, and eligible for new allocations")
    assert f"`billowin nodes:drain {name}`" in refused.stderr
    after = the_node(cli)
    assert (after["id"], after["state"], after["eligible"]) == (node["id"], "ready", True)
    entries = cli.json("audit", "-n", "5")
    assert entries[-1]["action"] == "nodes:remove" and entries[-1]["status"] == 409
