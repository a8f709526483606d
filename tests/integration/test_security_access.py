"""Scoped tokens, dashboard sessions and CSRF, and the audit log, against the real API and Consul.

Over real HTTP to the session's API (``stack``): a ``deploy`` token for app A is
refused every mutating route of app B, a ``read`` token every mutating route at
all (the routes come from the app's own route table, so a new one cannot be
left out); expired and revoked tokens get 401; the dashboard's cookie does not
open the JSON API and its forms need the session's CSRF token; every change,
refused or not, lands in the audit log without the values it carried.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from billowin.api.app import api_routes, create_app
from billowin.apps.store import App
from billowin.apps.tokens import Role
from billowin.settings import Settings
from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.fakes import own_certificate

from .conftest import REPO, wait_for

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Mutating routes no token role guards, and why.
NODE = "billowin"  # the single box's Nomad node (single_box.py names it)
EXEMPT = {
    ("POST", "/dashboard/login"): "anyone may try to log in (the token posted is the credential)",
    ("POST", "/dashboard/logout"): "any session may end itself (it still needs its CSRF token)",
}


@dataclass
class World:
    stack: SingleBox
    system: System
    api: str
    a: str  # two apps, never deployed
    b: str
    admin: str
    deploy_a: str
    read_a: str
    addon: str  # B's Redis add-on, ready: what a refused add-on call could have touched

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.api, headers=headers, timeout=20, follow_redirects=False)

    def jobs(self, app: str) -> list[dict[str, Any]]:
        with self.client(self.admin) as c:
            resp = c.get(f"/apps/{app}/deploys")
            assert resp.status_code == 200, resp.text
            found: list[dict[str, Any]] = resp.json()
            return found


@pytest.fixture(scope="module")
def world(stack: SingleBox) -> Iterator[World]:
    system = System(stack.settings)
    suffix = uuid.uuid4().hex[:8]
    a, b = f"sa{suffix}", f"sb{suffix}"
    for name in (a, b):
        system.apps.create(App(name=name, repository="/nonexistent"))
    world = World(
        stack=stack,
        system=system,
        api=f"http://127.0.0.1:{stack.ports.api}",
        a=a,
        b=b,
        admin=system.tokens.create("security admin"),
        deploy_a=system.access.issue("deploy A", role=Role.DEPLOY, apps=[a])[1],
        read_a=system.access.issue("read A", role=Role.READ, apps=[a])[1],
        addon=f"{b}-cache",
    )
    with world.client(world.admin) as c:
        made = c.post(f"/apps/{b}/addons", json={"kind": "redis", "name": world.addon}, timeout=300)
        assert made.status_code == 202, made.text

        def ready() -> bool:
            found = c.get(f"/apps/{b}/addons/{world.addon}").json()
            assert found["state"] != "failed", found["reason"]
            return found["state"] == "ready" and all(a["linked"] for a in found["attachments"])

        wait_for(ready, 300, f"{world.addon} to be ready")
    yield world
    with world.client(world.admin) as c:
        c.delete(f"/apps/{b}/addons/{world.addon}", params={"confirm": world.addon}, timeout=120)


@contextmanager
def dashboard(world: World, token: str) -> Iterator[tuple[httpx.Client, str]]:
    """A browser-like client logged in to the dashboard, and the CSRF token of its forms."""
    with world.client() as client:
        resp = client.post("/dashboard/login", data={"token": token})
        assert resp.status_code == 303, resp.text
        assert "billowin_session" in client.cookies
        page = client.get(f"/dashboard/apps/{world.a}")
        assert page.status_code == 200, page.text
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, "the dashboard's forms carry no CSRF token"
        yield client, match[1]


# How to call each mutating route, with a body that would really do something if allowed.
Call = Callable[[World, str, str], dict[str, Any]]  # (world, target app, csrf) -> request kwargs


def upload(app: str) -> dict[str, str]:
    chain, key = own_certificate([f"{app}.localhost"])
    return {"chain": chain, "key": key}


CALLS: dict[tuple[str, str], Call] = {
    ("POST", "/apps"): lambda w, app, _: {"json": {"name": f"{app}x", "repository": "/nonexistent"}},
    ("DELETE", "/apps/{app}"): lambda w, app, _: {"params": {"confirm": app}},
    ("PATCH", "/apps/{app}/config"): lambda w, app, _: {"json": {"set": {"SECURITY_PROBE": "1"}}},
    ("POST", "/apps/{app}/domains"): lambda w, app, _: {"json": {"domain": f"{app}.example.com"}},
    ("DELETE", "/apps/{app}/domains/{domain}"): lambda w, app, _: {},
    ("POST", "/apps/{app}/certs"): lambda w, app, _: {"json": upload(app)},
    ("DELETE", "/apps/{app}/certs/{name}"): lambda w, app, _: {},
    ("PUT", "/apps/{app}/redirect"): lambda w, app, _: {"json": {"enabled": False}},
    ("POST", "/apps/{app}/ps/scale"): lambda w, app, _: {"json": {"counts": {"web": 2}}},
    ("POST", "/apps/{app}/ps/restart"): lambda w, app, _: {"json": {}},
    ("POST", "/apps/{app}/releases/rollback"): lambda w, app, _: {"json": {}},
    ("POST", "/apps/{app}/deploys"): lambda w, app, _: {"json": {"image": f"127.0.0.1:5000/{app}:probe"}},
    ("POST", "/apps/{app}/runs"): lambda w, app, _: {"json": {"command": "env", "timeout": 30}},
    ("POST", "/tokens"): lambda w, app, _: {"json": {"name": "escalation", "role": "admin"}},
    ("DELETE", "/tokens/{token_id}"): lambda w, app, _: {},
    # Review apps: turning them on would copy the app's config into every pull request's app.
    ("PUT", "/apps/{app}/review-apps"): lambda w, app, _: {"json": {"enabled": True, "config_from": app}},
    ("POST", "/apps/{app}/review-apps/{number}/approve"): lambda w, app, _: {},
    # Add-ons and volumes: each would create, hand over, overwrite or delete data.
    ("POST", "/apps/{app}/addons"): lambda w, app, _: {"json": {"kind": "redis", "name": f"{app}-probe"}},
    ("DELETE", "/apps/{app}/addons/{name}"): lambda w, app, _: {"params": {"confirm": w.addon}},
    ("PUT", "/apps/{app}/addons/{name}/attachment"): lambda w, app, _: {"json": {"as": "PROBE_URL"}},
    ("DELETE", "/apps/{app}/addons/{name}/attachment"): lambda w, app, _: {},
    ("POST", "/apps/{app}/addons/{name}/backups"): lambda w, app, _: {},
    ("POST", "/apps/{app}/addons/{name}/backups/{backup}/restore"): lambda w, app, _: {"json": {}},
    ("POST", "/apps/{app}/volumes"): lambda w, app, _: {"json": {"name": "data", "path": "/data"}},
    ("DELETE", "/apps/{app}/volumes/{name}"): lambda w, app, _: {},
    ("POST", "/dashboard/apps/{app}/rollback"): lambda w, app, csrf: {"data": {"release": "1", "csrf": csrf}},
    # On the session's own node: allowed, these would drain it or take it out.
    ("POST", "/nodes/{node}/drain"): lambda w, app, _: {"json": {"deadline": "5m", "last_node": True}},
    ("POST", "/nodes/{node}/activate"): lambda w, app, _: {},
    ("DELETE", "/nodes/{node}"): lambda w, app, _: {"params": {"confirm": NODE}},
}


def mutating_routes() -> set[tuple[str, str]]:
    """Every mutating route of the API, from its own route table (the webhooks verify signatures)."""
    app = create_app(Settings(pipeline=False, monitoring=False))  # builds nothing until used
    return {
        (method, route.path)
        for route in api_routes(app)
        for method in (route.methods or set()) & MUTATING
        if not route.path.startswith("/hooks/")
    }


def test_every_mutating_route_is_covered() -> None:
    routes = mutating_routes()
    missing = routes - set(CALLS) - set(EXEMPT)
    assert not missing, f"mutating routes no role test calls (add them to CALLS): {sorted(missing)}"
    assert not set(CALLS) - routes, f"CALLS names routes that are gone: {sorted(set(CALLS) - routes)}"


def name_in(world: World, path: str, target: str) -> str:
    """What ``{name}`` is in ``path``: B's add-on, a volume, or a certificate's name."""
    if "/addons/" in path:
        return world.addon
    return "data" if "/volumes/" in path else f"{target}.localhost"


def refused_everywhere(world: World, token: str, target: str) -> list[str]:
    """Call every mutating route on ``target`` with ``token``; the calls that were not refused with 403."""
    admin_id = world.admin.split("_")[1]
    wrong = []
    with world.client(token) as api, dashboard(world, token) as (browser, csrf):
        for (method, path), call in sorted(CALLS.items()):
            name = name_in(world, path, target)
            url = (
                path.replace("{app}", target)
                .replace("{domain}", f"{target}.example.com")
                .replace("{token_id}", admin_id)
                .replace("{name}", name)
                .replace("{backup}", "b001")
                .replace("{node}", NODE)
                .replace("{number}", "1")
            )
            client = browser if path.startswith("/dashboard/") else api
            resp = client.request(method, url, **call(world, target, csrf))
            if resp.status_code != 403:
                wrong.append(f"{method} {url}: {resp.status_code} {resp.text[:200]}")
            elif not path.startswith("/dashboard/"):
                assert resp.json()["hint"], f"{method} {url}: a 403 says what to do"
    return wrong


def snapshot(world: World, app: str) -> dict[str, Any]:
    """What a refused call could have changed: the app, its config, domains, jobs, and the tokens."""
    with world.client(world.admin) as c:
        info = c.get(f"/apps/{app}")
        assert info.status_code == 200, f"{app} is gone: {info.text}"
        return {
            "config": c.get(f"/apps/{app}/config", params={"reveal": "true"}).json(),
            "domains": c.get(f"/apps/{app}/domains").json(),
            "certs": c.get(f"/apps/{app}/certs").json(),
            "redirect": c.get(f"/apps/{app}/redirect").json(),
            "review_apps": c.get(f"/apps/{app}/review-apps").json(),
            "jobs": [j["id"] for j in world.jobs(app)],
            "apps": sorted(a["name"] for a in c.get("/apps").json()),
            "tokens": [(t["id"], t["state"]) for t in c.get("/tokens").json()],
            "nodes": [(n["name"], n["state"], n["eligible"]) for n in c.get("/nodes").json()],
            "addons": [
                (x["name"], x["state"], sorted((t["app"], t["var"]) for t in x["attachments"]))
                for x in c.get(f"/apps/{app}/addons").json()
            ],
            "backups": c.get(f"/apps/{world.b}/addons/{world.addon}/backups").json(),
            "volumes": c.get(f"/apps/{app}/volumes").json(),
        }


def test_a_deploy_token_for_one_app_is_refused_every_change_to_another(world: World) -> None:
    before = snapshot(world, world.b)
    wrong = refused_everywhere(world, world.deploy_a, world.b)
    assert not wrong, "a deploy token for A changed B:\n" + "\n".join(wrong)
    assert snapshot(world, world.b) == before


def test_a_read_token_is_refused_every_change_even_to_its_own_app(world: World) -> None:
    before = snapshot(world, world.a)
    wrong = refused_everywhere(world, world.read_a, world.a)
    assert not wrong, "a read token changed something:\n" + "\n".join(wrong)
    assert snapshot(world, world.a) == before
    with world.client(world.read_a) as c:
        assert [a["name"] for a in c.get("/apps").json()] == [world.a]
        assert c.get(f"/apps/{world.a}/config").status_code == 200
        assert c.get(f"/apps/{world.a}/config", params={"reveal": "true"}).status_code == 403
        assert c.get(f"/apps/{world.a}/logs").status_code == 403


def test_a_deploy_token_cannot_attach_another_apps_add_on_to_its_own_app(world: World) -> None:
    before = snapshot(world, world.b)
    with world.client(world.deploy_a) as c:
        resp = c.put(f"/apps/{world.a}/addons/{world.addon}/attachment", json={"as": "STOLEN_URL"})
        assert resp.status_code == 403, resp.text
        assert world.b in resp.json()["message"] and resp.json()["hint"]
        assert "STOLEN_URL" not in c.get(f"/apps/{world.a}/config").json()["values"]
    assert snapshot(world, world.b) == before


def test_a_deploy_token_can_change_its_own_app(world: World) -> None:
    with world.client(world.deploy_a) as c:
        resp = c.patch(f"/apps/{world.a}/config", json={"set": {"OWN_APP": "yes"}})
        assert resp.status_code == 202, resp.text
        job = resp.json()["job"]
        assert job is not None and job["kind"] == "config"
        assert any(j["id"] == job["id"] for j in c.get(f"/apps/{world.a}/deploys").json())
        assert [a["name"] for a in c.get("/apps").json()] == [world.a]


def test_expired_and_revoked_tokens_get_401_with_a_hint(world: World) -> None:
    expired = world.system.tokens.create("expired", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with world.client(expired) as c:
        resp = c.get("/apps")
    assert resp.status_code == 401 and "expired" in resp.json()["message"], resp.text
    assert resp.json()["hint"]

    record, token = world.system.access.issue("soon revoked", role=Role.READ, apps=[world.a])
    with (
        world.client(token) as c,
        world.client(world.admin) as admin,
        dashboard(world, token) as (browser, _),
    ):
        assert c.get("/apps").status_code == 200
        assert admin.delete(f"/tokens/{record.id}").json()["state"] == "revoked"
        resp = c.get("/apps")
        assert resp.status_code == 401 and "revoked" in resp.json()["message"], resp.text
        assert resp.json()["hint"]
        # Its dashboard session ended with it.
        assert browser.get("/dashboard").headers["location"] == "/dashboard/login"


def test_a_cross_site_form_post_with_only_the_cookie_is_refused(world: World) -> None:
    world.system.releases.create(world.a, f"127.0.0.1:5000/{world.a}:v1", [], [], job_version=0)
    before = len(world.jobs(world.a))
    with dashboard(world, world.deploy_a) as (browser, csrf):
        # What a page on another site (or on a same-site app) can make a logged-in browser send.
        for headers in ({}, {"Origin": "http://evil.test", "Sec-Fetch-Site": "cross-site"}):
            resp = browser.post(f"/dashboard/apps/{world.a}/rollback", data={"release": "1"}, headers=headers)
            assert resp.status_code == 403, resp.text
        resp = browser.post(
            f"/dashboard/apps/{world.a}/rollback",
            data={"release": "1", "csrf": csrf},
            headers={"Sec-Fetch-Site": "same-site", "Origin": f"http://{world.a}.localhost:8080"},
        )
        assert resp.status_code == 403, "an app on the same site is another origin"
        assert len(world.jobs(world.a)) == before, "a refused form post queued a rollback"

        # The cookie alone opens no JSON API route.
        session = browser.cookies["billowin_session"]
        for method, path in (("GET", "/apps"), ("POST", f"/apps/{world.a}/releases/rollback")):
            resp = httpx.request(
                method, world.api + path, headers={"Cookie": f"billowin_session={session}"}, json={}
            )
            assert resp.status_code == 401, (method, path, resp.text)
        assert len(world.jobs(world.a)) == before

        # The dashboard's own form (same origin, the session's CSRF token) still works.
        resp = browser.post(
            f"/dashboard/apps/{world.a}/rollback",
            data={"release": "1", "csrf": csrf},
            headers={"Origin": world.api, "Sec-Fetch-Site": "same-origin"},
        )
        assert resp.status_code == 303, resp.text
        assert len(world.jobs(world.a)) == before + 1


def test_a_json_route_refuses_a_text_plain_body(world: World) -> None:
    before = len(world.jobs(world.a))
    with world.client(world.deploy_a) as c:
        resp = c.patch(
            f"/apps/{world.a}/config",
            content=json.dumps({"set": {"PLAIN": "1"}}),
            headers={"Content-Type": "text/plain"},
        )
    assert resp.status_code == 415, resp.text
    assert "JSON" in resp.json()["hint"]
    assert len(world.jobs(world.a)) == before


def test_health_says_only_ok_without_an_admin_token(world: World) -> None:
    with world.client() as c:
        resp = c.get("/health")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    with world.client(world.deploy_a) as c:
        assert c.get("/health").json() == {"status": "ok"}
    with world.client(world.admin) as c:
        detail = c.get("/health").json()
    assert detail["ok"] is True and set(detail["components"]) >= {"nomad", "consul"}
    with world.client() as c:
        assert c.get("/openapi.json").json()["info"]["version"] == "1"


def audit_file(world: World) -> Path:
    return world.stack.state_dir / "audit.jsonl"


def test_changes_and_refusals_are_audited_without_their_values(world: World) -> None:
    secret = f"audit-secret-{uuid.uuid4().hex}"
    with world.client(world.deploy_a) as c:
        assert c.patch(f"/apps/{world.a}/config", json={"set": {"AUDITED": secret}}).status_code == 202
        assert c.patch(f"/apps/{world.b}/config", json={"set": {"AUDITED": secret}}).status_code == 403

    def entries() -> list[dict[str, Any]]:
        with world.client(world.admin) as admin:
            found: list[dict[str, Any]] = admin.get("/audit", params={"limit": 1000}).json()
            return found

    def ours(found: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (e["actor"], e["action"], e["app"], e["status"])
            for e in found
            if e["action"] == "config:set" and e["actor"] == "deploy A"
        ]

    # The entry is on disk before the answer leaves the API: nothing to wait for.
    assert ours(entries())[-2:] == [
        ("deploy A", "config:set", world.a, 202),
        ("deploy A", "config:set", world.b, 403),
    ]
    newest = [e for e in entries() if e["actor"] == "deploy A"][-1]
    assert newest["token_id"] == world.deploy_a.split("_")[1]
    assert newest["route"] == "/apps/{app}/config" and newest["method"] == "PATCH"

    text = audit_file(world).read_text()
    assert secret not in text
    for token in (world.admin, world.deploy_a, world.read_a):
        assert token not in text and token.split("_", 2)[2] not in text

    # A scoped token sees only its app's entries.
    with world.client(world.read_a) as c:
        seen = c.get("/audit").json()
        assert seen and {e["app"] for e in seen} == {world.a}
        assert c.get("/audit", params={"app": world.b}).status_code == 403


@pytest.fixture
def cli_env(world: World, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of an admin's shell on the Billowin host (Consul's address, the API and a login)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLOWIN_", "NOMAD_", "CONSUL_"))}
    env |= world.stack.env() | {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "BILLOWIN_API_URL": world.api,
        "BILLOWIN_API_TOKEN": world.admin,
        "COLUMNS": "200",
    }
    yield env


def billowin(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billowin.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_token_and_audit_verbs(world: World, cli_env: dict[str, str]) -> None:
    made = billowin(
        cli_env, "tokens:create", "cli reader", "--role", "read", "--app", world.a, "--expires", "1d"
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"bw_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", token), made.stdout
    token_id = token.split("_")[1]
    with world.client(token) as c:
        assert c.get(f"/apps/{world.a}").status_code == 200

    listed = billowin(cli_env, "tokens", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = next(t for t in json.loads(listed.stdout) if t["id"] == token_id)
    shown = (mine["name"], mine["role"], mine["apps"], mine["state"])
    assert shown == ("cli reader", "read", [world.a], "active")
    assert mine["expires_at"] and "sha256" not in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout

    refused = billowin(cli_env, "tokens:create", "bad", "--role", "deploy")
    assert refused.returncode == 1 and "needs the apps" in refused.stderr

    revoked = billowin(cli_env, "tokens:revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    with world.client(token) as c:
        assert c.get(f"/apps/{world.a}").status_code == 401

    with world.client(world.deploy_a) as c:
        assert c.patch(f"/apps/{world.a}/config", json={"set": {"VIA_CLI": "1"}}).status_code == 202
    audit = billowin(cli_env, "audit", world.a, "--json")
    assert audit.returncode == 0, audit.stderr
    entries = json.loads(audit.stdout)
    assert entries and {e["app"] for e in entries} == {world.a}
    assert entries[-1]["action"] == "config:set" and entries[-1]["actor"] == "deploy A", "newest last"
    table = billowin(cli_env, "audit", world.a, "-n", "5")
    assert table.returncode == 0 and "config:set" in table.stdout and "deploy A" in table.stdout

    status = billowin(cli_env, "status")
    assert status.returncode == 0, status.stderr
    assert "consul" in status.stdout and "nomad" in status.stdout, "an admin login shows the components"
