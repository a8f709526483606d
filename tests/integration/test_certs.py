"""Certificates from a real ACME CA (pebble), through the real router, with DNS-01 on a real DNS server.

One pebble and one knot per module (``acme_servers.py``), beside the session's single-box
stack. Knot serves the stack's own domain (``localhost``) with every name at 127.0.0.1, and
pebble resolves names through it, so it fetches ``http://<app>.localhost/.well-known/…`` from
the session's HAProxy (pebble's ``httpPort`` is the router's port), which hands it to the
session's API, which answers from Consul KV. The test's ``System`` is the stack's settings plus
pebble's directory, the CA bundle of pebble's HTTPS API and knot's TSIG key: pebble's CAs are
trusted by this module only, never by the system.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from pydantic import SecretStr

from billowin.certs.http01 import PREFIX as CHALLENGES
from billowin.errors import CertificateError
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import ReleaseStatus
from billowin.router.certs import served_certificates
from billowin.stack.single_box import SingleBox, VaultDev
from billowin.stack.tools import CertTestTools
from billowin.system import System

from .acme_servers import (
    Knot,
    Pebble,
    acme_settings,
    forget_certificates,
    knot_server,
    pebble_server,
    serving,
)
from .conftest import wait_for

RETRY_MIN = 300.0


@pytest.fixture(scope="module", autouse=True)
def no_certificate_outlives_the_module(stack: SingleBox) -> Iterator[None]:
    """Every certificate this module's pebble issued is removed at its end: the session's router
    serves whatever the store holds, and a leftover ``*.localhost`` (from a CA no other module
    trusts) would answer later modules' plain HTTP with a redirect to it."""
    yield
    forget_certificates(stack.settings)


@pytest.fixture(scope="module")
def cert_tools() -> CertTestTools:
    return CertTestTools.resolve()  # missing pebble or knotd fails the module: nothing skips


@pytest.fixture(scope="module")
def knot(
    cert_tools: CertTestTools, stack: SingleBox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Knot]:
    server = knot_server(cert_tools.knotd, tmp_path_factory.mktemp("knot"), stack.domain)
    with serving(server.process):
        yield server


@pytest.fixture(scope="module")
def pebble(
    cert_tools: CertTestTools, stack: SingleBox, knot: Knot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pebble]:
    server = pebble_server(
        cert_tools.pebble,
        tmp_path_factory.mktemp("pebble"),
        http_port=stack.ports.router_http,
        dns_server=knot.address,
    )
    with serving(server.process):
        yield server


@pytest.fixture(scope="module")
def system(stack: SingleBox, pebble: Pebble, knot: Knot) -> System:
    settings = stack.settings.model_copy(
        update={**acme_settings(pebble, knot), "acme_retry_min": RETRY_MIN, "acme_dns_timeout": 30.0}
    )
    return System(settings)


@pytest.fixture(scope="module")
def pebble_root(pebble: Pebble) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pebble.root_pem())


def verify_chain(chain_pem: str, root: x509.Certificate, name: str) -> x509.Certificate:
    """The leaf, once its chain verifies against ``root`` for ``name`` (as a TLS client would)."""
    chain = x509.load_pem_x509_certificates(chain_pem.encode())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(name))
    verifier.verify(chain[0], chain[1:])
    return chain[0]


def api_requests_at_the_router(stack: SingleBox) -> int:
    """Requests HAProxy has sent to its ``billowin_api`` backend (its Prometheus exporter)."""
    text = httpx.get(f"http://127.0.0.1:{stack.ports.router_stats}/metrics", timeout=5).text
    match = re.search(r'^haproxy_backend_http_requests_total\{proxy="billowin_api"\} (\d+)', text, re.M)
    assert match, "the router has no billowin_api backend"
    return int(match.group(1))


def test_an_app_gets_a_certificate_over_http_01_through_the_router(
    stack: SingleBox,
    system: System,
    pebble_root: x509.Certificate,
    deployer: Deployer,
    make_image,  # type: ignore[no-untyped-def]
    app_name: str,
    cleanup_apps: list[str],
    router: httpx.Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the acme library logs every request and answer at DEBUG
    cleanup_apps.append(app_name)
    host = f"{app_name}.{stack.domain}"
    image = make_image(app_name, "tls", greeting="hello tls")
    release = deployer.deploy(app_name, image, [Process(name="web")])
    assert release.status == ReleaseStatus.LIVE, release.description
    wait_for(
        lambda: router.get("/", headers={"Host": host}).text.startswith("hello tls"), 30, f"{host} routed"
    )
    # On the app's own host, a challenge path goes to the API, and nothing pending answers 404.
    unknown = router.get(f"/.well-known/acme-challenge/{'x' * 43}", headers={"Host": host})
    assert unknown.status_code == 404 and unknown.json()["error"] == "NotFound"

    before = api_requests_at_the_router(stack)
    record = system.certificates.issue([host])
    assert record.status == "valid", f"{record.last_error} ({record.hint})"
    assert api_requests_at_the_router(stack) > before, "pebble fetched the answer through HAProxy"

    pair = system.cert_store.key_pair(record.id)
    assert pair is not None
    leaf = verify_chain(pair.chain_pem, pebble_root, host)
    assert record.not_after == leaf.not_valid_after_utc and "Pebble" in record.issuer
    assert system.kv.kv_keys(f"{CHALLENGES}/") == [], "the answers are taken down"
    assert router.get("/", headers={"Host": host}).text.startswith("hello tls"), "the app is still served"
    # The key is in the store, and nowhere else: not in this process's logs, nor the API's.
    assert "PRIVATE KEY" not in caplog.text and pair.key_pem not in caplog.text
    assert "PRIVATE KEY" not in (stack.state_dir / "api.log").read_text(errors="replace")
    listed = repr(system.cert_store.all())
    assert host in listed and "PRIVATE KEY" not in listed


def test_a_wildcard_gets_a_certificate_over_dns_01(
    stack: SingleBox, system: System, knot: Knot, pebble_root: x509.Certificate, app_name: str
) -> None:
    wildcard = f"*.{stack.domain}"
    record = system.certificates.issue([wildcard])
    assert record.status == "valid", f"{record.last_error} ({record.hint})"
    assert record.id == f"_wildcard.{stack.domain}"
    pair = system.cert_store.key_pair(record.id)
    assert pair is not None
    verify_chain(pair.chain_pem, pebble_root, f"{app_name}.{stack.domain}")  # a name never ordered
    # The TXT record was published for pebble, then removed again.
    rcode, values = knot.query(f"_acme-challenge.{stack.domain}", "TXT")
    assert rcode == "NOERROR" and values == []
    assert "DDNS" in Path(knot.process.log_path).read_text(), "knot applied a dynamic update"


def test_a_failing_challenge_records_a_plain_reason_and_backs_off(
    system: System, pebble: Pebble, app_name: str
) -> None:
    name = f"{app_name}.nowhere.test"  # in no zone knot serves: it does not resolve here
    failed = system.certificates.issue([name])
    assert failed.status == "failed" and failed.failures == 1
    assert name in failed.last_error and "http-01 check failed, the CA could not" in failed.last_error
    assert "Point the name at this router" in failed.hint
    assert failed.updated_at is not None
    assert failed.next_attempt == failed.updated_at + timedelta(seconds=RETRY_MIN)
    assert system.cert_store.get(failed.id) == failed
    assert system.cert_store.key_pair(failed.id) is None

    account = system.cert_store.account()
    assert account is not None
    orders = pebble.orders(account)
    for _ in range(5):  # asked again and again: the CA hears nothing more before the next attempt
        assert system.certificates.issue([name]) == failed
    assert pebble.orders(account) == orders


def test_external_account_binding_is_sent_when_the_ca_wants_it(
    cert_tools: CertTestTools, stack: SingleBox, knot: Knot, tmp_path: Path
) -> None:
    """A CA that requires EAB (as ZeroSSL or an in-house CA does) takes the account with the kid and
    HMAC key, and refuses it without, saying which settings to set."""
    hmac_key = secrets.token_urlsafe(48)
    server = pebble_server(
        cert_tools.pebble, tmp_path, http_port=stack.ports.router_http, dns_server=knot.address,
        eab_keys={"billowin-kid": hmac_key},
    )  # fmt: skip
    server.process.start()
    try:
        server.process.wait_ready(20)
        issuer = System(
            stack.settings.model_copy(
                update={"acme_directory_url": server.directory_url, "acme_ca_bundle": server.tls_bundle}
            )
        ).acme
        with pytest.raises(CertificateError) as refused:
            issuer.register("ops@example.com")
        assert "BILLOWIN_ACME_EAB_KID" in refused.value.hint
        account = issuer.register("ops@example.com", eab_kid="billowin-kid", eab_hmac_key=hmac_key)
        assert account.uri.startswith(f"https://127.0.0.1:{server.port}/")
        assert account.directory == server.directory_url and "PRIVATE" not in repr(account)
    finally:
        server.process.stop()


def test_with_vault_no_private_key_reaches_consul(
    stack: SingleBox,
    system: System,
    pebble: Pebble,
    pebble_root: x509.Certificate,
    vault: VaultDev,
    app_name: str,
) -> None:
    """With Vault configured, keys and the ACME account are Vault secrets; Consul keeps the records
    and chains (public) and which key version belongs to each chain."""
    in_vault = System(
        system.settings.model_copy(
            update={
                "config_backend": "vault",
                "vault_addr": vault.addr,
                "vault_token": SecretStr(vault.root_token),
            }
        )
    )
    store = in_vault.cert_store
    assert store.backend == "vault"
    host = f"{app_name}.{stack.domain}"
    record = in_vault.certificates.issue([host])
    assert record.status == "valid", f"{record.last_error} ({record.hint})"
    try:
        tree = dict(system.kv.kv_list(f"billowin/certs/{record.id}/"))
        assert sorted(k.rsplit("/", 1)[1] for k in tree) == ["chain", "key-version", "meta"]
        assert not any(b"PRIVATE KEY" in v for v in tree.values())
        account = store.account()
        assert account is not None and account.directory == pebble.directory_url
        _, consul_account = system.kv.kv_get("billowin/certs/_account")
        assert consul_account is None or account.key_json.encode() not in consul_account
        pair = store.key_pair(record.id)
        assert pair is not None
        verify_chain(pair.chain_pem, pebble_root, host)
        # What the router writes comes with Vault's key.
        (served,) = [s for s in served_certificates(store, datetime.now(UTC)) if s.cert_id == record.id]
        assert pair.key_pem.strip().encode() in served.pem
        # A renewal is a new key version, paired with its own chain.
        renewed = in_vault.certificates.issue([host])
        assert renewed.status == "valid" and renewed.serial != record.serial
        new = store.key_pair(record.id)
        assert new is not None and new.key_pem != pair.key_pem
        leaf = x509.load_pem_x509_certificates(new.chain_pem.encode())[0]
        assert format(leaf.serial_number, "x") == renewed.serial
    finally:
        store.delete(record.id)
    assert store.key_pair(record.id) is None and system.kv.kv_list(f"billowin/certs/{record.id}/") == []
