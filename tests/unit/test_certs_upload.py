"""Bringing your own certificate (``certs:add``), removing one (``certs:remove``) and the redirect
switch (``certs:redirect``): the Platform verbs on in-memory fakes, wired by the real ``System``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from billowin.apps.store import App
from billowin.certs.manager import CertificateManager, certificates_of, failing_certificates
from billowin.certs.service import check_upload, covers
from billowin.errors import InvalidInput, NotFound
from billowin.platform import Platform
from billowin.router import certs as router_certs
from billowin.router.certs import NO_REDIRECT_PREFIX
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import FakeAuthority, FakeScheduler, InMemoryConfig, InMemoryKV, own_certificate

DOMAIN = "apps.test"


@dataclass
class World:
    system: System
    platform: Platform
    kv: InMemoryKV
    authority: FakeAuthority


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    settings = Settings(state_dir=tmp_path, cache_dir=tmp_path, pipeline=False, domain=DOMAIN)
    kv = InMemoryKV(max_wait=0.1)
    system = System(settings, kv=kv, nomad=FakeScheduler(), config=InMemoryConfig(), builder=None)
    authority = FakeAuthority()
    system.__dict__["acme"] = authority  # the CA is the one thing unreachable from a unit test
    system.platform.create(
        App(name="shop", repository="https://github.com/acme/shop", domains=["www.shop.example"])
    )
    system.platform.create(App(name="blog", repository="https://github.com/acme/blog"))
    yield World(system, system.platform, kv, authority)


def test_an_uploaded_certificate_is_served_for_the_apps_names_it_covers_and_never_ordered(
    w: World, tmp_path: Path
) -> None:
    chain, key = own_certificate(["www.shop.example", "shop.apps.test", "blog.apps.test"])
    records = w.platform.add_certificate("shop", chain, key)
    # blog.apps.test is another app's name: the certificate is not stored for it.
    assert [r.names for r in records] == [("shop.apps.test",), ("www.shop.example",)]
    assert all(r.source == "uploaded" and r.status == "valid" and "Own Test CA" in r.issuer for r in records)
    rows = {r.name: r for r in certificates_of(w.system.cert_store.get, w.system.apps.get("shop"), DOMAIN)}
    assert rows["www.shop.example"].source == "uploaded" and rows["shop.apps.test"].status == "valid"
    assert certificates_of(w.system.cert_store.get, w.system.apps.get("blog"), DOMAIN)[0].status == "none"
    # The router serves it for those two names only: blog's visitors never get it.
    directory = tmp_path / "certs"
    router_certs.sync(directory, router_certs.served_certificates(w.system.cert_store, datetime.now(UTC)))
    listed = (directory / router_certs.CRT_LIST).read_text()
    assert listed.splitlines() == [
        f"{directory}/shop.apps.test.pem shop.apps.test",
        f"{directory}/www.shop.example.pem www.shop.example",
    ]
    # Billowin never orders (or renews) what the user brought; it still orders blog's.
    manager = CertificateManager(w.system.certificates, w.system.apps, w.kv, domain=DOMAIN)
    tried = manager.run_once()
    assert [r.id for r in tried] == ["blog.apps.test"]
    assert [names for _, names in w.authority.orders] == [("blog.apps.test",)]


def test_a_wildcard_of_ones_own_covers_one_level_of_names() -> None:
    assert covers("*.shop.example", "www.shop.example")
    assert not covers("*.shop.example", "a.b.shop.example") and not covers("*.shop.example", "shop.example")
    assert covers("shop.example", "shop.example") and not covers("shop.example", "www.shop.example")


def encrypted(key_pem: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()


def other_key() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )


@pytest.mark.parametrize(
    ("case", "said", "hint"),
    [
        ("not pem", "CERT is not a PEM certificate chain", "leaf first"),
        ("encrypted key", "KEY is encrypted", "openssl pkey"),
        ("not a key", "KEY is not a PEM private key", "BEGIN PRIVATE KEY"),
        ("other key", "KEY does not belong to the certificate", "the key the certificate was issued for"),
        ("expired", "the certificate expired on", ""),
        ("other names", "covers blog.apps.test, none of the app's names", "domains:add"),
    ],
)
def test_a_bad_upload_says_what_is_wrong_and_stores_nothing(
    w: World, case: str, said: str, hint: str
) -> None:
    chain, key = own_certificate(["shop.apps.test"], expired=case == "expired")
    if case == "not pem":
        chain = "hello"
    elif case == "encrypted key":
        key = encrypted(key)
    elif case == "not a key":
        key = "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"
    elif case == "other key":
        key = other_key()
    elif case == "other names":
        chain, key = own_certificate(["blog.apps.test"])
    with pytest.raises(InvalidInput) as refused:
        w.platform.add_certificate("shop", chain, key)
    assert said in refused.value.message and hint in (refused.value.hint or "")
    assert key.splitlines()[1] not in refused.value.message + (refused.value.hint or ""), "no key shown"
    assert w.system.cert_store.all() == []


def test_certs_remove_drops_one_names_certificate_and_a_new_one_is_ordered(w: World) -> None:
    chain, key = own_certificate(["shop.apps.test", "www.shop.example"])
    w.platform.add_certificate("shop", chain, key)
    w.platform.remove_certificate("shop", "WWW.shop.example.")
    assert [r.id for r in w.system.cert_store.all()] == ["shop.apps.test"]
    with pytest.raises(NotFound, match="has no certificate of its own"):
        w.platform.remove_certificate("shop", "www.shop.example")
    with pytest.raises(NotFound, match="is not a name of shop") as refused:
        w.platform.remove_certificate("shop", "blog.apps.test")
    assert "billowin certs shop" in (refused.value.hint or "")
    manager = CertificateManager(w.system.certificates, w.system.apps, w.kv, domain=DOMAIN)
    assert "www.shop.example" in [r.id for r in manager.run_once()]


def test_a_name_under_the_wildcard_cannot_be_removed_per_app(w: World) -> None:
    chain, key = own_certificate([f"*.{DOMAIN}"])  # stored as the wildcard DNS-01 would order
    records, pair = check_upload(chain, key, [f"*.{DOMAIN}"], datetime.now(UTC))
    w.system.cert_store.save(records[0], pair)
    with pytest.raises(NotFound) as refused:
        w.platform.remove_certificate("shop", "shop.apps.test")
    assert "wildcard" in (refused.value.hint or "")
    assert w.system.cert_store.get(f"_wildcard.{DOMAIN}") is not None


def test_destroying_an_app_or_removing_a_domain_removes_their_certificates(w: World) -> None:
    chain, key = own_certificate(["shop.apps.test", "www.shop.example"])
    w.platform.add_certificate("shop", chain, key)
    w.platform.remove_domain("shop", "www.shop.example")
    assert [r.id for r in w.system.cert_store.all()] == ["shop.apps.test"]
    w.platform.set_https_redirect("shop", False)
    w.platform.destroy("shop")
    assert w.system.cert_store.all() == []
    assert w.kv.kv_keys(f"{NO_REDIRECT_PREFIX}/") == []


def test_the_redirect_switch_is_per_app_and_on_by_default(w: World) -> None:
    assert w.platform.https_redirect("shop") is True
    w.platform.set_https_redirect("shop", False)
    assert w.platform.https_redirect("shop") is False and w.platform.https_redirect("blog") is True
    assert w.kv.kv_get(f"{NO_REDIRECT_PREFIX}/shop")[1] == b"off"
    w.platform.set_https_redirect("shop", True)
    assert w.platform.https_redirect("shop") is True
    with pytest.raises(NotFound):
        w.platform.set_https_redirect("nope", False)


def test_a_run_of_failures_remembers_when_it_started(w: World) -> None:
    w.authority.fail_with = InvalidInput("the CA could not reach shop.apps.test")
    now = datetime.now(UTC)
    first = w.system.certificates.issue(["shop.apps.test"])
    assert first.failing_since is not None and abs(first.failing_since - now) < timedelta(seconds=5)
    again = w.system.certificates.issue(["shop.apps.test"], force=True)
    assert again.failures == 2 and again.failing_since == first.failing_since
    # What the monitoring's alert rule reads: per app, the names failing and since when.
    failing = failing_certificates(w.system.cert_store, w.system.apps, DOMAIN)
    assert [(f.name, f.since) for f in failing["shop"]] == [
        ("shop.apps.test", first.failing_since.timestamp())
    ]
    assert failing["blog"] == []
    w.authority.fail_with = None
    done = w.system.certificates.issue(["shop.apps.test"], force=True)
    assert done.status == "valid" and done.failing_since is None and done.failures == 0
    assert w.system.cert_store.get("shop.apps.test") == done
