"""The API's access rules, dashboard sessions and CSRF, and the audit log, on in-memory fakes.

The whole FastAPI app (``create_app``) runs in-process on a ``System`` wired to
the fakes: tokens, sessions and the app records live in ``InMemoryKV``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from billowin import __version__
from billowin.api.app import api_routes, check_access_rules, create_app
from billowin.api.deps import access_rule, takes_json
from billowin.apps.access import POLICY, Action, Level
from billowin.apps.store import App
from billowin.apps.tokens import Role
from billowin.ports import ComponentHealth
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import FakeScheduler, InMemoryConfig, InMemoryKV

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Mutating routes open to any session (or to nobody at all): they change only who is logged in.
SESSION_ONLY = {("POST", "/dashboard/login"), ("POST", "/dashboard/logout")}


class Client:
    """A blocking HTTP client for the app in-process (an ``httpx.AsyncClient`` on ``ASGITransport``)."""

    def __init__(self, app: FastAPI, base_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app)
        self.http = httpx.AsyncClient(transport=transport, base_url=base_url, follow_redirects=False)

    @property
    def cookies(self) -> httpx.Cookies:
        return self.http.cookies

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


class Probe:
    def __init__(self, name: str) -> None:
        self.name = name

    def health(self) -> ComponentHealth:
        return ComponentHealth(name=self.name, ok=True, version="9.9.9", address="10.0.0.1:1")


@dataclass
class Api:
    system: System
    app: FastAPI
    kv: InMemoryKV
    admin: str
    deploy: str  # for shop
    read: str  # for shop
    audit_file: Path
    clients: list[Client] = field(default_factory=list)

    def client(self, base_url: str = "http://api.test") -> Client:
        made = Client(self.app, base_url)
        self.clients.append(made)
        return made

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def jobs(self, app: str) -> int:
        return len(self.system.jobs.list(app))

    def audit(self) -> list[dict[str, object]]:
        if not self.audit_file.exists():
            return []
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a unit test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def make_api(tmp_path: Path, **settings: object) -> Api:
    options: dict[str, object] = {
        "state_dir": tmp_path,
        "cache_dir": tmp_path,
        "pipeline": False,
        "monitoring": False,
        **settings,
    }
    config = Settings(**options)  # type: ignore[arg-type]
    kv = InMemoryKV(max_wait=0.1)
    system = System(
        config,
        kv=kv,
        nomad=FakeScheduler(),
        config=InMemoryConfig(),
        builder=None,
        catalog=Probe("consul"),
        docker=Probe("docker"),
        image_registry=Probe("registry"),
        router=Probe("haproxy"),
    )
    for name in ("shop", "blog"):
        system.platform.create(App(name=name, repository=f"https://github.com/acme/{name}"))
    admin = system.tokens.create("root")
    deploy = system.access.issue("ci", role=Role.DEPLOY, apps=["shop"])[1]
    read = system.access.issue("viewer", role=Role.READ, apps=["shop"])[1]
    return Api(system, create_app(config, system=system), kv, admin, deploy, read, tmp_path / "audit.jsonl")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    made = make_api(tmp_path)
    yield made
    made.close()
    assert "_consul" not in made.system.__dict__, "nothing built a real Consul client"


@pytest.fixture
def other_api(tmp_path: Path) -> Iterator[Any]:
    """Makes more apps (other settings); closes their clients."""
    made: list[Api] = []

    def make(**settings: object) -> Api:
        made.append(make_api(tmp_path, **settings))
        return made[-1]

    yield make
    for one in made:
        one.close()


# -- every route has a rule ------------------------------------------------------------------
def test_every_route_names_its_access_rule(api: Api) -> None:
    for route in api_routes(api.app):
        if route.path.startswith("/hooks/"):
            continue
        assert access_rule(route) is not None, route.path


def test_an_app_with_a_route_that_names_no_rule_is_refused(api: Api) -> None:
    @api.app.post("/apps/{app}/oops")
    async def oops(app: str) -> None: ...

    with pytest.raises(RuntimeError, match=re.escape("POST /apps/{app}/oops")):
        check_access_rules(api.app)


def test_every_mutating_route_needs_deploy_or_admin_rights(api: Api) -> None:
    for route in api_routes(api.app):
        for method in (route.methods or set()) & MUTATING:
            if route.path.startswith("/hooks/") or (method, route.path) in SESSION_ONLY:
                continue
            rule = access_rule(route)
            assert isinstance(rule, Action), (method, route.path)
            assert POLICY[rule] >= Level.DEPLOY, (method, route.path, rule)


# -- bearer tokens on the JSON API --------------------------------------------------------------
def test_scoped_tokens_see_and_touch_only_their_apps(api: Api) -> None:
    c = api.client()
    assert [a["name"] for a in c.get("/apps", headers=bearer(api.admin)).json()] == ["blog", "shop"]
    assert [a["name"] for a in c.get("/apps", headers=bearer(api.read)).json()] == ["shop"]
    assert c.get("/apps/blog", headers=bearer(api.read)).status_code == 403
    assert c.get("/apps/shop", headers=bearer(api.read)).status_code == 200
    assert c.get("/alerts?app=blog", headers=bearer(api.read)).status_code == 403
    assert c.get("/alerts?app=shop", headers=bearer(api.read)).status_code == 200
    assert c.get("/apps?app=blog", headers=bearer(api.read)).status_code == 200, "/apps takes no ?app="

    change = {"set": {"GREETING": "hi"}}
    resp = c.patch("/apps/blog/config", headers=bearer(api.deploy), json=change)
    assert resp.status_code == 403 and "for shop only" in resp.json()["hint"]
    resp = c.patch("/apps/shop/config", headers=bearer(api.read), json=change)
    assert resp.status_code == 403 and resp.json()["error"] == "Forbidden"
    assert api.jobs("shop") == 0 and api.jobs("blog") == 0
    assert c.patch("/apps/shop/config", headers=bearer(api.deploy), json=change).status_code == 202
    assert api.jobs("shop") == 1


def test_config_values_logs_and_runs_need_a_deploy_token(api: Api) -> None:
    c = api.client()
    api.system.platform.change_config("shop", {"SECRET": "hunter2"}, [])
    names = c.get("/apps/shop/config", headers=bearer(api.read))
    assert names.status_code == 200 and "hunter2" not in names.text and "SECRET" in names.text
    for reveal in ("true", "1", "yes", "on"):
        assert c.get(f"/apps/shop/config?reveal={reveal}", headers=bearer(api.read)).status_code == 403
    assert c.get("/apps/shop/logs", headers=bearer(api.read)).status_code == 403
    assert c.get("/apps/shop/deploys/1/log", headers=bearer(api.read)).status_code == 403
    assert c.post("/apps/shop/runs", headers=bearer(api.read), json={"command": "env"}).status_code == 403
    assert "hunter2" in c.get("/apps/shop/config?reveal=true", headers=bearer(api.deploy)).text


def test_admin_only_routes(api: Api) -> None:
    c = api.client()
    for token in (api.deploy, api.read):
        new_app = {"name": "new", "repository": "x"}
        assert c.post("/apps", headers=bearer(token), json=new_app).status_code == 403
        assert c.delete("/apps/shop?confirm=shop", headers=bearer(token)).status_code == 403
        assert c.get("/tokens", headers=bearer(token)).status_code == 403
        assert c.get("/metrics", headers=bearer(token)).status_code == 403
    assert c.get("/metrics", headers=bearer(api.admin)).status_code == 200


def test_the_metrics_token_opens_metrics_only(other_api: Any) -> None:
    api = other_api(metrics_token=SecretStr("scrape-me"))
    c = api.client()
    assert c.get("/metrics", headers=bearer("scrape-me")).status_code == 200
    assert c.get("/apps", headers=bearer("scrape-me")).status_code == 401


def test_the_dashboard_cookie_does_not_open_the_json_api(api: Api) -> None:
    c = api.client()
    assert c.post("/dashboard/login", data={"token": api.admin}).status_code == 303
    resp = c.get("/apps", headers={"Cookie": f"billowin_session={c.cookies['billowin_session']}"})
    assert resp.status_code == 401 and "dashboard" in resp.json()["hint"]
    # Nor does the old cookie, which held the token itself.
    assert api.client().get("/apps", headers={"Cookie": f"billowin_token={api.admin}"}).status_code == 401


def test_json_routes_refuse_other_content_types(api: Api) -> None:
    c = api.client()
    routes = [
        (method, route.path)
        for route in api_routes(api.app)
        if takes_json(route)
        for method in route.methods or ()
    ]
    assert len(routes) >= 9
    for method, path in routes:
        url = path.replace("{app}", "shop")
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = bearer(api.admin) | ({"Content-Type": content_type} if content_type else {})
            resp = c.request(method, url, headers=headers, content=b'{"set": {"A": "1"}}')
            assert resp.status_code == 415, (method, path, content_type, resp.text)
    assert api.jobs("shop") == 0
    assert (
        c.patch(
            "/apps/shop/config",
            headers=bearer(api.deploy) | {"Content-Type": "application/json; charset=utf-8"},
            content=b'{"set": {"A": "1"}}',
        ).status_code
        == 202
    )


# -- tokens over the API --------------------------------------------------------------------------
def test_tokens_are_listed_created_and_revoked_by_an_admin(api: Api) -> None:
    c = api.client()
    made = c.post(
        "/tokens",
        headers=bearer(api.admin),
        json={"name": "robot", "role": "read", "apps": ["shop"], "expires": "7d"},
    )
    assert made.status_code == 201, made.text
    token, info = made.json()["token"], made.json()["info"]
    assert info["role"] == "read" and info["apps"] == ["shop"] and info["expires_at"]
    assert c.get("/apps/shop", headers=bearer(token)).status_code == 200

    listed = c.get("/tokens", headers=bearer(api.admin))
    assert [t["name"] for t in listed.json()] == ["root", "ci", "viewer", "robot"]
    assert "sha256" not in listed.text and token.split("_", 2)[2] not in listed.text

    scoped_admin = {"name": "x", "apps": ["nope"]}
    assert c.post("/tokens", headers=bearer(api.admin), json=scoped_admin).status_code == 422
    assert (
        c.post(
            "/tokens", headers=bearer(api.admin), json={"name": "x", "role": "deploy", "apps": ["nope"]}
        ).status_code
        == 404
    )

    assert c.delete(f"/tokens/{info['id']}", headers=bearer(api.admin)).json()["state"] == "revoked"
    resp = c.get("/apps/shop", headers=bearer(token))
    assert resp.status_code == 401 and "revoked" in resp.json()["message"]
    assert resp.json()["hint"]


def test_an_expired_token_gets_401_with_a_hint(api: Api) -> None:
    from datetime import UTC, datetime, timedelta

    token = api.system.tokens.create("old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    resp = api.client().get("/apps", headers=bearer(token))
    assert resp.status_code == 401 and "expired" in resp.json()["message"]
    assert "tokens:create" in resp.json()["hint"]


# -- /health and the OpenAPI document --------------------------------------------------------------
def test_health_tells_strangers_only_ok_or_degraded(api: Api) -> None:
    c = api.client()
    assert c.get("/health").json() == {"status": "ok"}
    for token in (api.deploy, api.read, "bw_garbage"):
        assert c.get("/health", headers=bearer(token)).json() == {"status": "ok"}
    detail = c.get("/health", headers=bearer(api.admin)).json()
    assert detail["ok"] is True and detail["billowin"] == __version__
    assert detail["components"]["consul"] == {
        "ok": True, "version": "9.9.9", "address": "10.0.0.1:1", "error": None
    }  # fmt: skip


def test_the_openapi_document_names_an_api_version_not_the_package(api: Api) -> None:
    spec = api.client().get("/openapi.json").json()
    assert spec["info"]["version"] == "1"
    assert __version__ not in json.dumps(spec["info"])


# -- the dashboard ---------------------------------------------------------------------------------------
def login(c: Client, token: str) -> str:
    """Log in; the CSRF token of the session's forms."""
    resp = c.post("/dashboard/login", data={"token": token})
    assert resp.status_code == 303, resp.text
    page = c.get("/dashboard/apps/shop")
    assert page.status_code == 200, page.text
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return match[1]


def test_the_session_cookie_holds_no_token_and_is_locked_down(api: Api) -> None:
    c = api.client()
    resp = c.post("/dashboard/login", data={"token": api.admin})
    cookie = next(v for k, v in resp.headers.multi_items() if k == "set-cookie" and "billowin_session=" in v)
    assert api.admin not in cookie and api.admin.split("_", 2)[2] not in cookie
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes and "secure" not in attributes
    assert "Path=/dashboard" in cookie and "SameSite=strict" in cookie


@pytest.mark.parametrize(
    ("base_url", "public_url"), [("https://api.test", ""), ("http://api.test", "https://billowin.example")]
)
def test_the_cookie_is_secure_over_https(other_api: Any, base_url: str, public_url: str) -> None:
    api = other_api(public_url=public_url)
    resp = api.client(base_url).post("/dashboard/login", data={"token": api.admin})
    assert "; Secure" in resp.headers["set-cookie"]


def test_a_form_post_without_the_csrf_token_is_refused_and_does_nothing(api: Api) -> None:
    c = api.client()
    csrf = login(c, api.admin)
    release = api.system.releases.create("shop", "reg/shop:1", [], [], job_version=0)
    for data, headers in [
        ({"release": str(release.number)}, {}),  # the cross-site attack: only the cookie
        ({"release": str(release.number), "csrf": "x" * len(csrf)}, {}),
        ({"release": str(release.number), "csrf": csrf}, {"Sec-Fetch-Site": "same-site"}),
        ({"release": str(release.number), "csrf": csrf}, {"Origin": "http://shop.api.test"}),
    ]:
        resp = c.post("/dashboard/apps/shop/rollback", data=data, headers=headers)
        assert resp.status_code == 403, (data, headers, resp.text)
    assert api.jobs("shop") == 0
    # The same form from the dashboard itself gets through the checks (this release never went live).
    resp = c.post(
        "/dashboard/apps/shop/rollback",
        data={"release": str(release.number), "csrf": csrf},
        headers={"Origin": "http://api.test", "Sec-Fetch-Site": "same-origin"},
    )
    assert resp.status_code not in (401, 403), resp.text


def test_a_login_posted_from_another_site_is_refused(api: Api) -> None:
    resp = api.client().post(
        "/dashboard/login", data={"token": api.admin}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert resp.status_code == 403 and "set-cookie" not in resp.headers


def test_the_dashboard_honours_roles(api: Api) -> None:
    c = api.client()
    csrf = login(c, api.read)
    apps = c.get("/dashboard")
    assert "/dashboard/apps/shop" in apps.text and "/dashboard/apps/blog" not in apps.text
    page = c.get("/dashboard/apps/shop")
    assert "Roll back" not in page.text and 'id="logs"' not in page.text
    blog = c.get("/dashboard/apps/blog", headers={"Accept": "text/html"})
    assert blog.status_code == 403 and "may not apps:info on blog" in blog.text
    resp = c.post("/dashboard/apps/shop/rollback", data={"release": "1", "csrf": csrf})
    assert resp.status_code == 403 and "read token" in resp.json()["message"]
    assert c.get("/dashboard/apps/shop/logs").status_code == 403
    assert c.get("/dashboard/apps/shop/charts.json").status_code == 200


def test_logout_and_revocation_end_the_session(api: Api) -> None:
    c = api.client()
    csrf = login(c, api.deploy)
    assert c.post("/dashboard/logout", data={}).status_code == 403, "logout needs the CSRF token too"
    assert c.post("/dashboard/logout", data={"csrf": csrf}).status_code == 303
    assert c.get("/dashboard").headers["location"] == "/dashboard/login"

    c = api.client()
    login(c, api.deploy)
    token_id = api.deploy.split("_")[1]
    assert api.client().delete(f"/tokens/{token_id}", headers=bearer(api.admin)).status_code == 200
    assert c.get("/dashboard").headers["location"] == "/dashboard/login"
    assert c.get("/dashboard/apps/shop/charts.json").status_code == 401


# -- the audit log ----------------------------------------------------------------------------------------
def test_changes_and_refusals_are_audited_without_secrets(api: Api) -> None:
    c = api.client()
    secret = "s3cr3t-value-in-the-body"
    assert (
        c.patch(
            "/apps/shop/config", headers=bearer(api.deploy), json={"set": {"API_KEY": secret}}
        ).status_code
        == 202
    )
    assert (
        c.patch(
            "/apps/blog/config", headers=bearer(api.deploy), json={"set": {"API_KEY": secret}}
        ).status_code
        == 403
    )
    assert c.delete("/apps/shop", headers=bearer("bw_nope")).status_code == 401
    assert c.get("/apps/shop/config?reveal=true", headers=bearer(api.deploy)).status_code == 200
    assert c.get("/apps/shop", headers=bearer(api.deploy)).status_code == 200  # a read: not audited
    made = c.post("/tokens", headers=bearer(api.admin), json={"name": "robot"}).json()
    assert (
        c.post(
            "/apps", headers=bearer(api.admin), json={"name": "wiki", "repository": "https://x.test/wiki"}
        ).status_code
        == 201
    )
    assert c.post("/hooks/github", content=b"{}", headers={"Content-Type": "application/json"}).status_code

    text = api.audit_file.read_text()
    for leak in (secret, api.deploy, api.admin, made["token"], made["token"].split("_", 2)[2]):
        assert leak not in text
    rows = [(e["actor"], e["action"], e["app"], e["status"]) for e in api.audit()]
    assert rows[:7] == [
        ("ci", "config:set", "shop", 202),
        ("ci", "config:set", "blog", 403),
        ("anonymous", "apps:destroy", "shop", 401),
        ("ci", "config:reveal", "shop", 200),
        ("root", "tokens:create", None, 201),
        ("root", "apps:create", "wiki", 201),
        ("webhook:github", "webhook", None, rows[6][3]),
    ]
    assert api.audit()[0]["token_id"] == api.deploy.split("_")[1]
    assert api.audit()[0]["route"] == "/apps/{app}/config" and api.audit()[0]["path"] == "/apps/shop/config"


def test_the_audit_route_shows_a_scoped_token_only_its_apps(api: Api) -> None:
    c = api.client()
    c.patch("/apps/shop/config", headers=bearer(api.deploy), json={"set": {"A": "1"}})
    c.patch("/apps/blog/config", headers=bearer(api.admin), json={"set": {"A": "1"}})
    c.post("/tokens", headers=bearer(api.admin), json={"name": "robot"})
    every = c.get("/audit", headers=bearer(api.admin)).json()
    assert [(e["action"], e["app"]) for e in every] == [
        ("config:set", "shop"),
        ("config:set", "blog"),
        ("tokens:create", None),
    ]
    assert [e["app"] for e in c.get("/audit", headers=bearer(api.read)).json()] == ["shop"]
    assert c.get("/audit?app=blog", headers=bearer(api.read)).status_code == 403
    assert [e["app"] for e in c.get("/audit?app=blog&limit=5", headers=bearer(api.admin)).json()] == ["blog"]
    # The log outlives the API: a new app on the same state directory reads the same history.
    again = Api(**{**api.__dict__, "app": create_app(api.system.settings, system=api.system), "clients": []})
    assert len(again.client().get("/audit", headers=bearer(api.admin)).json()) == 3
    again.close()


def test_dashboard_actions_are_audited_with_their_session_token(api: Api) -> None:
    c = api.client()
    csrf = login(c, api.deploy)
    c.post("/dashboard/apps/shop/rollback", data={"release": "1"})
    c.post("/dashboard/logout", data={"csrf": csrf})
    rows = [(e["actor"], e["action"], e["status"], e["via"]) for e in api.audit()]
    assert rows == [
        ("ci", "dashboard:login", 303, "dashboard"),
        ("ci", "rollback", 403, "dashboard"),
        ("ci", "dashboard:logout", 303, "dashboard"),
    ]
