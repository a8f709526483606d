"""``node_loss``: a node of a three-node cluster powered off under load, against draining one.

A cluster of its own (``LocalCluster``: three servers, each node in a network namespace with its
own Docker Engine and router) runs an app with two instances on two nodes, under constant load
through the routers. The same-run baseline is the planned way of taking a node out: ``nodes:drain``
of one node with an instance, until the app runs its two instances elsewhere (then the node is
made eligible again). Then the node with an instance (Nomad's leader when it can be) is powered
off: every process killed at once and its network cable pulled. The figures:

- ``node_loss_failed_requests``: requests that failed from the power-off to full capacity
  (and how many of them started after Consul marked the node failed: the test suite asserts 0);
- ``node_loss_to_capacity_s``: seconds until the app runs its two instances on the survivors.

``python -m bench.cluster`` runs this figure alone.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from billowin.settings import Settings
from billowin.stack.install import base_image_tag
from billowin.stack.single_box import Ports, SingleBox
from billowin.stack.tools import Toolset
from tests.integration.cluster import Fleet, measure_drain, measure_node_loss, new_cluster, running
from tests.integration.conftest import Cli

console = Console(stderr=True)


def bench_node_loss(dev: SingleBox, work: Path) -> dict[str, Any]:
    """Builds the app's image with the ``dev`` stack's engine; the cluster is its own."""
    root = work / f"cluster-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    with running(new_cluster(root)) as cluster:
        fleet = Fleet.of(cluster, dev.settings, base_image_tag(Settings()), root / "images")
        app = f"nl{uuid.uuid4().hex[:6]}"
        fleet.deploy(app, fleet.push(app, "v1"), web=2)
        cli = Cli(None, root / "cli", api=cluster.api_url, token=fleet.token)
        drained_node = fleet.placements(app)[0]
        drain = measure_drain(fleet, app, drained_node, cli)
        cli("nodes:activate", drained_node)
        candidates = [n for n in fleet.placements(app) if n != "n1"]  # n1 holds the API
        leader = fleet.leaders()["nomad"]
        victim = leader if leader in candidates else candidates[0]
        loss = measure_node_loss(fleet, app, victim)
    console.print(
        f"  node loss: {loss.failed} of {loss.requests} requests failed, full capacity in "
        f"{loss.to_capacity_s}s (drain: {drain.failed} failed, {drain.to_capacity_s}s)"
    )
    return {
        "nodes": 3,
        "instances": 2,
        "killed_was_nomad_leader": victim == leader,
        "node_loss_failed_requests": loss.failed,
        "node_loss_failed_after_consul_marked_failed": loss.failed_after_consul,
        "node_loss_requests": loss.requests,
        "node_loss_failures": loss.failures,
        "consul_marked_failed_after_s": loss.consul_failed_after_s,
        "node_loss_to_capacity_s": loss.to_capacity_s,
        "drain_failed_requests": drain.failed,
        "drain_requests": drain.requests,
        "drain_to_capacity_s": drain.to_capacity_s,
        "loss_over_drain_s": round(loss.to_capacity_s / drain.to_capacity_s, 2),
    }


def main() -> int:
    tools = Toolset.resolve(Settings())
    with tempfile.TemporaryDirectory(prefix="billowin-bench-") as tmp:
        work = Path(tmp)
        with SingleBox(tools, Ports.free(), work / "stack").running(lambda m: console.print(f"  {m}")) as dev:
            console.print(bench_node_loss(dev, work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
