"""HTTPS through the real router: certificates from a real ACME CA (pebble), served by HAProxy.

Pebble and knot as in ``test_certs.py``; knot also serves ``example.test``, a user's own domain
pointed at this router. The clients here trust pebble's root only, and only inside this module.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from billowin.apps.store import App
from billowin.certs.manager import CertificateManager
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import ReleaseStatus
from billowin.stack.single_box import SingleBox
from billowin.stack.tools import CertTestTools
from billowin.system import System
from tests.fakes import own_certificate

from .acme_servers import (
    Knot,
    Pebble,
    acme_settings,
    forget_certificates,
    knot_server,
    pebble_server,
    serving,
)
from .alert_receiver import AlertReceiver
from .conftest import Load, wait_for

CUSTOM_ZONE = "example.test"


@pytest.fixture(scope="module", autouse=True)
def no_certificate_outlives_the_module(stack: SingleBox) -> Iterator[None]:
    """Every certificate this module's pebble issued is removed at its end: the session's router
    serves whatever the store holds, and a leftover ``*.localhost`` (from a CA no other module
    trusts) would answer later modules' plain HTTP with a redirect to it."""
    yield
    forget_certificates(stack.settings)


@pytest.fixture(scope="module")
def knot(stack: SingleBox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    tools = CertTestTools.resolve()  # missing pebble or knotd fails the module: nothing skips
    server = knot_server(
        tools.knotd, tmp_path_factory.mktemp("knot"), stack.domain, more_zones=(CUSTOM_ZONE,)
    )
    with serving(server.process):
        yield server


@pytest.fixture(scope="module")
def pebble(stack: SingleBox, knot: Knot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    tools = CertTestTools.resolve()
    server = pebble_server(
        tools.pebble,
        tmp_path_factory.mktemp("pebble"),
        http_port=stack.ports.router_http,
        dns_server=knot.address,
    )
    with serving(server.process):
        yield server


@pytest.fixture(scope="module")
def system(stack: SingleBox, pebble: Pebble, knot: Knot) -> System:
    settings = stack.settings.model_copy(update=acme_settings(pebble, knot))
    return System(settings)


@pytest.fixture(scope="module")
def trust(pebble: Pebble) -> ssl.SSLContext:
    """A TLS client context that trusts pebble's root, and nothing else."""
    context = ssl.create_default_context(cadata=pebble.root_pem().decode())
    assert len(context.get_ca_certs()) == 1
    return context


def https_get(stack: SingleBox, trust: ssl.SSLContext, host: str, path: str = "/") -> httpx.Response:
    """GET ``https://<host><path>`` at the router, with SNI and verification for ``host``."""
    with httpx.Client(verify=trust, timeout=10) as client:
        return client.get(
            f"https://127.0.0.1:{stack.ports.router_https}{path}",
            headers={"Host": host},
            extensions={"sni_hostname": host},
        )


def served_certificate(stack: SingleBox, host: str) -> tuple[x509.Certificate, str | None]:
    """The leaf the router presents for SNI ``host`` (unverified), and the protocol ALPN chose."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", stack.ports.router_https), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der), tls.selected_alpn_protocol()


def sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(ext.get_values_for_type(x509.DNSName))


def serves_https(stack: SingleBox, trust: ssl.SSLContext, host: str, text: str) -> bool:
    try:
        resp = https_get(stack, trust, host)
    except (httpx.HTTPError, ssl.SSLError):
        return False
    return resp.status_code == 200 and resp.text.startswith(text)


def test_an_app_is_served_over_https_with_the_cas_chain_and_http_redirects(
    stack: SingleBox,
    system: System,
    trust: ssl.SSLContext,
    deployer: Deployer,
    make_image,  # type: ignore[no-untyped-def]
    app_name: str,
    cleanup_apps: list[str],
    router: httpx.Client,
) -> None:
    cleanup_apps.append(app_name)
    host = f"{app_name}.{stack.domain}"
    image = make_image(app_name, "https", greeting="hello https")
    release = deployer.deploy(app_name, image, [Process(name="web")])
    assert release.status == ReleaseStatus.LIVE, release.description
    wait_for(lambda: router.get("/", headers={"Host": host}).status_code == 200, 30, f"{host} over HTTP")

    # Before any certificate of its own: the router answers TLS with its self-signed default,
    # and plain HTTP is not redirected.
    leaf, _ = served_certificate(stack, host)
    assert host not in sans(leaf)
    assert router.get("/", headers={"Host": host}).status_code == 200

    # apps:create wakes the API's certificate manager (BILLOWIN_ACME_AUTO), which orders at once.
    auto = System(system.settings.model_copy(update={"acme_auto": True}))
    auto.cert_manager = CertificateManager(
        auto.certificates, OnlyApps(auto, app_name), auto.kv, domain=stack.domain, interval=3600
    )
    auto.cert_manager.start()
    try:
        auto.platform.create(App(name=app_name, repository="https://github.com/acme/https"))
        wait_for(
            lambda: serves_https(stack, trust, host, "hello https"), 60, f"https://{host} with pebble's chain"
        )
    finally:
        auto.cert_manager.stop()
    record = auto.cert_store.get(host)
    assert record is not None and record.status == "valid" and record.source == "acme"

    leaf, alpn = served_certificate(stack, host)
    assert host in sans(leaf) and alpn == "h2"
    redirect = router.get("/some/page?x=1", headers={"Host": host})
    assert redirect.status_code == 301
    assert redirect.headers["location"] == f"https://{host}:{stack.ports.router_https}/some/page?x=1"
    # The CA's challenge path is never redirected: it still reaches the API (404: nothing pending).
    challenge = router.get(f"/.well-known/acme-challenge/{'x' * 43}", headers={"Host": host})
    assert challenge.status_code == 404 and challenge.json()["error"] == "NotFound"
    # The certificate's file on the router is the owner's only.
    pem = stack.router_dir / "certs" / f"{record.id}.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    assert (stack.router_dir / "certs").stat().st_mode & 0o777 == 0o700

    auto.platform.destroy(app_name)  # and its certificate with it
    assert auto.cert_store.get(host) is None


@contextlib.contextmanager
def echo_instance(stack: SingleBox, app: str, domains: tuple[str, ...] = ()) -> Iterator[list[str | None]]:
    """An instance of ``app`` (and its custom ``domains``) registered with Consul's agent as Nomad
    would, outside any container: it answers ``echo`` and records each request's X-Forwarded-Proto."""
    seen: list[str | None] = []

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("X-Forwarded-Proto"))
            body = b"echo"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"{app}.{stack.domain}"
    service_id = f"{app}-echo"
    try:
        httpx.put(
            f"{stack.settings.consul_addr}/v1/agent/service/register",
            json={"ID": service_id, "Name": app, "Address": "127.0.0.1", "Port": server.server_port,
                  "Tags": ["billowin.web", *(f"billowin.domain={d}" for d in domains)]},
        ).raise_for_status()  # fmt: skip
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{stack.ports.router_http}/", headers={"Host": host},
                                   timeout=5).status_code == 200, 30, f"{host} routed")  # fmt: skip
        seen.clear()
        yield seen
    finally:
        httpx.put(f"{stack.settings.consul_addr}/v1/agent/service/deregister/{service_id}", timeout=5)
        server.shutdown()
        server.server_close()


def test_the_app_sees_how_the_client_came_in(
    stack: SingleBox, trust: ssl.SSLContext, system: System, app_name: str
) -> None:
    """X-Forwarded-Proto reaches the app: ``https`` over TLS, ``http`` otherwise, whatever the client sent."""
    host = f"{app_name}.{stack.domain}"
    with echo_instance(stack, app_name) as seen:
        httpx.get(
            f"http://127.0.0.1:{stack.ports.router_http}/",
            headers={"Host": host, "X-Forwarded-Proto": "https"},
            timeout=5,
        )
        record = system.certificates.issue([host])
        assert record.status == "valid", record.last_error
        wait_for(lambda: serves_https(stack, trust, host, "echo"), 30, f"https://{host}")
        assert seen[0] == "http" and seen[-1] == "https"


def test_a_custom_domain_gets_its_own_certificate_served_by_sni(
    stack: SingleBox,
    system: System,
    trust: ssl.SSLContext,
    deployer: Deployer,
    make_image,  # type: ignore[no-untyped-def]
    app_name: str,
    cleanup_apps: list[str],
    router: httpx.Client,
) -> None:
    cleanup_apps.append(app_name)
    own = f"www.{app_name}.{CUSTOM_ZONE}"
    host = f"{app_name}.{stack.domain}"
    image = make_image(app_name, "custom", greeting="hello custom")
    release = deployer.deploy(app_name, image, [Process(name="web")], domains=[own])
    assert release.status == ReleaseStatus.LIVE, release.description
    wait_for(lambda: router.get("/", headers={"Host": own}).status_code == 200, 30, f"{own} over HTTP")

    for name in (host, own):
        record = system.certificates.issue([name])
        assert record.status == "valid", f"{name}: {record.last_error} ({record.hint})"
    wait_for(lambda: serves_https(stack, trust, own, "hello custom"), 30, f"https://{own}")
    assert serves_https(stack, trust, host, "hello custom")
    # Each name gets its own certificate, by SNI.
    assert sans(served_certificate(stack, own)[0]) == [own]
    assert sans(served_certificate(stack, host)[0]) == [host]
    assert router.get("/", headers={"Host": own}).status_code == 301


class OnlyApps:
    """The session's app store seen through one app: other modules' apps share this Consul."""

    def __init__(self, system: System, name: str) -> None:
        self.system, self.name = system, name

    def all(self) -> list[App]:
        return [a for a in self.system.apps.all() if a.name == self.name]


def test_the_manager_orders_what_is_missing_and_a_restart_orders_nothing(
    stack: SingleBox, system: System, pebble: Pebble, app_name: str
) -> None:
    own = f"shop.{app_name}.{CUSTOM_ZONE}"
    system.platform.create(App(name=app_name, repository="https://github.com/acme/shop", domains=[own]))
    try:
        manager = CertificateManager(
            system.certificates,
            OnlyApps(system, app_name),
            system.kv,
            domain=stack.domain,  # type: ignore[arg-type]
        )
        tried = {r.id: r for r in manager.run_once()}
        assert tried[own].status == "valid", f"{tried[own].last_error} ({tried[own].hint})"
        wait_for(lambda: own in sans(served_certificate(stack, own)[0]), 30, f"{own} served by SNI")
        account = system.cert_store.account()
        assert account is not None
        orders = pebble.orders(account)
        # A restarted API: a new System and manager on the same store. The CA hears nothing.
        again = System(system.settings)
        restarted = CertificateManager(
            again.certificates,
            OnlyApps(again, app_name),
            again.kv,
            domain=stack.domain,  # type: ignore[arg-type]
        )
        assert restarted.run_once() == []
        assert pebble.orders(account) == orders
        # `certs APP` through the API: each name, its issuer, expiry and status; never a key.
        token = system.tokens.create(f"certs-{app_name}")
        resp = httpx.get(
            f"http://127.0.0.1:{stack.ports.api}/apps/{app_name}/certs",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
        rows = {r["name"]: r for r in resp.json()}
        assert set(rows) == {f"{app_name}.{stack.domain}", own}
        assert rows[own]["status"] == "valid" and "Pebble" in rows[own]["issuer"] and rows[own]["not_after"]
        assert "PRIVATE KEY" not in resp.text
    finally:
        system.platform.destroy(app_name)


def api_client(stack: SingleBox, system: System, name: str) -> httpx.Client:
    token = system.tokens.create(name)  # an admin token, as `billowin login` keeps
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.ports.api}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )


def test_your_own_certificate_is_served_by_sni_until_you_remove_it(
    stack: SingleBox, system: System, app_name: str, router: httpx.Client
) -> None:
    """``certs:add`` / ``certs:remove`` / ``certs:redirect`` through the API, served by the real router."""
    host = f"{app_name}.{stack.domain}"
    system.platform.create(App(name=app_name, repository="https://github.com/acme/own"))
    chain, key = own_certificate([host])
    own_ca = ssl.create_default_context(cadata=x509.load_pem_x509_certificates(chain.encode())[1]
                                        .public_bytes(serialization.Encoding.PEM).decode())  # fmt: skip
    try:
        with echo_instance(stack, app_name), api_client(stack, system, f"own-{app_name}") as api:
            added = api.post(f"/apps/{app_name}/certs", json={"chain": chain, "key": key})
            assert added.status_code == 200, added.text
            (row,) = added.json()
            assert (row["name"], row["status"], row["source"]) == (host, "valid", "uploaded")
            assert "Own Test CA" in row["issuer"] and "PRIVATE" not in added.text
            wait_for(
                lambda: serves_https(stack, own_ca, host, "echo"), 30, f"https://{host} with its own chain"
            )
            wait_for(lambda: router.get("/", headers={"Host": host}).status_code == 301, 30, "the redirect")

            # The owner switches the redirect off: plain HTTP serves again, HTTPS still does.
            off = api.put(f"/apps/{app_name}/redirect", json={"enabled": False})
            assert off.status_code == 200 and api.get(f"/apps/{app_name}/redirect").json() == {
                "enabled": False
            }
            wait_for(lambda: router.get("/", headers={"Host": host}).status_code == 200, 30, "redirect off")
            assert serves_https(stack, own_ca, host, "echo")
            api.put(f"/apps/{app_name}/redirect", json={"enabled": True}).raise_for_status()
            wait_for(lambda: router.get("/", headers={"Host": host}).status_code == 301, 30, "redirect on")

            # A bad upload is refused with the reason, and what is served stays.
            refused = api.post(f"/apps/{app_name}/certs", json={"chain": chain, "key": "not a key"})
            assert refused.status_code == 422 and "KEY is not a PEM private key" in refused.text
            assert serves_https(stack, own_ca, host, "echo")

            assert api.delete(f"/apps/{app_name}/certs/{host}").status_code == 204
            wait_for(lambda: host not in sans(served_certificate(stack, host)[0]), 30, "the certificate gone")
            assert router.get("/", headers={"Host": host}).text == "echo", "plain HTTP again, no redirect"
            assert api.delete(f"/apps/{app_name}/certs/{host}").status_code == 404
    finally:
        system.platform.destroy(app_name)


def test_a_domain_not_pointing_here_stays_on_http_says_why_and_raises_an_alert(
    stack: SingleBox,
    system: System,
    pebble: Pebble,
    alert_receiver: AlertReceiver,
    app_name: str,
    router: httpx.Client,
) -> None:
    host, elsewhere = f"{app_name}.{stack.domain}", f"{app_name}.nowhere.test"  # no zone here serves it
    system.platform.create(App(name=app_name, repository="https://github.com/acme/away", domains=[elsewhere]))
    try:
        with (
            echo_instance(stack, app_name, (elsewhere,)),
            api_client(stack, system, f"away-{app_name}") as api,
        ):
            manager = CertificateManager(
                system.certificates,
                OnlyApps(system, app_name),
                system.kv,
                domain=stack.domain,  # type: ignore[arg-type]
            )
            tried = {r.id: r for r in manager.run_once()}
            assert tried[host].status == "valid" and tried[elsewhere].status == "failed"
            # The app's own name moves to HTTPS; the domain that failed is still served over HTTP.
            wait_for(
                lambda: router.get("/", headers={"Host": host}).status_code == 301, 30, f"{host} redirected"
            )
            assert router.get("/", headers={"Host": elsewhere}).text == "echo"
            rows = {r["name"]: r for r in api.get(f"/apps/{app_name}/certs").json()}
            assert rows[elsewhere]["status"] == "failed" and rows[elsewhere]["next_attempt"]
            assert "the CA could not" in rows[elsewhere]["last_error"]
            assert "Point the name at this router" in rows[elsewhere]["hint"]

            # It keeps failing (5 s in this session's settings, a day by default): the alert goes out.
            def alerted() -> list[dict[str, object]]:
                return [d for d in alert_receiver.for_app(app_name) if d["kind"] == "certificate_failing"]

            (alert,) = wait_for(alerted, 60, "the certificate_failing alert")
            assert alert["status"] == "firing" and elsewhere in str(alert["summary"])

            # Nothing retries in a tight loop: asked again and again, the CA hears nothing more.
            account = system.cert_store.account()
            assert account is not None
            orders = pebble.orders(account)
            for _ in range(3):
                assert manager.run_once() == []
            assert pebble.orders(account) == orders
    finally:
        system.platform.destroy(app_name)


def test_a_renewal_under_load_drops_no_request(
    stack: SingleBox, knot: Knot, app_name: str, tmp_path: Path
) -> None:
    """Pebble's certificates last 30 s here, so the manager renews one during the test (a third of
    its lifetime left: after 20 s) while a client sends HTTPS requests, each on a new connection."""
    server = pebble_server(
        CertTestTools.resolve().pebble,
        tmp_path / "pebble",
        http_port=stack.ports.router_http,
        dns_server=knot.address,
        validity=30,
    )
    host = f"{app_name}.{stack.domain}"
    with serving(server.process):
        renewing = System(
            stack.settings.model_copy(
                update={"acme_directory_url": server.directory_url, "acme_ca_bundle": server.tls_bundle,
                        "acme_timeout": 60.0}
            )
        )  # fmt: skip
        root = tmp_path / "root.pem"
        root.write_bytes(server.root_pem())
        trust = ssl.create_default_context(cafile=str(root))
        renewing.platform.create(App(name=app_name, repository="https://github.com/acme/renew"))
        try:
            with echo_instance(stack, app_name):
                first = renewing.certificates.issue([host])
                assert first.status == "valid", first.last_error
                assert (
                    first.not_after
                    and first.not_before
                    and first.not_after - first.not_before < timedelta(minutes=1)
                )
                wait_for(lambda: serves_https(stack, trust, host, "echo"), 30, f"https://{host}")
                manager = CertificateManager(
                    renewing.certificates, OnlyApps(renewing, app_name), renewing.kv,
                    domain=stack.domain, interval=1,  # type: ignore[arg-type]
                )  # fmt: skip
                with Load(stack, host, 120, https_ca=root) as load:
                    manager.start()
                    try:
                        wait_for(
                            lambda: (
                                format(served_certificate(stack, host)[0].serial_number, "x") != first.serial
                            ),
                            60,
                            "the renewed certificate served",
                        )
                    finally:
                        manager.stop()
                    wait_for(lambda: serves_https(stack, trust, host, "echo"), 10, "HTTPS after the renewal")
            renewed = renewing.cert_store.get(host)
            assert renewed is not None and renewed.serial != first.serial
            assert renewed.not_after is not None and renewed.not_after > first.not_after
            assert load.result["failures"] == {}, load.result
            assert load.result["total"] > 20, load.result
        finally:
            renewing.platform.destroy(app_name)
