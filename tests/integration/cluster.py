"""A three-node cluster for the tests that need one (``LocalCluster``, billowin/stack/cluster.py).

Each node is a network namespace with its own Docker Engine, Consul and Nomad servers and a
router; the first also runs the registry and the API. App images are built with the session's
engine and pushed to the cluster's registry (HTTPS with the cluster's CA, with its password),
so no node needs a base image. ``Fleet`` drives the cluster the way a user would: through the
API with an admin token, and through each node's router.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from billowin.settings import Settings
from billowin.stack.cluster import LocalCluster
from billowin.stack.tools import Toolset
from billowin.system import System

from .conftest import Cli, Load, wait_for
from .production import finished, page, push_sample

DOMAIN = "cluster.test"


def new_cluster(root: Path, *, build_docker_host: str | None = None, **api_env: str) -> LocalCluster:
    tools = Toolset.resolve(Settings())  # fails (never skips) when a binary is missing
    return LocalCluster(
        tools,
        root,
        domain=DOMAIN,
        api_env={
            "BILLOWIN_DEPLOY_TIMEOUT": "120",
            "BILLOWIN_METRICS_INTERVAL": "2",
            "BILLOWIN_ACME_AUTO": "false",
            **api_env,
        },
        build_docker_host=build_docker_host,
    )


@contextlib.contextmanager
def running(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The cluster, started; then torn down whole, even when the test failed."""
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Fleet:
    """The cluster as its admin sees it."""

    cluster: LocalCluster
    session_settings: Settings
    base_image: str
    work: Path
    token: str

    @classmethod
    def of(cls, cluster: LocalCluster, session_settings: Settings, base_image: str, work: Path) -> Fleet:
        token = System(cluster.settings).tokens.create("cluster tests admin")
        return cls(cluster, session_settings, base_image, work, token)

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.cluster.api_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def nomad(self) -> Any:
        """Nomad through Billowin's own adapter, as the API sees it."""
        return System(self.cluster.settings).nomad

    def router(self, node: str) -> httpx.Client:
        return httpx.Client(base_url=f"http://{self.cluster.node(node).host}", timeout=5)

    def push(self, app: str, tag: str, greeting: str = "hello") -> str:
        """A sample release built with the session's engine, pushed to the cluster's registry."""
        settings = self.cluster.settings.model_copy(update={"docker_host": self.session_settings.docker_host})
        return push_sample(settings, self.base_image, app, tag, self.work / f"{app}-{tag}", greeting)

    def deploy(self, app: str, ref: str, *, web: int = 2) -> None:
        """Create ``app``, deploy ``ref``, and scale web to ``web`` instances, all running."""
        with self.api() as api:
            made = api.post("/apps", json={"name": app, "repository": "/nonexistent"})
            assert made.status_code == 201, made.text
            queued = api.post(f"/apps/{app}/deploys", json={"image": ref})
            assert queued.status_code == 202, queued.text
            done = finished(api, app, queued.json())
            assert done["state"] == "live", (done["reason"], done["steps"][-3:])
            if web != 1:
                scaled = api.post(f"/apps/{app}/ps/scale", json={"counts": {"web": web}})
                assert scaled.status_code == 200, scaled.text
        wait_for(lambda: len(self.placements(app)) == web, 90, f"{web} running instances of {app}")

    def placements(self, app: str) -> list[str]:
        """The node of each running, healthy instance of ``app``'s web process (Nomad's view)."""
        with self.api() as api:
            resp = api.get(f"/apps/{app}/ps")
        if resp.status_code != 200:
            return []
        return sorted(i["node"] for i in resp.json() if i["process"] == "web" and i["state"] == "running")

    def serves(self, node: str, app: str) -> str:
        with self.router(node) as router:
            return page(router, f"{app}.{DOMAIN}")

    def leaders(self) -> dict[str, str]:
        return self.cluster.leaders()

    def consul_members(self) -> dict[str, int]:
        """Each Consul member's status as the first node's agent sees it (1 alive, 4 failed)."""
        settings = self.cluster.settings
        token = settings.consul_token.get_secret_value() if settings.consul_token else ""
        resp = httpx.get(
            f"{settings.consul_addr}/v1/agent/members", headers={"X-Consul-Token": token}, timeout=3
        )
        return {m["Name"]: m["Status"] for m in resp.json()} if resp.status_code == 200 else {}


def wait_consul_failed(fleet: Fleet, node: str, timeout: float = 60) -> float:
    """The Unix time at which the first node's Consul agent first sees ``node`` failed."""
    wait_for(
        lambda: fleet.consul_members().get(node) not in (None, 1), timeout, f"Consul to mark {node} failed"
    )
    return time.time()


def all_failures(results: list[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for result in results:
        for reason, count in result["failures"].items():
            merged[reason] = merged.get(reason, 0) + count
    return merged


@dataclass
class UnderLoad:
    """What a change of the cluster cost the requests sent meanwhile through the routers."""

    requests: int
    failures: dict[str, int]
    failed_at: list[float]
    to_capacity_s: float
    output: str = ""
    consul_failed_after_s: float = 0.0
    failed_after_consul: int = 0

    @property
    def failed(self) -> int:
        return len(self.failed_at)


def _loaded(fleet: Fleet, app: str, routers: list[str]) -> list[Load]:
    host = f"{app}.{DOMAIN}"
    return [Load(None, host, url=f"http://{fleet.cluster.node(n).host}/") for n in routers]


def _moved_off(fleet: Fleet, app: str, node: str, count: int) -> bool:
    placed = fleet.placements(app)
    return len(placed) == count and node not in placed


def measure_drain(fleet: Fleet, app: str, node: str, cli: Cli, count: int = 2) -> UnderLoad:
    """``nodes:drain node`` with the CLI, under load on every node's router, until ``app`` has
    its ``count`` instances elsewhere."""
    loads = _loaded(fleet, app, [n.name for n in fleet.cluster.nodes])
    with contextlib.ExitStack() as stack:
        for load in loads:
            stack.enter_context(load)
        started = time.time()
        drained = cli("nodes:drain", node, "--deadline", "2m")
        wait_for(lambda: _moved_off(fleet, app, node, count), 60, f"{app}'s instances off {node}")
        to_capacity = time.time() - started
        time.sleep(2)  # load after the move
    results = [load.result for load in loads]
    return UnderLoad(
        requests=sum(r["total"] for r in results),
        failures=all_failures(results),
        failed_at=[t for r in results for t in r["failed_at"]],
        to_capacity_s=round(to_capacity, 2),
        output=drained.stdout + drained.stderr,
    )


def measure_node_loss(fleet: Fleet, app: str, node: str, count: int = 2) -> UnderLoad:
    """Power off ``node`` under load on the other nodes' routers; until ``app`` has its ``count``
    instances on the survivors again (30 s at most, or it fails)."""
    loads = _loaded(fleet, app, [n.name for n in fleet.cluster.nodes if n.name != node])
    with contextlib.ExitStack() as stack:
        for load in loads:
            stack.enter_context(load)
        time.sleep(2)  # load before the loss, to compare with
        killed_at = time.time()
        fleet.cluster.kill(node)
        failed_at = wait_consul_failed(fleet, node)
        wait_for(
            lambda: _moved_off(fleet, app, node, count),
            30 + killed_at - time.time(),
            f"{count} running instances of {app} on the surviving nodes",
        )
        to_capacity = time.time() - killed_at
        time.sleep(3)  # load after full capacity
    results = [load.result for load in loads]
    failed = [t for r in results for t in r["failed_at"]]
    return UnderLoad(
        requests=sum(r["total"] for r in results),
        failures=all_failures(results),
        failed_at=failed,
        to_capacity_s=round(to_capacity, 2),
        consul_failed_after_s=round(failed_at - killed_at, 2),
        failed_after_consul=len([t for t in failed if t > failed_at]),
    )
