"""The cluster's nodes (``billowin/nodes.py``): the service, its API routes and its CLI verbs, on the fakes.

The service runs on ``FakeScheduler``'s client nodes and ``FakeMembers``; the API is the real
``create_app`` on a ``System`` wired to them, called in-process (``test_api_access.Client``); the
CLI is the real ``billowin`` command whose HTTP client is answered by that same app, so a verb is
followed from the command line to the fake Nomad and back.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from billowin.api.app import api_routes, create_app
from billowin.api.deps import access_rule
from billowin.apps.access import POLICY, Action, Level
from billowin.apps.store import App
from billowin.apps.tokens import Role
from billowin.cli import app as cli_app
from billowin.cli import nodes as cli_nodes
from billowin.cli.client import ApiClient, ClientConfig
from billowin.errors import Conflict, InvalidInput, NotFound, ServiceError
from billowin.nodes import Nodes, parse_deadline
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import FakeMembers, FakeScheduler, InMemoryConfig, InMemoryKV, make_alloc
from tests.unit.test_api_access import Client

WEB1 = "84c9077b-9ad7-13cf-4405-d19220e72209"
WEB2 = "84c9077c-1111-2222-3333-444455556666"  # the same first 7 characters as web-1's
BUILD = "f00dcafe-0000-0000-0000-000000000001"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a unit test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@dataclass
class Cluster:
    """Three nodes: web-1 (two instances of shop and a finished one), web-2 (empty), build-1 (a
    build node, ineligible), with Consul agents of the same names but web-1's (``consul-web-1``)."""

    system: System
    nomad: FakeScheduler
    members: FakeMembers
    service: Nodes
    web1: dict[str, Any]
    web2: dict[str, Any]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    settings = Settings(state_dir=tmp_path, cache_dir=tmp_path, pipeline=False, monitoring=False)
    nomad = FakeScheduler()
    web1 = nomad.add_node(
        "web-1", node_id=WEB1, cpu=4200, reserved_cpu=200, memory=8000, reserved_memory=200,
        consul_name="consul-web-1",
    )  # fmt: skip
    web2 = nomad.add_node("web-2", node_id=WEB2, address="10.0.0.2")
    nomad.add_node("build-1", node_id=BUILD, eligible=False, meta={"billowin.build": "true"})
    nomad.allocs = [
        make_alloc("shop", "web", 0, version=0, node=web1, cpu=1000, memory=256),
        make_alloc("shop", "web", 1, version=0, node=web1, cpu=200, memory=256, status="pending"),
        make_alloc("shop", "web", 2, version=0, node=web1, status="complete", desired="stop"),
    ]
    members = FakeMembers(["consul-web-1", "web-2", "build-1"])
    kv, config = InMemoryKV(max_wait=0.1), InMemoryConfig()
    system = System(settings, kv=kv, nomad=nomad, config=config, builder=None, members=members)
    yield Cluster(system, nomad, members, system.nodes, web1, web2)
    assert "_consul" not in system.__dict__, "nothing built a real Consul client"


# -- listing --------------------------------------------------------------------------------------
def test_nodes_are_listed_with_their_state_allocations_and_resources(cluster: Cluster) -> None:
    listed = cluster.service.all()
    assert [(n.name, n.state, n.eligible, n.roles) for n in listed] == [
        ("build-1", "ineligible", False, ["build"]),
        ("web-1", "ready", True, []),
        ("web-2", "ready", True, []),
    ]
    web1 = listed[1]
    assert (web1.id, web1.address, web1.datacenter, web1.version) == (WEB1, "10.0.0.1", "dc1", "1.6.3")
    assert (web1.allocations, web1.allocations_left) == (1, 2), "running; and running or pending"
    # What the pending and running instances hold, of what the node offers less what it keeps.
    assert (web1.cpu_mhz, web1.cpu_total_mhz) == (1200, 4000)
    assert (web1.memory_mib, web1.memory_total_mib) == (512, 7800)
    assert web1.consul_name == "consul-web-1" and listed[2].consul_name == "web-2", "else the Nomad name"
    assert not web1.draining and web1.drain_deadline is None


def test_a_node_is_named_by_its_name_or_at_least_eight_characters_of_its_id(cluster: Cluster) -> None:
    assert cluster.service.get("web-2").id == WEB2
    assert cluster.service.get("84c9077b").name == "web-1"
    assert cluster.service.get("84C9077B-9AD7").name == "web-1", "ids are matched without case"
    assert cluster.service.get(WEB1).name == "web-1"
    with pytest.raises(NotFound) as short:
        cluster.service.get("84c9")
    assert "at least its first 8 characters" in short.value.hint
    assert "web-1 (84c9077b, ready)" in short.value.hint
    assert "build-1 (f00dcafe, ineligible)" in short.value.hint
    with pytest.raises(NotFound, match="no node is named 'web-3'") as unknown:
        cluster.service.get("web-3")
    assert "web-2 (84c9077c, ready)" in unknown.value.hint
    with pytest.raises(InvalidInput, match="cannot name a node"):
        cluster.service.get("web-1/../purge")


def test_a_name_two_nodes_share_is_refused_with_both_to_choose_from(cluster: Cluster) -> None:
    """A machine set up again registers as a new node under the old name; the old one is down."""
    cluster.nomad.add_node("web-2", node_id="0badf00d-0000-0000-0000-000000000000", status="down")
    with pytest.raises(Conflict, match="'web-2' names 2 nodes") as both:
        cluster.service.get("web-2")
    assert "web-2 (84c9077c, ready)" in both.value.message and "web-2 (0badf00d, down)" in both.value.message
    assert "by its id" in both.value.hint
    assert cluster.service.get("0badf00d").state == "down"


def test_no_node_at_all_says_where_to_look(tmp_path: Path) -> None:
    service = Nodes(FakeScheduler(), FakeMembers)
    assert service.all() == []
    with pytest.raises(NotFound, match="Nomad knows no client node") as none:
        service.get("web-1")
    assert "client" in none.value.hint


# -- drain and activate -------------------------------------------------------------------------
def test_drain_makes_the_node_ineligible_with_a_deadline_and_says_who_asked(cluster: Cluster) -> None:
    drained = cluster.service.drain("web-1", deadline="90s", by="alice")
    assert cluster.nomad.drains == [(WEB1, 90, {"message": "billowin nodes:drain", "by": "alice"})]
    assert (drained.state, drained.eligible, drained.draining, drained.last_drain) == (
        "draining", False, True, "draining",
    )  # fmt: skip
    assert drained.drain_deadline is not None and drained.allocations_left == 2
    cluster.nomad.finish_drain(WEB1)
    done = cluster.service.get("web-1")
    assert (done.state, done.draining, done.last_drain) == ("ineligible", False, "complete")
    assert done.allocations_left == 0


@pytest.mark.parametrize("deadline", ["0s", "5", "5 m", "1d", "25h", "-1m", "5m\n", ""])
def test_a_deadline_is_a_number_and_a_unit_up_to_a_day(cluster: Cluster, deadline: str) -> None:
    with pytest.raises(InvalidInput, match="not a drain deadline") as refused:
        cluster.service.drain("web-1", deadline=deadline)
    assert "5m" in refused.value.hint
    assert cluster.nomad.drains == []


def test_deadlines() -> None:
    assert [parse_deadline(d) for d in ("90s", "5m", "1h", "24h")] == [90, 300, 3600, 86400]


def test_draining_the_last_node_that_can_take_the_work_needs_to_be_meant(cluster: Cluster) -> None:
    cluster.service.drain("web-2")
    with pytest.raises(Conflict, match="web-1 is the only node that can take new allocations") as last:
        cluster.service.drain("web-1")
    assert "--last-node" in last.value.hint and "nodes:activate" in last.value.hint
    assert [d[0] for d in cluster.nomad.drains] == [WEB2]
    cluster.service.drain("web-1", last_node=True)
    assert [d[0] for d in cluster.nomad.drains] == [WEB2, WEB1]


def test_with_no_node_to_move_to_only_a_node_that_runs_nothing_is_drained_freely(cluster: Cluster) -> None:
    cluster.service.drain("web-2")
    cluster.service.drain("web-1", last_node=True)
    build = cluster.nomad.client_nodes[BUILD]
    cluster.nomad.allocs.append(make_alloc("blog", "web", 0, version=0, node=build))
    with pytest.raises(Conflict, match="no other node can take new allocations: draining build-1 stops"):
        cluster.service.drain("build-1")
    cluster.service.drain("web-2", deadline="1h")  # ineligible already, and runs nothing: nothing to lose
    assert [(d[0], d[1]) for d in cluster.nomad.drains] == [(WEB2, 300), (WEB1, 300), (WEB2, 3600)]


def test_activate_ends_a_drain_and_makes_the_node_eligible(cluster: Cluster) -> None:
    cluster.service.drain("web-1")
    back = cluster.service.activate("web-1")
    assert (back.state, back.eligible, back.draining, back.last_drain) == ("ready", True, False, "canceled")
    build = cluster.service.activate("f00dcafe")
    assert (build.state, build.eligible) == ("ready", True), "an ineligible node too"
    assert cluster.nomad.activated == [WEB1, BUILD]


def test_only_remove_reaches_consul(cluster: Cluster) -> None:
    def no_consul() -> FakeMembers:
        raise AssertionError("asked Consul")

    service = Nodes(cluster.nomad, no_consul)
    service.all()
    service.drain("web-2")
    service.activate("web-2")
    with pytest.raises(AssertionError, match="asked Consul"):
        cluster.nomad.client_nodes[WEB2]["Status"] = "down"
        service.remove("web-2")


# -- remove -------------------------------------------------------------------------------------
def test_a_node_that_runs_things_is_not_removed(cluster: Cluster) -> None:
    with pytest.raises(Conflict, match="web-1 is ready, and eligible") as ready:
        cluster.service.remove("web-1")
    assert "`billowin nodes:drain web-1`" in ready.value.hint
    cluster.service.drain("web-1")
    with pytest.raises(Conflict, match="still draining: 2 allocation") as draining:
        cluster.service.remove("web-1")
    assert "Wait for the drain" in draining.value.hint
    # What `nomad node eligibility -disable` does: no drain, and what runs there stays.
    cluster.nomad.client_nodes[WEB2]["SchedulingEligibility"] = "ineligible"
    cluster.nomad.allocs.append(make_alloc("blog", "web", 0, version=0, node=cluster.web2))
    with pytest.raises(Conflict, match="ineligible but still runs 1 allocation"):
        cluster.service.remove("web-2")
    assert cluster.nomad.purged == [] and cluster.members.left == []


def test_a_down_node_is_purged_and_its_consul_agent_made_to_leave(cluster: Cluster) -> None:
    cluster.nomad.client_nodes[WEB1]["Status"] = "down"
    removed = cluster.service.remove("84c9077b")
    assert (removed.id, removed.name, removed.nomad, removed.consul) == (WEB1, "web-1", "purged", "left")
    assert removed.warnings == []
    assert cluster.nomad.purged == [WEB1]
    assert cluster.members.left == [("consul-web-1", True)], "by its Consul name, pruned"
    assert [n.name for n in cluster.service.all()] == ["build-1", "web-2"]


def test_a_drained_node_still_up_is_removed_with_a_warning_that_it_will_come_back(cluster: Cluster) -> None:
    cluster.service.drain("web-1")
    cluster.nomad.finish_drain(WEB1)
    removed = cluster.service.remove("web-1")
    assert cluster.nomad.purged == [WEB1] and removed.consul == "left"
    (warning,) = removed.warnings
    assert "still runs: it registers the node again at its next heartbeat" in warning.message
    assert "10.0.0.1" in warning.hint and "systemctl stop billowin-nomad" in warning.hint


def test_a_drained_node_is_removed_once_what_it_stopped_is_gone(cluster: Cluster) -> None:
    cluster.service.drain("web-1")
    cluster.nomad.finish_drain(WEB1)
    cluster.nomad.allocs[0].update(ClientStatus="running", DesiredStatus="stop")  # its shutdown delay
    with pytest.raises(Conflict, match=r"web-1 is drained, but 1 allocation\(s\) there are still") as soon:
        cluster.service.remove("web-1")
    assert "Wait a few seconds" in soon.value.hint and cluster.nomad.purged == []
    cluster.nomad.allocs[0]["ClientStatus"] = "complete"
    assert cluster.service.remove("web-1").nomad == "purged"


def test_consul_failing_is_reported_and_does_not_undo_the_purge(cluster: Cluster) -> None:
    cluster.nomad.client_nodes[WEB2]["Status"] = "down"
    cluster.members.error = ServiceError("consul", "member web-2 failed: 403 Permission denied")
    removed = cluster.service.remove("web-2")
    assert cluster.nomad.purged == [WEB2] and removed.consul == "failed"
    (warning,) = removed.warnings
    assert "Nomad forgot web-2, but Consul did not let it go" in warning.message and "403" in warning.message
    assert "consul force-leave -prune web-2" in warning.hint and "operator:write" in warning.hint


def test_a_node_consul_does_not_know_is_removed_all_the_same(cluster: Cluster) -> None:
    cluster.nomad.client_nodes[WEB2]["Status"] = "down"
    cluster.members.members.clear()
    removed = cluster.service.remove("web-2")
    assert (removed.consul, removed.warnings) == ("not-a-member", [])


def test_ps_shows_the_node_each_instance_runs_on(cluster: Cluster) -> None:
    cluster.system.platform.create(App(name="shop", repository="https://github.com/acme/shop"))
    instances = cluster.system.platform.ps("shop")
    assert [(i.name, i.node) for i in instances] == [("web.1", "web-1"), ("web.2", "web-1")]


# -- the API -------------------------------------------------------------------------------------
@dataclass
class Api:
    app: FastAPI
    client: Client
    admin: dict[str, str]
    deploy: dict[str, str]
    read: dict[str, str]
    audit_file: Path

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]


@pytest.fixture
def api(cluster: Cluster, tmp_path: Path) -> Iterator[Api]:
    system = cluster.system
    system.platform.create(App(name="shop", repository="https://github.com/acme/shop"))

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    admin = bearer(system.access.issue("alice", role=Role.ADMIN)[1])
    deploy = bearer(system.access.issue("ci", role=Role.DEPLOY, apps=["shop"])[1])
    read = bearer(system.access.issue("viewer", role=Role.READ, apps=["shop"])[1])
    app = create_app(system.settings, system=system)
    client = Client(app, "http://testserver")
    yield Api(app, client, admin, deploy, read, tmp_path / "audit.jsonl")
    client.close()


def test_every_node_route_is_for_admins_only(api: Api) -> None:
    routes = [r for r in api_routes(api.app) if r.path.startswith("/nodes")]
    assert {(m, r.path) for r in routes for m in r.methods or ()} == {
        ("GET", "/nodes"), ("GET", "/nodes/{node}"), ("POST", "/nodes/{node}/drain"),
        ("POST", "/nodes/{node}/activate"), ("DELETE", "/nodes/{node}"),
    }  # fmt: skip
    for route in routes:
        rule = access_rule(route)
        assert isinstance(rule, Action) and POLICY[rule] == Level.ADMIN, route.path
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/nodes", {}), ("GET", "/nodes/web-1", {}), ("POST", "/nodes/web-1/drain", {"json": {}}),
        ("POST", "/nodes/web-1/activate", {}), ("DELETE", "/nodes/web-1?confirm=web-1", {}),
    ]  # fmt: skip
    for token in (api.deploy, api.read):
        for method, path, extra in calls:
            resp = api.client.request(method, path, headers=token, **extra)
            assert resp.status_code == 403, (method, path)
            assert "only an admin token may" in resp.json()["message"]


def test_the_api_lists_and_shows_nodes(api: Api) -> None:
    listed = api.client.get("/nodes", headers=api.admin)
    assert listed.status_code == 200
    assert [n["name"] for n in listed.json()] == ["build-1", "web-1", "web-2"]
    one = api.client.get("/nodes/84c9077b", headers=api.admin).json()
    assert one["name"] == "web-1" and one["cpu_mhz"] == 1200 and one["memory_total_mib"] == 7800
    assert "SecretID" not in listed.text and "secret" not in listed.text.lower()


def test_the_api_refuses_a_malformed_unknown_or_ambiguous_node_plainly(api: Api, cluster: Cluster) -> None:
    bad = api.client.get("/nodes/web%201", headers=api.admin)
    assert bad.status_code == 422 and bad.json()["error"] == "InvalidInput"
    unknown = api.client.get("/nodes/web-9", headers=api.admin)
    assert unknown.status_code == 404 and "web-1 (84c9077b, ready)" in unknown.json()["hint"]
    cluster.nomad.add_node("web-1", status="down")
    both = api.client.post("/nodes/web-1/drain", headers=api.admin, json={})
    assert both.status_code == 409 and "names 2 nodes" in both.json()["message"]
    late = api.client.post("/nodes/web-2/drain", headers=api.admin, json={"deadline": "2d"})
    assert late.status_code == 422 and cluster.nomad.drains == []


def test_drain_activate_and_remove_over_the_api_are_in_the_audit_log(api: Api, cluster: Cluster) -> None:
    drained = api.client.post("/nodes/web-2/drain", headers=api.admin, json={"deadline": "1h"})
    assert drained.status_code == 202 and drained.json()["state"] == "draining"
    assert cluster.nomad.drains == [(WEB2, 3600, {"message": "billowin nodes:drain", "by": "alice"})]
    assert api.client.post("/nodes/web-2/activate", headers=api.admin).json()["state"] == "ready"
    unconfirmed = api.client.delete("/nodes/web-2", headers=api.admin, params={"confirm": "web-1"})
    assert unconfirmed.status_code == 422 and "--confirm web-2" in unconfirmed.json()["hint"]
    refused = api.client.delete("/nodes/web-2", headers=api.admin, params={"confirm": "web-2"})
    assert refused.status_code == 409 and "nodes:drain web-2" in refused.json()["hint"]
    cluster.nomad.client_nodes[WEB2]["Status"] = "down"
    removed = api.client.delete("/nodes/web-2", headers=api.admin, params={"confirm": "web-2"})
    assert removed.status_code == 200 and removed.json()["consul"] == "left"
    entries = [(e["action"], e["path"], e["status"], e["actor"]) for e in api.audit()]
    assert entries == [
        ("nodes:drain", "/nodes/web-2/drain", 202, "alice"),
        ("nodes:activate", "/nodes/web-2/activate", 200, "alice"),
        ("nodes:remove", "/nodes/web-2", 422, "alice"),
        ("nodes:remove", "/nodes/web-2", 409, "alice"),
        ("nodes:remove", "/nodes/web-2", 200, "alice"),
    ]
    assert api.client.get("/nodes", headers=api.admin).status_code == 200
    assert len(api.audit()) == 5, "looking is not audited"


# -- the CLI, through the API, on the fakes -------------------------------------------------------
@pytest.fixture
def cli(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``billowin …`` with its HTTP client talking to the in-process API as the admin."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("BILLOWIN_API_URL", "http://testserver")
    monkeypatch.setenv("BILLOWIN_API_TOKEN", api.admin["Authorization"].removeprefix("Bearer "))
    monkeypatch.setattr(cli_nodes, "POLL_SECONDS", 0)
    original = ApiClient.__init__

    def answer(request: httpx.Request) -> httpx.Response:
        url, headers = str(request.url), request.headers
        resp = api.client.request(request.method, url, headers=headers, content=request.content)
        return httpx.Response(resp.status_code, headers=resp.headers, content=resp.content)

    def init(self: ApiClient, config: ClientConfig) -> None:
        original(self, config)
        self.http = httpx.Client(
            base_url=config.api_url, headers=self.http.headers, transport=httpx.MockTransport(answer)
        )

    monkeypatch.setattr(ApiClient, "__init__", init)

    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli_app, list(args), input=input, env={"COLUMNS": "200"})

    return run


def test_nodes_prints_a_table_of_states_allocations_cpu_and_memory(cli: Any) -> None:
    result = cli("nodes")
    assert result.exit_code == 0, result.output
    web1 = next(line for line in result.output.splitlines() if "web-1" in line)
    for cell in ("84c9077b", "10.0.0.1", "ready", "yes", "1200/4000 MHz", "512/7800 MiB"):
        assert cell in web1, (cell, web1)
    build = next(line for line in result.output.splitlines() if "build-1" in line)
    assert "ineligible" in build and " no " in build and "build" in build.split("MiB")[-1]
    listed = json.loads(cli("nodes", "--json").stdout)
    assert [n["name"] for n in listed] == ["build-1", "web-1", "web-2"]


def test_nodes_drain_follows_the_drain_to_its_end_and_says_how_to_undo_it(cli: Any, cluster: Cluster) -> None:
    cluster.nomad.drain_progress = True  # one allocation moves each time the node is looked at
    result = cli("nodes:drain", "web-1", "--deadline", "10m")
    assert result.exit_code == 0, result.output
    assert cluster.nomad.drains[0][:2] == (WEB1, 600)
    lines = result.output.splitlines()
    assert lines[0].startswith("Draining web-1 (84c9077b): nothing new is placed there, and its ")
    assert "allocation(s) move to other nodes; what is left after 10m is stopped." in lines[0]
    left = [int(line.split()[1]) for line in lines if "left to move" in line]
    assert left == sorted(left, reverse=True) and left[-1] == 0, left
    assert "web-1 is drained: nothing runs there" in result.output
    assert "To put it back in service: `billowin nodes:activate web-1`." in result.output
    assert "`billowin nodes:remove web-1 --confirm web-1`" in result.output


def test_nodes_drain_says_what_a_deadline_looks_like_before_it_asks(cli: Any, cluster: Cluster) -> None:
    result = cli("nodes:drain", "web-1", "--deadline", "2 days")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: '2 days' is not a drain deadline",
        "what to do: Give one like 90s, 5m or 1h (at most 24h).",
    ]
    assert cluster.nomad.drains == []


def test_nodes_drain_no_wait_only_starts_it(cli: Any, cluster: Cluster) -> None:
    result = cli("nodes:drain", "84c9077c", "--no-wait")
    assert result.exit_code == 0, result.output
    assert cluster.nomad.drains[0][:2] == (WEB2, 300), "5m unless told otherwise"
    assert "Follow it with `billowin nodes`." in result.output and "nodes:activate web-2" in result.output
    assert "left to move" not in result.output


def test_nodes_drain_of_the_last_node_fails_with_what_to_do(cli: Any, cluster: Cluster) -> None:
    cluster.nomad.drain_node(WEB2, deadline=60)
    result = cli("nodes:drain", "web-1", "--no-wait")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("error: web-1 is the only node that can take new allocations")
    assert lines[-1].startswith("what to do: ") and "--last-node" in result.output
    assert cli("nodes:drain", "web-1", "--no-wait", "--last-node").exit_code == 0


def test_nodes_drain_that_gets_canceled_exits_non_zero(cli: Any, cluster: Cluster, monkeypatch: Any) -> None:
    looks = 0
    node = cluster.nomad.node

    def activated_meanwhile(node_id: str) -> dict[str, Any]:
        nonlocal looks
        looks += 1
        if looks == 3:  # the look after the drain started: someone ran nodes:activate
            cluster.nomad.activate_node(node_id)
        return node(node_id)

    monkeypatch.setattr(cluster.nomad, "node", activated_meanwhile)
    result = cli("nodes:drain", "web-1")
    assert result.exit_code == 1, result.output
    assert "The drain of web-1 was canceled" in result.output and "it is ready" in result.output


def test_nodes_activate_and_an_unknown_node(cli: Any, cluster: Cluster) -> None:
    cluster.nomad.drain_node(WEB1, deadline=60)
    result = cli("nodes:activate", "web-1")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("web-1 is ready: new allocations may be placed there again")
    unknown = cli("nodes:activate", "web-9")
    assert unknown.exit_code == 1
    assert unknown.output.splitlines()[0] == "error: no node is named 'web-9' or has an id starting 'web-9'"
    assert "build-1 (f00dcafe, ineligible)" in unknown.output


def test_nodes_remove_asks_for_the_node_again_and_prints_warnings(cli: Any, cluster: Cluster) -> None:
    typo = cli("nodes:remove", "web-2", input="web-3\n")
    assert typo.exit_code == 1 and "nothing was removed" in typo.output
    assert cluster.nomad.purged == []
    refused = cli("nodes:remove", "web-2", "--confirm", "web-2")
    assert refused.exit_code == 1 and "error: web-2 is ready, and eligible" in refused.output
    cluster.nomad.drain_node(WEB2, deadline=60)
    cluster.nomad.finish_drain(WEB2)
    cluster.members.error = ServiceError("consul", "member web-2 failed: 403 Permission denied")
    result = cli("nodes:remove", "web-2", input="web-2\n")
    assert result.exit_code == 0, result.output
    assert "Removed web-2 (84c9077c): Nomad forgot it; Consul: see below." in result.output
    assert result.output.count("warning: ") == 2 and result.output.count("what to do: ") == 2
    assert "consul force-leave -prune web-2" in result.output
    assert cluster.nomad.purged == [WEB2]


def test_ps_has_a_node_column(cli: Any) -> None:
    result = cli("ps", "shop")
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[1]
    assert "node" in header.split() and "web-1" in result.output
