"""The router never installs a configuration HAProxy would refuse.

These run the real ``haproxy -c`` (no network): a bad render must leave the
last good configuration live.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import httpx
import pytest

from billowin.router.reload import MARKER, RefusedConfig, install, main, routes_of, write_routes
from billowin.settings import PACKAGE_DIR, Settings
from billowin.stack.process import ManagedProcess, free_port, http_ok
from billowin.stack.tools import Toolset, system_binary

HAPROXY = str(system_binary("haproxy") or "haproxy")

GOOD = f"""{MARKER}
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend http
    bind 127.0.0.1:18080
    default_backend app_a
backend app_a
    server s1 127.0.0.1:9
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    live = tmp_path / "haproxy.cfg"
    live.write_text(GOOD)
    return tmp_path / "haproxy.cfg.next", live


def test_a_valid_render_replaces_the_live_config_and_keeps_the_last_good(files: tuple[Path, Path]) -> None:
    candidate, live = files
    new = GOOD.replace("127.0.0.1:9", "127.0.0.1:10")
    candidate.write_text(new)
    assert install(candidate, live, HAPROXY) is True
    assert live.read_text() == new
    assert live.with_name("haproxy.cfg.last-good").read_text() == GOOD


def test_an_identical_render_changes_nothing(files: tuple[Path, Path]) -> None:
    candidate, live = files
    candidate.write_text(GOOD)
    assert install(candidate, live, HAPROXY) is False


@pytest.mark.parametrize(
    "render",
    [
        "",  # consul-template rendered nothing
        "   \n",
        GOOD.replace(MARKER, "# something else"),  # not ours
        GOOD.replace("server s1 127.0.0.1:9", "server s1 not-an-address:::"),  # haproxy -c refuses
        GOOD.replace("mode http", "mode bogus"),
    ],
)
def test_an_invalid_or_empty_render_never_replaces_the_live_config(
    files: tuple[Path, Path], render: str
) -> None:
    candidate, live = files
    candidate.write_text(render)
    with pytest.raises(RefusedConfig):
        install(candidate, live, HAPROXY)
    assert live.read_text() == GOOD


def test_a_refused_render_is_logged_and_the_command_still_succeeds(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    candidate, live = files
    candidate.write_text("")
    code = main(
        [
            "--candidate",
            str(candidate),
            "--live",
            str(live),
            "--pidfile",
            str(live.parent / "none.pid"),
            "--haproxy",
            HAPROXY,
        ]
    )
    assert code == 0  # a failing command would stop consul-template, and with it the router
    assert "kept the last good configuration" in capsys.readouterr().err


TWO_APPS = GOOD + "backend app_b\n    server s2 127.0.0.1:11\n    server s3 127.0.0.1:12\n"


def test_servers_are_counted_per_app() -> None:
    from billowin.router.reload import servers_per_app

    assert servers_per_app(TWO_APPS) == {"a": 1, "b": 2}


def test_a_render_that_routes_nothing_while_nomad_runs_the_apps_is_refused(files: tuple[Path, Path]) -> None:
    """What consul-template renders while a restarted Consul is still empty."""
    candidate, live = files
    live.write_text(TWO_APPS)
    empty = TWO_APPS.replace("    server s1 127.0.0.1:9\n", "").replace(
        "    server s2 127.0.0.1:11\n    server s3 127.0.0.1:12\n", ""
    )
    candidate.write_text(empty)
    asked: list[set[str]] = []

    def still_running(apps: set[str]) -> set[str]:
        asked.append(apps)
        return apps

    with pytest.raises(RefusedConfig, match="Nomad still runs"):
        install(candidate, live, HAPROXY, still_running)
    assert asked == [{"a", "b"}]
    assert live.read_text() == TWO_APPS


def test_one_app_losing_its_servers_does_not_hold_back_the_others(files: tuple[Path, Path]) -> None:
    """A crash-looping app has no healthy instance: it is dropped, and other changes go live."""
    candidate, live = files
    live.write_text(TWO_APPS)
    candidate.write_text(GOOD.replace("127.0.0.1:9", "127.0.0.1:10"))  # b dropped, a moved
    assert install(candidate, live, HAPROXY, lambda apps: apps) is True
    assert "127.0.0.1:10" in live.read_text()


def test_a_render_that_drops_a_stopped_app_goes_through(files: tuple[Path, Path]) -> None:
    candidate, live = files
    live.write_text(TWO_APPS)
    candidate.write_text(GOOD)
    assert install(candidate, live, HAPROXY, lambda apps: set()) is True
    assert live.read_text() == GOOD


def test_when_nomad_cannot_say_the_last_good_config_stays(files: tuple[Path, Path]) -> None:
    candidate, live = files
    live.write_text(TWO_APPS)
    candidate.write_text(
        TWO_APPS.replace("    server s1 127.0.0.1:9\n", "").replace(
            "    server s2 127.0.0.1:11\n    server s3 127.0.0.1:12\n", ""
        )
    )

    def nomad_down(apps: set[str]) -> set[str]:
        raise ConnectionError("nomad unreachable")

    with pytest.raises(RefusedConfig, match="cannot confirm"):
        install(candidate, live, HAPROXY, nomad_down)
    assert live.read_text() == TWO_APPS


def test_the_stack_wires_the_guard_to_its_nomad(tmp_path: Path) -> None:
    from billowin.stack.single_box import Ports, SingleBox
    from billowin.stack.tools import Toolset

    tools = Toolset(
        *(Path(f"/bin/{n}") for n in ("nomad", "consul", "ct", "dockerd", HAPROXY, "reg", "packer", "vault"))
    )
    box = SingleBox(tools, Ports(nomad_http=14646), tmp_path)
    argv = box._reload_argv()
    assert argv[argv.index("--nomad-addr") + 1] == "http://127.0.0.1:14646"


# -- the real template, rendered by the real consul-template from a stand-in Consul catalog ------
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


class _Catalog(http.server.BaseHTTPRequestHandler):
    """Just the Consul endpoints the template reads: the services, one's healthy instances, and KV
    (the certificates' chains, the per-app HTTPS switches)."""

    services: ClassVar[dict[str, tuple[list[str], int]]] = {}  # name -> (tags, port)
    kv: ClassVar[dict[str, bytes]] = {}
    asked: ClassVar[set[str]] = set()  # every path consul-template asked for

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.asked.add(path)
        if path == "/v1/catalog/services":
            body: object = {name: tags for name, (tags, _) in self.services.items()}
        elif path.startswith("/v1/health/service/"):
            name = path.rsplit("/", 1)[1]
            tags, port = self.services[name]
            service = {"ID": f"{name}-1", "Service": name, "Tags": tags, "Address": "127.0.0.1", "Port": port}
            body = [{"Node": {"Node": "billowin", "Address": "127.0.0.1"}, "Service": service, "Checks": []}]
        elif path.startswith("/v1/kv/"):
            key = path.removeprefix("/v1/kv/")
            found = [(k, v) for k, v in self.kv.items() if k == key or k.startswith(key.rstrip("/") + "/")]
            if not found:
                self.send_response(404)
                self.send_header("X-Consul-Index", "7")
                self.end_headers()
                return
            body = [
                {
                    "Key": k,
                    "Value": base64.b64encode(v).decode(),
                    "ModifyIndex": 7,
                    "CreateIndex": 7,
                    "Flags": 0,
                }
                for k, v in found
            ]
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Consul-Index", "7")
        self.end_headers()
        self.wfile.write(data)


ASKED: set[str] = set()


def render_template(
    tmp_path: Path,
    env: dict[str, str],
    services: dict[str, tuple[list[str], int]],
    kv: dict[str, bytes] | None = None,
) -> Path:
    """``billowin/router/haproxy.cfg.ctmpl`` rendered once by consul-template, as the router does."""
    handler = type("Catalog", (_Catalog,), {"services": services, "kv": kv or {}, "asked": ASKED})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "haproxy.cfg"
    try:
        consul_template = Toolset.resolve(Settings()).consul_template  # missing: the test fails
        proc = subprocess.run(
            [
                str(consul_template),
                "-consul-addr",
                f"127.0.0.1:{server.server_address[1]}",
                "-template",
                f"{PACKAGE_DIR / 'router' / 'haproxy.cfg.ctmpl'}:{out}",
                "-once",
            ],
            env={
                **os.environ,
                "BILLOWIN_DOMAIN": "localhost",
                "BILLOWIN_HAPROXY_SOCKET": str(tmp_path / "haproxy.sock"),
                "BILLOWIN_ROUTER_BIND": f"127.0.0.1:{free_port()}",
                "BILLOWIN_ROUTER_STATS_BIND": f"127.0.0.1:{free_port()}",
                "BILLOWIN_ROUTER_ROUTES_MAP": str(tmp_path / "routes.map"),
                "BILLOWIN_ROUTER_SERVER_STATE": str(tmp_path / "servers.state"),
                "BILLOWIN_CONSUL_DNS_PORT": str(free_port()),  # nothing answers: no instance resolves
                "BILLOWIN_ROUTER_SLOTS": "16",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    write_routes(tmp_path / "routes.map", out.read_text())  # as the reload step does
    return out


def box_router_env(tmp_path: Path, production: bool) -> dict[str, str]:
    """What each kind of box gives consul-template (BILLOWIN_API_BACKEND, and the API's name)."""
    from billowin.stack.single_box import Ports, SingleBox

    tools = Toolset(*(Path(f"/bin/{n}") for n in ("n", "c", "ct", "d", HAPROXY, "r", "p", "v")))
    env = SingleBox(tools, Ports(api=18000), tmp_path)._router_env()
    assert env["BILLOWIN_API_BACKEND"] == "127.0.0.1:18000", "the dev stack's router reaches its API too"
    assert "BILLOWIN_API_HOSTNAME" not in env, "only a production box serves the API on the router"
    wanted = {"BILLOWIN_API_BACKEND": env["BILLOWIN_API_BACKEND"]}
    if production:
        wanted["BILLOWIN_API_HOSTNAME"] = "billowin.localhost"
    return wanted


@pytest.mark.parametrize("production", [False, True])
def test_the_template_renders_a_config_haproxy_accepts(tmp_path: Path, production: bool) -> None:
    services = {"shop": (["billowin.web", "billowin.domain=www.shop.test"], 20001), "consul": ([], 8300)}
    out = render_template(tmp_path, box_router_env(tmp_path, production), services)
    text = out.read_text()
    assert text.startswith(MARKER)
    rules = [line.strip() for line in text.splitlines() if line.strip().startswith("use_backend")]
    assert rules[0].startswith(
        "use_backend billowin_api if { path_beg /.well-known/acme-challenge/ } "
        "{ path_reg ^/[.]well-known/acme-challenge/"
    )
    assert ("use_backend billowin_api if { var(txn.host) -m str billowin.localhost }" in rules) is production
    # Apps are one map lookup, whatever their number; their instances are resolved over DNS.
    assert [r for r in rules if "billowin_api" not in r] == [
        f"use_backend %[var(txn.host),map_str({tmp_path}/routes.map,no_such_app)]"
    ]
    assert (tmp_path / "routes.map").read_text() == "shop.localhost app_shop\nwww.shop.test app_shop\n"
    shop = text.split("\nbackend app_shop\n")[1]
    assert "server-template s 1-16 _shop._tcp.service.consul resolvers consul" in shop
    assert "127.0.0.1:20001" not in text, "no instance address in the configuration"
    candidate = tmp_path / "haproxy.cfg.next"
    candidate.write_text(text)
    assert install(candidate, tmp_path / "live.cfg", HAPROXY) is True  # haproxy -c accepts it


def test_a_router_without_an_api_backend_renders_no_challenge_rule(tmp_path: Path) -> None:
    text = render_template(tmp_path, {}, {"shop": (["billowin.web"], 20001)}).read_text()
    assert "acme-challenge" not in text and "backend billowin_api" not in text
    candidate = tmp_path / "haproxy.cfg.next"
    candidate.write_text(text)
    assert install(candidate, tmp_path / "live.cfg", HAPROXY) is True


class _Says(http.server.BaseHTTPRequestHandler):
    word = ""

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = self.word.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(word: str) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("Says", (_Says,), {"word": word}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_challenges_on_every_host_reach_the_api_and_nothing_else_does(tmp_path: Path) -> None:
    """A real HAProxy on the rendered config, on loopback: which backend answers what."""
    api, app = _serve("api"), _serve("app")
    port = free_port()
    env = {"BILLOWIN_API_BACKEND": f"127.0.0.1:{api.server_address[1]}"}
    services = {"shop": (["billowin.web", "billowin.domain=www.shop.test"], app.server_address[1])}
    out = render_template(tmp_path, {**env, "BILLOWIN_ROUTER_BIND": f"127.0.0.1:{port}"}, services)
    haproxy = ManagedProcess(
        name="haproxy",
        argv=[HAPROXY, "-db", "-f", str(out)],
        run_dir=tmp_path,
        ready=http_ok(f"http://127.0.0.1:{port}/", expect=lambda r: r.status_code == 404),
    )
    haproxy.start()
    try:
        haproxy.wait_ready(20)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as router:

            def who(path: str, host: str) -> str:
                return router.get(path, headers={"Host": host}).text

            challenge = f"/.well-known/acme-challenge/{TOKEN}"
            hosts = ("shop.localhost", "www.shop.test", "billowin.localhost", "new.example.com", "X.Y:80")
            for host in hosts:  # an app, its custom domain, the API's name, one not routed yet
                assert who(challenge, host) == "api", host
            # The app's backend (found in the routes map), whose instances come from Consul's
            # DNS; none answers here, so HAProxy says the app has no healthy instance.
            app_says = "shop has no healthy instance"
            assert app_says in who("/", "shop.localhost") and app_says in who("/", "www.shop.test")
            assert app_says in who("/tokens", "shop.localhost")
            assert app_says in who("/.well-known/acme-challenge/short", "shop.localhost")
            assert app_says in who(f"/.well-known/acme-challenge/{TOKEN}/more", "shop.localhost")
            assert who(f"/.well-known/acme-challenge/{TOKEN}?x=1", "shop.localhost") == "api"
            assert "No such app" in who("/", "nowhere.localhost")
    finally:
        haproxy.stop()
        api.shutdown()
        app.shutdown()
        api.server_close()
        app.server_close()


def test_https_renders_a_listener_redirects_and_hsts_that_haproxy_accepts(tmp_path: Path) -> None:
    """With a certificates directory: the TLS bind, X-Forwarded-Proto, the redirect on every app
    but one whose owner switched it off, HSTS, and a line per stored chain (so a new one re-renders)."""
    from billowin.router import certs
    from billowin.stack.single_box import Ports, SingleBox

    certs_dir = tmp_path / "certs"
    certs.sync(certs_dir, [])
    tools = Toolset(*(Path(f"/bin/{n}") for n in ("n", "c", "ct", "d", HAPROXY, "r", "p", "v")))
    box = SingleBox(tools, Ports(api=18000, router_https=18443), tmp_path, hsts_max_age=600)
    env = box._router_env()
    assert env["BILLOWIN_ROUTER_CERTS_DIR"] == str(tmp_path / "router" / "certs")
    argv = box._reload_argv()
    assert argv[argv.index("--certs-dir") + 1] == env["BILLOWIN_ROUTER_CERTS_DIR"]
    env = {
        **{
            k: v
            for k, v in env.items()
            if k.startswith(("BILLOWIN_ROUTER_HTTPS", "BILLOWIN_HSTS", "BILLOWIN_API"))
        },
        "BILLOWIN_ROUTER_HTTPS_BIND": f"127.0.0.1:{free_port()}",
        "BILLOWIN_ROUTER_CERTS_DIR": str(certs_dir),
    }
    services = {"shop": (["billowin.web"], 20001), "blog": (["billowin.web"], 20002)}
    kv = {"billowin/certs/shop.localhost/chain": b"...", "billowin/router/no-redirect/blog": b"off"}
    text = render_template(tmp_path, env, services, kv).read_text()
    assert f"ssl crt {certs_dir}/default.pem crt-list {certs_dir}/crt-list alpn h2,http/1.1" in text
    assert "# certificate shop.localhost/chain 7" in text
    assert "X-Forwarded-Proto https if { ssl_fc }" in text
    shop = text.split("\nbackend app_shop\n")[1].split("\nbackend ")[0]
    blog = text.split("\nbackend app_blog\n")[1].split("\nbackend ")[0]
    assert "redirect location https://%[var(txn.host)]:18443%[url] code 301" in shop
    assert 'Strict-Transport-Security "max-age=600"' in shop
    assert "redirect" not in blog and "Strict-Transport-Security" not in blog
    api = text.split("\nbackend billowin_api\n")[1].split("\nbackend ")[0]
    assert "!{ path_beg /.well-known/acme-challenge/ }" in api
    candidate = tmp_path / "haproxy.cfg.next"
    candidate.write_text(text)
    assert install(candidate, tmp_path / "live.cfg", HAPROXY) is True  # haproxy -c accepts it


def test_routes_are_read_from_the_render_the_first_of_a_host_kept() -> None:
    text = "# route a.localhost app_a\n# route www.a.test app_a\n# route a.localhost app_b\n#route x app_x\n"
    assert routes_of(text) == [("a.localhost", "app_a"), ("www.a.test", "app_a")]


def test_a_refused_render_puts_the_previous_routes_back(tmp_path: Path) -> None:
    live, candidate, routes = tmp_path / "live.cfg", tmp_path / "next.cfg", tmp_path / "routes.map"
    routes.write_text("shop.localhost app_shop\n")
    candidate.write_text("# route blog.localhost app_blog\nthis is not haproxy\n")
    argv = ["--candidate", str(candidate), "--live", str(live), "--pidfile", str(tmp_path / "pid")]
    assert main([*argv, "--haproxy", HAPROXY, "--routes-map", str(routes)]) == 0
    assert routes.read_text() == "shop.localhost app_shop\n" and not live.exists()


def test_the_template_asks_consul_the_same_few_things_whatever_the_number_of_apps(tmp_path: Path) -> None:
    """consul-template keeps one connection open per query, and Consul allows 200 per client: a
    query per app would stop the router (and everything on 127.0.0.1) at about a hundred apps."""
    services = {f"app{i}": (["billowin.web"], 20000 + i) for i in range(40)}
    ASKED.clear()
    render_template(tmp_path, {"BILLOWIN_ROUTER_CERTS_DIR": str(tmp_path / "certs")}, services)
    wanted = {"/v1/catalog/services", "/v1/kv/billowin/certs/", "/v1/kv/billowin/router/no-redirect/"}
    assert wanted == ASKED
