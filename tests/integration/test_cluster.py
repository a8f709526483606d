"""A three-node cluster: instances spread across nodes, every node's router serves every app, and
an app survives losing the node its instance ran on (billowin/stack/cluster.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from billowin.stack.single_box import SingleBox

from .cluster import DOMAIN, Fleet, all_failures, new_cluster, running, wait_consul_failed
from .conftest import Load, wait_for
from .production import finished


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fleet(stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A cluster of its own for each test: the tests kill nodes."""
    root = Path(tmp_path_factory.mktemp("cluster"))
    with running(new_cluster(root)) as cluster:
        yield Fleet.of(cluster, stack.settings, base_image, root / "images")


def test_instances_spread_across_nodes_and_every_router_serves_them(fleet: Fleet) -> None:
    app = _name("spread")
    fleet.deploy(app, fleet.push(app, "v1"), web=2)
    nodes = fleet.placements(app)
    assert len(set(nodes)) == 2, f"two instances on one node: {nodes}"
    for node in fleet.cluster.nodes:
        assert wait_for(
            lambda n=node.name: fleet.serves(n, app).startswith("hello release=v1"),
            30,
            f"{node.name}'s router",
        )


def test_losing_a_node_under_load_fails_no_request_once_consul_knows(fleet: Fleet) -> None:
    app = _name("loss")
    fleet.deploy(app, fleet.push(app, "v1"), web=2)
    before = fleet.placements(app)
    # A node with an instance, not the first (it holds the API the test watches through).
    victim = next(n for n in before if n != "n1")
    survivors = [n.name for n in fleet.cluster.nodes if n.name != victim]
    host = f"{app}.{DOMAIN}"
    loads = [Load(None, host, url=f"http://{fleet.cluster.node(n).host}/") for n in survivors]
    for load in loads:
        load.__enter__()
    try:
        time.sleep(2)  # load before the loss, to compare with
        killed_at = time.time()
        fleet.cluster.kill(victim)
        failed_at = wait_consul_failed(fleet, victim)
        wait_for(
            lambda: len(fleet.placements(app)) == 2 and victim not in fleet.placements(app),
            30 + killed_at - time.time(),
            "two running instances on the surviving nodes",
        )
        capacity_s = time.time() - killed_at
        time.sleep(3)  # load after full capacity
    finally:
        for load in loads:
            load.__exit__(None, None, None)
    results = [load.result for load in loads]
    late = [t for r in results for t in r["failed_at"] if t > failed_at]
    print(
        f"node_loss_to_capacity_s={capacity_s:.1f} consul_marked_failed_after_s={failed_at - killed_at:.1f} "
        f"node_loss_failed_requests={sum(len(r['failed_at']) for r in results)} "
        f"of {sum(r['total'] for r in results)}: {all_failures(results)}"
    )
    assert late == [], (
        f"{len(late)} requests failed after Consul marked {victim} failed: {all_failures(results)}"
    )
    for node in survivors:
        assert fleet.serves(node, app).startswith("hello release=v1")


def test_losing_one_of_three_servers_keeps_deploys_working_and_loses_nothing(fleet: Fleet) -> None:
    before = _name("kept")
    fleet.deploy(before, fleet.push(before, "v1"), web=2)
    with fleet.api() as api:
        changed = api.patch(f"/apps/{before}/config", json={"set": {"GREETING": "bonjour"}})
        assert changed.status_code == 202, changed.text
        assert finished(api, before, changed.json()["job"])["state"] == "live"
    # The Raft leader if it is not the first node (that one holds the API the test talks to).
    leaders = fleet.leaders()
    victim = next((n for n in (leaders["nomad"], leaders["consul"]) if n != "n1"), "n2")
    fleet.cluster.kill(victim)
    wait_consul_failed(fleet, victim)

    after = _name("after")
    fleet.deploy(after, fleet.push(after, "v1"), web=1)
    with fleet.api() as api:
        changed = api.patch(f"/apps/{before}/config", json={"set": {"GREETING": "hola"}})
        assert changed.status_code == 202, changed.text
        assert finished(api, before, changed.json()["job"])["state"] == "live"
        releases = api.get(f"/apps/{before}/releases").json()
        apps = {a["name"] for a in api.get("/apps").json()}
        config = api.get(f"/apps/{before}/config", params={"reveal": "true"}).json()["values"]
    assert sorted(r["number"] for r in releases) == [1, 2, 3], releases
    assert {before, after} <= apps
    assert config["GREETING"] == "hola"
    survivors = [n.name for n in fleet.cluster.nodes if n.name != victim]
    for node in survivors:
        assert wait_for(lambda n=node: fleet.serves(n, before).startswith("hola"), 60, f"{before} on {node}")
        assert wait_for(lambda n=node: fleet.serves(n, after).startswith("hello"), 60, f"{after} on {node}")
