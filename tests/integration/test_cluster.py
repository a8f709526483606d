"""A three-node cluster (billowin/stack/cluster.py): instances spread across nodes, every node's
router serves every app, a drain under load fails no request, builds run as Nomad batch jobs
that outlive the API, and losing a node (one of the three servers) under load fails no request
once Consul knows, restores full capacity within 30 s, and loses nothing.

The tests that leave the cluster as they found it share one (``shared``: its API builds on
Nomad, ``BILLOWIN_BUILD_RUNNER=nomad``, its first node the build node, building with the
machine's Docker Engine, which has the base images); the one that kills a node has its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from billowin.stack.single_box import SingleBox
from tests.gitrepo import commit

from .cluster import DOMAIN, Fleet, measure_drain, measure_node_loss, new_cluster, running
from .conftest import Cli, wait_for
from .production import finished


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _fleet(stack: SingleBox, base_image: str, root: Path) -> Iterator[Fleet]:
    cluster = new_cluster(root, build_docker_host=stack.settings.docker_host, BILLOWIN_BUILD_RUNNER="nomad")
    with running(cluster):
        yield Fleet.of(cluster, stack.settings, base_image, root / "images")


@pytest.fixture(scope="module")
def shared(stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One cluster for the tests that leave it whole."""
    yield from _fleet(stack, base_image, Path(tmp_path_factory.mktemp("cluster")))


@pytest.fixture
def own(stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A cluster of its own, for a test that kills a node."""
    yield from _fleet(stack, base_image, Path(tmp_path_factory.mktemp("cluster")))


def test_instances_spread_across_nodes_and_every_router_serves_them(shared: Fleet) -> None:
    fleet = shared
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


def slow_dockerfile_app(repo: Path, base_image: str, marker: str) -> str:
    """A Dockerfile app whose build prints ``marker`` and then takes about ten seconds."""
    repo.mkdir(parents=True)
    (repo / "index.html").write_text(f"built by {marker}\n")
    (repo / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        # The marker through a variable: BuildKit's step title (the line itself) must not match.
        f'RUN m={marker} && echo "$m is starting" && sleep 10 && echo "$m has finished"\n'
        "COPY index.html /srv/www/index.html\n"
        'CMD ["sh", "-c", "exec busybox httpd -f -p \\"$PORT\\" -h /srv/www"]\n'
    )
    return commit(repo)


def test_a_build_runs_as_a_nomad_batch_job_streams_its_log_and_survives_the_api(
    shared: Fleet, tmp_path: Path
) -> None:
    """A Dockerfile app whose build takes a few seconds is deployed by commit; while the batch job
    runs, its log reaches ``builds:output`` on the API; then the API is killed, as a crash would,
    and started again: the pipeline follows the same batch job to its end instead of building
    again, and the app goes live."""
    fleet = shared
    app = f"nb{uuid.uuid4().hex[:8]}"
    marker = f"marker-{uuid.uuid4().hex}"  # unique: BuildKit's cache outlives test sessions
    sha = slow_dockerfile_app(tmp_path / "repo", fleet.base_image, marker)
    cli = Cli(None, tmp_path / "config", api=fleet.cluster.api_url, token=fleet.token)
    cli("apps:create", app, "--repository", str(tmp_path / "repo"))
    queued = cli.json("deploy", app, "--sha", sha)
    build_job = f"billowin-build-{app}-{sha[:12]}"

    def running_on() -> str:
        allocs = [a for a in fleet.nomad().allocations(build_job) if a["ClientStatus"] == "running"]
        return allocs[0]["NodeName"] if allocs else ""

    assert wait_for(running_on, 60, f"the batch job {build_job} to run") == "n1"  # the build node
    # The build's output reaches the API's build log while the job runs.
    wait_for(lambda: f"{marker} is starting" in cli("builds:output", app, queued["id"]).stdout, 60, "the log")
    so_far = cli("builds:output", app, queued["id"]).stdout
    assert f"{marker} has finished" not in so_far, "the build ended before the API could be killed"

    fleet.cluster.first.restart("api", crash=True)  # killed mid-build, then started again
    with fleet.api() as api:
        done = finished(api, app, queued)
    assert done["state"] == "live", (done["reason"], done["steps"][-4:])
    log = cli("builds:output", app, queued["id"]).stdout
    assert f"Following the build {build_job} already running" in log
    assert log.count(f"{marker} is starting") == 1 and f"{marker} has finished" in log
    assert fleet.nomad().current(build_job) is None, "the finished build job was not purged"
    assert wait_for(lambda: fleet.serves("n2", app).startswith(f"built by {marker}"), 60, f"{app}.{DOMAIN}")


def test_draining_a_node_under_load_fails_no_request(shared: Fleet, tmp_path: Path) -> None:
    fleet = shared
    app = _name("drain")
    fleet.deploy(app, fleet.push(app, "v1"), web=2)
    victim = fleet.placements(app)[0]
    cli = Cli(None, tmp_path / "config", api=fleet.cluster.api_url, token=fleet.token)
    try:
        drain = measure_drain(fleet, app, victim, cli)
    finally:
        cli("nodes:activate", victim, ok=False)  # the cluster as it was, for the other tests
    print(f"drain: {drain.requests} requests, {drain.to_capacity_s:.1f}s, failures {drain.failures}")
    assert f"{victim} is drained" in drain.output
    assert drain.failures == {}, drain.failures
    assert drain.requests > 0
    listed = {n["name"]: n for n in cli.json("nodes")}
    assert listed[victim]["eligible"] is True, listed[victim]


def test_losing_a_server_node_under_load_fails_no_request_once_consul_knows_and_loses_nothing(
    own: Fleet,
) -> None:
    fleet = own
    app = _name("loss")
    fleet.deploy(app, fleet.push(app, "v1"), web=3)  # one instance on each node
    with fleet.api() as api:  # a second release, with a config var: state to lose
        changed = api.patch(f"/apps/{app}/config", json={"set": {"GREETING": "bonjour"}})
        assert changed.status_code == 202, changed.text
        assert finished(api, app, changed.json()["job"])["state"] == "live"
    wait_for(lambda: len(fleet.placements(app)) == 3, 60, "three instances of the second release")
    # Not the first node (it holds the API the test talks to), and not Nomad's leader: a new
    # leader gives every client failover_heartbeat_ttl (20 s) before it calls one down, so losing
    # the leader's node takes about 36 s to full capacity (measured by hand; see README).
    leader = fleet.leaders()["nomad"]
    victim = next(n.name for n in fleet.cluster.nodes if n.name not in ("n1", leader))
    loss = measure_node_loss(fleet, app, victim, count=3)
    print(
        f"killed {victim} (a server; Nomad's leader: {leader}): "
        f"full capacity after {loss.to_capacity_s:.1f}s, "
        f"Consul marked it failed after {loss.consul_failed_after_s:.1f}s, "
        f"{loss.failed} of {loss.requests} requests failed: {loss.failures}"
    )
    assert loss.failed_after_consul == 0, (
        f"{loss.failed_after_consul} requests failed after Consul marked {victim} failed: {loss.failures}"
    )
    survivors = [n.name for n in fleet.cluster.nodes if n.name != victim]
    for node in survivors:
        assert fleet.serves(node, app).startswith("bonjour release=v2")

    # One of the three servers is gone: the API answers, deploys work, nothing is lost.
    after = _name("after")
    fleet.deploy(after, fleet.push(after, "v1"), web=1)
    with fleet.api() as api:
        changed = api.patch(f"/apps/{app}/config", json={"set": {"GREETING": "hola"}})
        assert changed.status_code == 202, changed.text
        assert finished(api, app, changed.json()["job"])["state"] == "live"
        releases = api.get(f"/apps/{app}/releases").json()
        apps = {a["name"] for a in api.get("/apps").json()}
        config = api.get(f"/apps/{app}/config", params={"reveal": "true"}).json()["values"]
    assert sorted(r["number"] for r in releases) == [1, 2, 3], releases
    assert {app, after} <= apps
    assert config["GREETING"] == "hola"
    for node in survivors:
        assert wait_for(lambda n=node: fleet.serves(n, app).startswith("hola"), 60, f"{app} on {node}")
        assert wait_for(lambda n=node: fleet.serves(n, after).startswith("hello"), 60, f"{after} on {node}")
