"""Certificates on the fakes: the store, the HTTP-01 answers and route, renewal and back-off.

The real store (``ConsulCertificateStore``), HTTP-01 responder and ``Certificates`` service run
on ``InMemoryKV``; the CA is ``FakeAuthority``, which signs real certificates. Nothing here
reaches a network: the real CA and DNS server are in ``tests/integration/test_certs.py``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import requests
from acme import challenges, messages
from acme import errors as acme_errors
from pydantic import SecretStr, ValidationError

from billowin.adapters.acme import AcmeIssuer
from billowin.adapters.rfc2136 import Rfc2136Solver, split_server
from billowin.api.app import create_app
from billowin.certs.http01 import PREFIX as CHALLENGES
from billowin.certs.http01 import Http01Responder, is_token
from billowin.certs.service import (
    FAILED,
    VALID,
    Certificates,
    backoff,
    due_for_renewal,
    inspect_chain,
    needs_attempt,
    new_private_key,
)
from billowin.certs.store import ConsulCertificateStore
from billowin.errors import (
    AccountUnknown,
    CertificateError,
    ChallengeFailed,
    ConfigError,
    InvalidInput,
    Unreachable,
)
from billowin.names import certificate_id, check_certificate_name
from billowin.ports import AcmeAccount, CertificateRecord, KeyPair, PendingChallenge
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import FakeAuthority, FakeScheduler, InMemoryConfig, InMemoryKV

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a unit test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class RecordingDns:
    """A DNS-01 solver that remembers what it was asked to publish and take down."""

    kind = "dns-01"

    def __init__(self) -> None:
        self.live: set[tuple[str, str]] = set()
        self.seen: list[tuple[str, str]] = []

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        for c in challenges:
            self.live.add((c.txt_name, c.txt_value))
            self.seen.append((c.txt_name, c.txt_value))

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        for c in challenges:
            self.live.discard((c.txt_name, c.txt_value))


class ReadLog(InMemoryKV):
    """The in-memory KV, remembering every key read."""

    def __init__(self) -> None:
        super().__init__(max_wait=0.1)
        self.read: list[str] = []

    def kv_get(self, key: str) -> tuple[int, bytes | None]:
        self.read.append(key)
        return super().kv_get(key)

    def kv_list(self, prefix: str) -> list[tuple[str, bytes]]:
        self.read.append(prefix + "*")
        return super().kv_list(prefix)


def certificates(
    kv: InMemoryKV, ca: FakeAuthority, clock: Clock, *, dns: RecordingDns | None = None
) -> Certificates:
    solvers: dict[str, object] = {"http-01": Http01Responder(kv)}
    if dns is not None:
        solvers["dns-01"] = dns
    return Certificates(
        ConsulCertificateStore(kv),
        ca,
        solvers,  # type: ignore[arg-type]
        email="ops@example.com",
        retry_min=300,
        retry_max=86400,
        clock=clock,
    )


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["shop.localhost", "*.example.com", "localhost", "WWW.Example.COM."])
def test_names_a_certificate_can_cover(name: str) -> None:
    assert check_certificate_name(name) == name.lower().rstrip(".")


@pytest.mark.parametrize(
    "name", ["", "*", "*.", "*.*.example.com", "a.*.example.com", "a..b", "-a.b", "a_b.c", "1.2.3.4", "a/b"]
)
def test_names_no_certificate_covers(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_certificate_name(name)


def test_certificate_ids_are_kv_key_parts() -> None:
    assert certificate_id(["shop.localhost", "www.shop.test"]) == "shop.localhost"
    assert certificate_id(["*.localhost"]) == "_wildcard.localhost"


# -- the store ----------------------------------------------------------------------------------
def record(**fields: object) -> CertificateRecord:
    base = CertificateRecord(
        id="shop.localhost",
        names=("shop.localhost",),
        status=VALID,
        issuer="CN=Fake",
        serial="ab12",
        not_before=T0,
        not_after=T0 + timedelta(days=90),
        updated_at=T0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


KEY = new_private_key()


def test_the_store_round_trips_records_chains_keys_and_the_account() -> None:
    kv = InMemoryKV()
    store = ConsulCertificateStore(kv)
    assert store.get("shop.localhost") is None and store.key_pair("shop.localhost") is None
    store.save(record(), KeyPair("CHAIN", KEY))
    store.save(record(id="_wildcard.localhost", names=("*.localhost",)))
    assert store.get("shop.localhost") == record()
    assert store.key_pair("shop.localhost") == KeyPair("CHAIN", KEY)
    assert store.key_pair("_wildcard.localhost") is None  # a record without a certificate yet
    assert [r.id for r in store.all()] == ["_wildcard.localhost", "shop.localhost"]
    assert sorted(kv.kv_keys("billowin/certs/")) == [
        "billowin/certs/_wildcard.localhost/meta",
        "billowin/certs/shop.localhost/chain",
        "billowin/certs/shop.localhost/key",
        "billowin/certs/shop.localhost/meta",
    ]

    account = AcmeAccount("https://ca.test/dir", "https://ca.test/acct/1", '{"d": "secret"}', "a@b.c")
    store.save_account(account)
    assert store.account() == account
    assert [r.id for r in store.all()] == ["_wildcard.localhost", "shop.localhost"], "the account is no cert"

    store.delete("shop.localhost")
    assert store.get("shop.localhost") is None and store.key_pair("shop.localhost") is None
    assert store.account() == account


@pytest.mark.parametrize("bad", ["_account", "a/b", "..", "", "a b"])
def test_the_store_refuses_ids_that_are_not_one_key_part(bad: str) -> None:
    store = ConsulCertificateStore(InMemoryKV())
    with pytest.raises(InvalidInput):
        store.get(bad)
    with pytest.raises(InvalidInput):
        store.delete(bad)


def test_listing_certificates_never_reads_or_returns_a_key() -> None:
    kv = ReadLog()
    store = ConsulCertificateStore(kv)
    store.save(record(), KeyPair("CHAIN", KEY))
    store.save_account(AcmeAccount("https://ca.test/dir", "u", '{"d": "account-secret"}'))
    kv.read.clear()
    listed = store.all()
    one = store.get("shop.localhost")
    assert all(not k.endswith(("/key", "*", "_account")) for k in kv.read), kv.read
    shown = repr(listed) + repr(one)
    assert "PRIVATE KEY" not in shown and KEY not in shown and "account-secret" not in shown
    assert "PRIVATE KEY" not in repr(KeyPair("CHAIN", KEY))
    assert "account-secret" not in repr(store.account())


# -- renewal and back-off -----------------------------------------------------------------------
def test_a_certificate_is_due_when_a_third_of_its_lifetime_is_left() -> None:
    cert = record()  # 90 days: due from day 60
    assert not due_for_renewal(cert, T0)
    assert not due_for_renewal(cert, T0 + timedelta(days=59, hours=23))
    assert due_for_renewal(cert, T0 + timedelta(days=60))
    assert due_for_renewal(cert, T0 + timedelta(days=100))  # expired
    short = record(not_after=T0 + timedelta(hours=3))  # a test CA's short validity: due after 2 h
    assert not due_for_renewal(short, T0 + timedelta(minutes=119))
    assert due_for_renewal(short, T0 + timedelta(hours=2))
    assert due_for_renewal(record(not_before=None, not_after=None), T0), "no certificate yet: due"


def test_a_backing_off_or_uploaded_certificate_needs_no_attempt() -> None:
    late = T0 + timedelta(days=61)
    assert needs_attempt(record(), late)
    assert not needs_attempt(record(next_attempt=late + timedelta(minutes=1)), late)
    assert needs_attempt(record(next_attempt=late), late)
    assert not needs_attempt(record(source="uploaded"), late)


def test_back_off_doubles_from_the_first_wait_up_to_the_longest() -> None:
    waits = [backoff(n, first=300, longest=86400).total_seconds() for n in range(1, 12)]
    assert waits[:5] == [300, 600, 1200, 2400, 4800]
    assert waits[-1] == 86400 and max(waits) == 86400
    assert backoff(10_000, first=300, longest=86400).total_seconds() == 86400  # no overflow


# -- issuing ----------------------------------------------------------------------------------
def test_an_order_is_stored_with_its_chain_and_key_and_its_answers_taken_down() -> None:
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    certs = certificates(kv, ca, clock)
    issued = certs.issue(["Shop.Localhost", "www.shop.test", "shop.localhost"])
    assert issued.status == VALID and issued.names == ("shop.localhost", "www.shop.test")
    assert issued.id == "shop.localhost" and issued.failures == 0 and issued.next_attempt is None
    assert issued.issuer == "CN=Fake ACME CA"
    assert issued.not_after and issued.not_before
    assert issued.not_after - issued.not_before == timedelta(days=90)
    pair = certs.store.key_pair("shop.localhost")
    assert pair is not None and inspect_chain(pair.chain_pem, pair.key_pem, issued.names)
    assert ca.registrations == [("ops@example.com", "")] and len(ca.orders) == 1
    assert {c.kind for c in ca.presented} == {"http-01"}
    assert kv.kv_keys(f"{CHALLENGES}/") == [], "the HTTP-01 answers are gone"
    # The account is kept, and used again: one registration for any number of orders.
    certs.issue(["blog.localhost"])
    assert len(ca.registrations) == 1 and len(ca.orders) == 2


def test_a_renewal_gets_a_new_key() -> None:
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    certs = certificates(kv, ca, clock)
    certs.issue(["shop.localhost"])
    first = certs.store.key_pair("shop.localhost")
    certs.issue(["shop.localhost"])
    second = certs.store.key_pair("shop.localhost")
    assert first is not None and second is not None and first.key_pem != second.key_pem


def test_a_failure_is_recorded_with_a_reason_and_backs_off_instead_of_retrying() -> None:
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    certs = certificates(kv, ca, clock)
    ca.fail_with = ChallengeFailed(
        "shop.example.com: the CA's http-01 check failed: could not resolve",
        hint="Point the name at this router.",
    )
    failed = certs.issue(["shop.example.com"])
    assert failed.status == FAILED and failed.failures == 1
    assert "could not resolve" in failed.last_error and failed.hint == "Point the name at this router."
    assert failed.next_attempt == T0 + timedelta(seconds=300)
    assert certs.store.get("shop.example.com") == failed

    # Asked again at once, and again: nothing goes to the CA before the next attempt is due.
    for _ in range(50):
        assert certs.issue(["shop.example.com"]) == failed
    assert len(ca.orders) == 1

    clock.advance(seconds=300)
    again = certs.issue(["shop.example.com"])
    assert len(ca.orders) == 2 and again.failures == 2
    assert again.next_attempt == clock.now + timedelta(seconds=600), "each failure waits twice as long"

    # An admin's explicit retry goes through at once; success clears the failure.
    ca.fail_with = None
    fixed = certs.issue(["shop.example.com"], force=True)
    assert len(ca.orders) == 3 and fixed.status == VALID
    assert fixed.failures == 0 and fixed.last_error == "" and fixed.next_attempt is None


def test_a_failed_renewal_keeps_the_certificate_in_service() -> None:
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    certs = certificates(kv, ca, clock)
    issued = certs.issue(["shop.localhost"])
    pair = certs.store.key_pair("shop.localhost")
    ca.fail_with = CertificateError("the CA refused: rate limited")
    failed = certs.issue(["shop.localhost"])
    assert failed.status == FAILED and failed.not_after == issued.not_after
    assert certs.store.key_pair("shop.localhost") == pair


def test_an_unexpected_error_is_recorded_and_raised() -> None:
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    certs = certificates(kv, ca, clock)
    ca.fail_with = RuntimeError("boom")
    with pytest.raises(RuntimeError):
        certs.issue(["shop.localhost"])
    stored = certs.store.get("shop.localhost")
    assert stored is not None and stored.status == FAILED and "RuntimeError" in stored.last_error
    assert stored.next_attempt is not None


def test_an_account_the_ca_forgot_is_registered_again_once() -> None:
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    certs = certificates(kv, ca, clock)
    certs.issue(["shop.localhost"])
    ca.forget_accounts()
    assert certs.issue(["blog.localhost"]).status == VALID
    assert len(ca.registrations) == 2
    stored = certs.store.account()
    assert stored is not None and stored.uri.endswith("/acct/2")


def test_another_directory_gets_its_own_account() -> None:
    kv, clock = InMemoryKV(), Clock()
    staging = FakeAuthority("https://staging.ca.test/directory")
    certificates(kv, staging, clock).issue(["shop.localhost"])
    production = FakeAuthority("https://ca.test/directory")
    certificates(kv, production, clock).issue(["shop.localhost"])
    assert len(production.registrations) == 1
    stored = ConsulCertificateStore(kv).account()
    assert stored is not None and stored.directory == "https://ca.test/directory"


def test_a_wildcard_goes_over_dns_01_and_needs_it_configured() -> None:
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    with pytest.raises(ConfigError, match="needs DNS-01"):
        certificates(kv, ca, clock).issue(["*.localhost"])
    assert ca.orders == [] and ConsulCertificateStore(kv).all() == [], "nothing ordered or recorded"

    dns = RecordingDns()
    issued = certificates(kv, ca, clock, dns=dns).issue(["*.localhost"])
    assert issued.status == VALID and issued.id == "_wildcard.localhost"
    assert dns.seen == [("_acme-challenge.localhost", "v" * 43)] and dns.live == set()


def test_no_key_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    certs = certificates(kv, ca, clock)
    certs.issue(["shop.localhost"])
    ca.fail_with = CertificateError("the CA refused")
    certs.issue(["shop.localhost"], force=True)
    pair = certs.store.key_pair("shop.localhost")
    assert pair is not None
    assert "certificate shop.localhost issued" in caplog.text and "not issued" in caplog.text
    assert "PRIVATE KEY" not in caplog.text and pair.key_pem not in caplog.text
    assert "fake-private-part" not in caplog.text  # the account's key


def test_a_chain_that_does_not_match_is_refused() -> None:
    ca = FakeAuthority()
    ca.register("")
    account = AcmeAccount(ca.directory_url, "https://ca.test/acct/1", "{}")
    chain = ca.order(account, ["shop.localhost"], KEY.encode(), {})
    assert inspect_chain(chain, KEY, ["shop.localhost"])
    with pytest.raises(CertificateError, match="not for the key"):
        inspect_chain(chain, new_private_key(), ["shop.localhost"])
    with pytest.raises(CertificateError, match=r"does not cover blog\.localhost"):
        inspect_chain(chain, KEY, ["shop.localhost", "blog.localhost"])


def test_the_fake_ca_refuses_unknown_accounts() -> None:
    with pytest.raises(AccountUnknown):
        FakeAuthority().order(AcmeAccount("d", "nobody", "{}"), ["a.localhost"], KEY.encode(), {})


# -- HTTP-01 answers and their route ------------------------------------------------------------
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
ANSWER = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.mark.parametrize(
    ("token", "ok"),
    [
        (TOKEN, True),
        ("a" * 22, True),
        ("a" * 21, False),
        ("a" * 129, False),
        ("../../tokens", False),
        (TOKEN + "=", False),
        (TOKEN + "\n", False),
        ("tök" + "a" * 22, False),
        ("", False),
    ],
)
def test_tokens_are_validated_strictly(token: str, ok: bool) -> None:
    assert is_token(token) is ok


def challenge(token: str = TOKEN, answer: str = ANSWER) -> PendingChallenge:
    return PendingChallenge("http-01", "shop.localhost", token, answer, "_acme-challenge.shop.localhost", "")


def test_answers_live_only_between_present_and_cleanup_and_expire_with_their_session() -> None:
    kv = InMemoryKV()
    responder = Http01Responder(kv, ttl=60)
    assert responder.answer(TOKEN) is None
    responder.present([challenge()])
    assert responder.answer(TOKEN) == ANSWER
    entry = kv.entry(f"{CHALLENGES}/{TOKEN}")
    assert entry is not None and entry["Session"], "held by a session: Consul deletes it when that expires"
    responder.cleanup([challenge()])
    assert responder.answer(TOKEN) is None and kv.kv_keys(f"{CHALLENGES}/") == []
    with pytest.raises(InvalidInput):
        responder.answer("../../billowin/tokens")
    with pytest.raises(InvalidInput):
        responder.present([challenge(answer="not a key authorization")])


def make_api(tmp_path: Path) -> tuple[System, httpx.AsyncClient]:
    settings = Settings(state_dir=tmp_path, cache_dir=tmp_path, pipeline=False, monitoring=False)
    system = System(settings, kv=InMemoryKV(max_wait=0.1), nomad=FakeScheduler(), config=InMemoryConfig())
    app = create_app(settings, system=system)
    return system, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.localhost")


def test_the_challenge_route_answers_pending_tokens_only(tmp_path: Path) -> None:
    system, client = make_api(tmp_path)

    async def get(path: str) -> httpx.Response:
        return await client.get(path)

    loop = asyncio.new_event_loop()
    try:
        url = f"/.well-known/acme-challenge/{TOKEN}"
        assert loop.run_until_complete(get(url)).status_code == 404
        system.acme_challenges.present([challenge()])
        resp = loop.run_until_complete(get(url))
        assert resp.status_code == 200 and resp.text == ANSWER
        assert resp.headers["content-type"].startswith("text/plain")
        for bad in ("short", "a" * 129, TOKEN + "%2F..", "..%2F..%2Ftokens"):
            refused = loop.run_until_complete(get(f"/.well-known/acme-challenge/{bad}"))
            assert refused.status_code in (404, 422) and ANSWER not in refused.text
        system.acme_challenges.cleanup([challenge()])
        assert loop.run_until_complete(get(url)).status_code == 404
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


# -- settings and DNS-01 offline checks -----------------------------------------------------------
def test_the_acme_directory_must_be_https() -> None:
    assert Settings().acme_directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    with pytest.raises(ValidationError):
        Settings(acme_directory_url="http://ca.test/directory")


def test_dns_01_wants_its_whole_configuration(tmp_path: Path) -> None:
    assert System(Settings(state_dir=tmp_path)).dns01 is None
    with pytest.raises(ConfigError, match="TSIG"):
        _ = System(Settings(state_dir=tmp_path, acme_dns_server="127.0.0.1:53")).dns01


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("ns1.example.com", ("ns1.example.com", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
    ],
)
def test_dns_server_addresses(server: str, expected: tuple[str, int]) -> None:
    assert split_server(server) == expected


def test_dns_01_refuses_names_outside_its_zone_before_sending_anything() -> None:
    solver = Rfc2136Solver(
        "127.0.0.1:53", "example.com.", key_name="acme.", secret=SecretStr("c2VjcmV0c2VjcmV0c2VjcmV0")
    )
    name = "shop.other.test"
    outside = PendingChallenge("dns-01", name, "t", "", f"_acme-challenge.{name}", "v" * 43)
    with pytest.raises(ConfigError, match="not in the zone"):
        solver.present([outside])
    bad_value = replace(outside, txt_name="_acme-challenge.example.com", txt_value='"; rm -rf')
    with pytest.raises(InvalidInput):
        solver.present([bad_value])
    with pytest.raises(ConfigError):
        Rfc2136Solver("127.0.0.1", "example.com.", key_name="acme.", secret=SecretStr("not base64!"))


# -- the ACME adapter's error translation (offline: the library's own exceptions) ----------------
def _issuer() -> AcmeIssuer:
    return AcmeIssuer("https://ca.test/directory", timeout=30)


def _raise(exc: BaseException) -> None:
    raise exc


def test_failed_challenges_become_one_plain_reason_per_name() -> None:
    problem = messages.Error(
        typ="urn:ietf:params:acme:error:connection",
        detail='Get "http://shop.example.com/.well-known/acme-challenge/x": could not resolve',
    )
    authz = messages.AuthorizationResource(
        uri="https://ca.test/authz/1",
        body=messages.Authorization(
            identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="shop.example.com"),
            challenges=[messages.ChallengeBody(chall=challenges.HTTP01(token=b"t" * 32), error=problem)],
            status=messages.STATUS_INVALID,
        ),
    )
    with pytest.raises(ChallengeFailed) as failed:
        _issuer()._call("validation", _raise, acme_errors.ValidationError([authz]))
    assert failed.value.names == ("shop.example.com",)
    assert failed.value.message.startswith(
        "acme: shop.example.com: http-01 check failed, the CA could not connect to it (Get "
    )
    assert "Point the name at this router" in failed.value.hint


@pytest.mark.parametrize(
    ("raised", "kind", "said"),
    [
        (messages.Error.with_code("accountDoesNotExist", detail="no such one"), AccountUnknown, "no such"),
        (messages.Error.with_code("externalAccountRequired"), CertificateError, "BILLOWIN_ACME_EAB_KID"),
        (messages.Error.with_code("rateLimited", detail="too many"), CertificateError, "rate limit"),
        (acme_errors.TimeoutError(), CertificateError, "within 30 s"),
        (requests.exceptions.SSLError("bad cert"), CertificateError, "BILLOWIN_ACME_CA_BUNDLE"),
        (requests.exceptions.ConnectionError("refused"), Unreachable, "BILLOWIN_ACME_DIRECTORY_URL"),
    ],
)
def test_library_errors_are_translated_once_with_a_hint(raised: Exception, kind: type, said: str) -> None:
    with pytest.raises(kind) as caught:
        _issuer()._call("order", _raise, raised)
    assert said in str(caught.value)


def test_every_https_setting_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## HTTPS settings", 1)[1].split("\n## ", 1)[0]
    fields = [name for name in Settings.model_fields if name.startswith("acme_")]
    assert fields and all(f"`BILLOWIN_{name.upper()}`" in section for name in fields), fields


def test_new_names_are_a_new_request_and_keep_the_old_certificate_until_issued() -> None:
    kv, ca, clock = InMemoryKV(), FakeAuthority(), Clock()
    certs = certificates(kv, ca, clock)
    issued = certs.issue(["shop.localhost"])
    ca.fail_with = CertificateError("the CA refused")
    certs.issue(["shop.localhost"], force=True)
    failed = certs.issue(["shop.localhost", "www.shop.test"])  # not held back by the other failure
    assert len(ca.orders) == 3 and failed.failures == 1
    assert failed.names == ("shop.localhost", "www.shop.test") and failed.not_after == issued.not_after


def test_with_vault_consul_holds_no_private_key_and_each_chain_names_its_key_version() -> None:
    from billowin.certs.store import VaultCertificateStore
    from tests.fakes import InMemorySecrets

    kv, secrets = InMemoryKV(), InMemorySecrets()
    store = VaultCertificateStore(kv, secrets)
    service = Certificates(store, FakeAuthority(), {"http-01": Http01Responder(kv)})
    first = service.issue(["shop.apps.test"])
    pair = store.key_pair(first.id)
    assert pair is not None and "PRIVATE KEY" in pair.key_pem
    assert not any(b"PRIVATE" in (kv.kv_get(k)[1] or b"") for k in kv.kv_keys(""))
    assert kv.kv_get("billowin/certs/_account")[1] is None and secrets.get("_account") is not None
    service.issue(["shop.apps.test"])
    assert len(secrets.versions["shop.apps.test"]) == 2
    # A reader that got the first chain's listing still pairs it with the first key.
    assert secrets.get("shop.apps.test", 1) == {"key": pair.key_pem}
    renewed = store.key_pair(first.id)
    assert renewed is not None and renewed.key_pem != pair.key_pem and renewed.chain_pem != pair.chain_pem
    store.delete(first.id)
    assert store.key_pair(first.id) is None and "shop.apps.test" not in secrets.versions


def test_the_certificate_backend_follows_the_config_vars_unless_set(tmp_path: Path) -> None:
    from billowin.settings import Settings
    from billowin.system import System

    def backend(**fields: object) -> str:
        settings = Settings(
            state_dir=tmp_path, cache_dir=tmp_path, vault_addr="http://127.0.0.1:8200", **fields
        )
        return System(settings, kv=InMemoryKV()).cert_store.backend

    assert backend() == "consul"
    assert backend(config_backend="vault") == "vault"
    assert backend(config_backend="vault", cert_backend="consul") == "consul"
    assert backend(cert_backend="vault") == "vault"
