"""The certificate manager on the fakes: what it wants, what it orders, and what it never orders.

The real ``Certificates``, store, HTTP-01 responder, app store and lock on ``InMemoryKV``; the CA
is ``FakeAuthority``, which counts its orders. The real CA is in tests/integration/test_https.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from billowin.apps.store import App, AppStore
from billowin.certs.http01 import Http01Responder
from billowin.certs.manager import CertificateLock, CertificateManager
from billowin.certs.service import Certificates
from billowin.certs.store import ConsulCertificateStore
from billowin.errors import ChallengeFailed
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import FakeAuthority, FakeScheduler, InMemoryConfig, InMemoryKV
from tests.unit.test_certs import RecordingDns

DOMAIN = "apps.test"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(self) -> None:
        self.kv = InMemoryKV(max_wait=0.1)
        self.ca = FakeAuthority()
        self.clock = Clock()
        self.apps = AppStore(self.kv)
        solvers = {"http-01": Http01Responder(self.kv), "dns-01": RecordingDns()}
        self.certs = Certificates(
            ConsulCertificateStore(self.kv),
            self.ca,
            solvers,
            retry_min=300,
            clock=self.clock,  # type: ignore[arg-type]
        )

    def manager(self) -> CertificateManager:
        """A manager as a (re)started API process makes it: nothing carried over but the store."""
        return CertificateManager(self.certs, self.apps, self.kv, domain=DOMAIN, clock=self.clock)

    def app(self, name: str, *domains: str) -> None:
        self.apps.create(App(name=name, repository=f"https://github.com/acme/{name}", domains=list(domains)))


def test_each_app_and_custom_domain_gets_a_certificate_and_a_restart_orders_nothing() -> None:
    w = World()
    w.app("shop", "www.shop.example")
    w.app("blog")
    assert w.manager().wanted() == [("blog.apps.test",), ("shop.apps.test",), ("www.shop.example",)]
    tried = w.manager().run_once()
    assert sorted(r.id for r in tried) == ["blog.apps.test", "shop.apps.test", "www.shop.example"]
    assert all(r.status == "valid" for r in tried)
    orders = len(w.ca.orders)
    assert orders == 3
    w.clock.now += timedelta(days=1)
    assert w.manager().run_once() == [] and len(w.ca.orders) == orders, "nothing ordered after a restart"


def test_a_certificate_is_renewed_once_a_third_of_its_lifetime_is_left() -> None:
    w = World()
    w.app("shop")
    manager = w.manager()
    manager.run_once()
    w.clock.now += timedelta(days=59)
    assert manager.run_once() == []
    w.clock.now += timedelta(days=2)
    assert [r.id for r in manager.run_once()] == ["shop.apps.test"] and len(w.ca.orders) == 2


def test_a_valid_wildcard_covers_every_app_without_ordering_per_app() -> None:
    w = World()
    assert w.certs.issue([f"*.{DOMAIN}"]).status == "valid"
    w.app("shop", "www.shop.example")
    w.app("new")
    assert w.manager().wanted() == [("www.shop.example",)]
    w.manager().run_once()
    assert [names for _, names in w.ca.orders] == [(f"*.{DOMAIN}",), ("www.shop.example",)]


def test_a_failing_name_backs_off_and_is_not_retried_in_a_loop() -> None:
    w = World()
    w.app("shop", "nowhere.example")
    w.ca.fail_with = ChallengeFailed("nowhere.example: the CA's http-01 check failed", hint="Point it here.")
    manager = w.manager()
    for _ in range(5):
        manager.run_once()
    asked = [names for _, names in w.ca.orders]
    assert asked.count(("nowhere.example",)) == 1, asked
    record = w.certs.get("nowhere.example")
    assert record is not None and record.status == "failed" and "http-01" in record.last_error
    w.clock.now += timedelta(seconds=301)
    manager.run_once()
    assert [names for _, names in w.ca.orders].count(("nowhere.example",)) == 2


def test_an_uploaded_certificate_is_never_ordered() -> None:
    w = World()
    w.app("shop")
    issued = w.certs.issue(["shop.apps.test"])
    w.certs.store.save(replace(issued, source="uploaded", not_after=w.clock.now + timedelta(days=1)))
    assert w.manager().run_once() == [] and len(w.ca.orders) == 1


def test_a_certificate_another_process_is_ordering_is_left_to_it() -> None:
    w = World()
    w.app("shop")
    with CertificateLock(w.kv).hold("shop.apps.test") as held:
        assert held
        assert w.manager().run_once() == [] and w.ca.orders == []
    assert [r.id for r in w.manager().run_once()] == ["shop.apps.test"]


def test_creating_an_app_or_adding_a_domain_wakes_the_manager(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, cache_dir=tmp_path, pipeline=False, domain=DOMAIN, acme_auto=True)
    system = System(
        settings, kv=InMemoryKV(max_wait=0.1), nomad=FakeScheduler(), config=InMemoryConfig(), builder=None
    )
    woken = system.cert_manager.rounds._wake
    system.platform.create(App(name="shop", repository="https://github.com/acme/shop"))
    assert woken.is_set()
    woken.clear()
    system.platform.add_domain("shop", "www.shop.example")
    assert woken.is_set()


def test_certs_shows_each_name_with_its_certificate_status_and_reason() -> None:
    from billowin.certs.manager import certificates_of

    w = World()
    w.app("shop", "www.shop.example", "nowhere.example", "later.example")
    w.certs.issue(["shop.apps.test"])
    w.certs.issue(["www.shop.example"])
    w.ca.fail_with = ChallengeFailed("nowhere.example: the CA's http-01 check failed", hint="Point it here.")
    w.certs.issue(["nowhere.example"])
    rows = {r.name: r for r in certificates_of(w.certs.get, w.apps.get("shop"), DOMAIN, w.clock.now)}
    assert [rows[n].status for n in rows] == ["valid", "valid", "failed", "none"]
    assert rows["shop.apps.test"].issuer == "CN=Fake ACME CA" and rows["shop.apps.test"].not_after
    assert (
        "http-01" in rows["nowhere.example"].last_error and rows["nowhere.example"].hint == "Point it here."
    )
    assert rows["nowhere.example"].next_attempt is not None
    later = rows["shop.apps.test"].not_after + timedelta(seconds=1)  # type: ignore[operator]
    assert certificates_of(w.certs.get, w.apps.get("shop"), DOMAIN, later)[0].status == "expired"


def test_a_wildcard_is_shown_for_an_app_name_with_no_certificate_of_its_own() -> None:
    from billowin.certs.manager import certificates_of

    w = World()
    w.app("shop")
    w.certs.issue([f"*.{DOMAIN}"])
    (row,) = certificates_of(w.certs.get, w.apps.get("shop"), DOMAIN, w.clock.now)
    assert (row.name, row.certificate, row.status) == ("shop.apps.test", f"_wildcard.{DOMAIN}", "valid")


def test_a_production_box_wants_a_certificate_for_the_apis_own_name_too(tmp_path: Path) -> None:
    from billowin.stack.production import ProductionBox
    from billowin.stack.tools import Toolset

    tools = Toolset(*(Path(f"/bin/{n}") for n in ("n", "c", "ct", "d", "h", "r", "p", "v")))
    env = ProductionBox(tools, tmp_path, domain="example.com").env()
    settings = Settings(
        state_dir=tmp_path, pipeline=False, domain="example.com", acme_api_name=env["BILLOWIN_ACME_API_NAME"]
    )
    system = System(
        settings, kv=InMemoryKV(max_wait=0.1), nomad=FakeScheduler(), config=InMemoryConfig(), builder=None
    )
    assert system.cert_manager.wanted() == [("billowin.example.com",)]
