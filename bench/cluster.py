"""``node_loss``: a node of a three-node cluster powered off under load, against draining one.

A cluster of its own (``LocalCluster``: three servers, each node in a network namespace with its
own Docker Engine and router) runs an app with two instances on two nodes, under constant load
through the routers. The same-run baseline is the planned way of taking a node out: ``nodes:drain``
of one node with an instance, until the app runs its two instances elsewhere (then the node is
made eligible again). Then an app with an instance on each node loses a node (a server, not
the first, which holds the API, and not Nomad's leader): every process killed at once and its
network cable pulled. The figures:

- ``node_loss_failed_requests``: requests that failed from the power-off to full capacity
  (and how many of them started after Consul marked the node failed: the test suite asserts 0);
- ``node_loss_to_capacity_s``: seconds until the app runs its three instances on the survivors.

``python -m bench.cluster`` runs this figure alone.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.production import run_alone
from billowin.settings import Settings
from billowin.stack.install import base_image_tag
from billowin.stack.single_box import SingleBox
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
        app3 = f"nm{uuid.uuid4().hex[:6]}"  # one instance on each node: the leader has one
        fleet.deploy(app3, fleet.push(app3, "v1"), web=3)
        leader = fleet.leaders()["nomad"]  # not n1 (it holds the API), not Nomad's leader
        victim = next(n.name for n in cluster.nodes if n.name not in ("n1", leader))
        loss = measure_node_loss(fleet, app3, victim, count=3)
    console.print(
        f"  node loss: {loss.failed} of {loss.requests} requests failed, full capacity in "
        f"{loss.to_capacity_s}s (drain: {drain.failed} failed, {drain.to_capacity_s}s)"
    )
    return {
        "nodes": 3,
        "instances": {"drained_app": 2, "lost_app": 3},
        "killed_node": victim,
        "nomad_leader": leader,
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
    return run_alone(bench_node_loss)


if __name__ == "__main__":
    sys.exit(main())
