"""The router's certificate files: what ``bind … ssl crt-list`` reads, written from the store.

The real store and ``Certificates`` on ``InMemoryKV`` with ``FakeAuthority`` (real certificates);
the real ``haproxy -c`` checks that the files make a valid HTTPS listener.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from billowin.certs.http01 import Http01Responder
from billowin.certs.service import Certificates
from billowin.certs.store import ConsulCertificateStore
from billowin.router import certs
from billowin.router.reload import MARKER
from billowin.stack.tools import system_binary
from tests.fakes import FakeAuthority, InMemoryKV
from tests.unit.test_certs import RecordingDns

HAPROXY = str(system_binary("haproxy") or "haproxy")


def issued(*names: list[str]) -> tuple[Certificates, ConsulCertificateStore]:
    kv = InMemoryKV()
    store = ConsulCertificateStore(kv)
    solvers = {"http-01": Http01Responder(kv), "dns-01": RecordingDns()}
    service = Certificates(store, FakeAuthority(), solvers)  # type: ignore[dict-item]
    for group in names:
        assert service.issue(group).status == "valid"
    return service, store


def now() -> datetime:
    return datetime.now(UTC)


def test_every_stored_certificate_is_written_with_its_key_and_listed(tmp_path: Path) -> None:
    _, store = issued(["shop.localhost"], ["www.shop.test", "shop.test"], ["*.localhost"])
    served = certs.served_certificates(store, now())
    assert [s.cert_id for s in served] == ["_wildcard.localhost", "shop.localhost", "www.shop.test"]
    directory = tmp_path / "certs"
    assert certs.sync(directory, served) is True
    assert directory.stat().st_mode & 0o777 == 0o700
    for s in served:
        pem = directory / f"{s.cert_id}.pem"
        assert pem.stat().st_mode & 0o777 == 0o600
        text = pem.read_text()
        pair = store.key_pair(s.cert_id)
        assert pair is not None and pair.chain_pem.strip() in text and pair.key_pem.strip() in text
    listed = (directory / certs.CRT_LIST).read_text().splitlines()
    # Each certificate answers only for the names it is stored for (its SNI filters).
    assert listed == [f"{directory / f'{s.cert_id}.pem'} {' '.join(s.names)}" for s in served]
    assert listed[1] == f"{directory}/shop.localhost.pem shop.localhost"
    hosts = (directory / certs.HTTPS_HOSTS).read_text().splitlines()
    assert hosts == ["*.localhost 1", "shop.localhost 1", "www.shop.test 1", "shop.test 1"]
    default = x509.load_pem_x509_certificate((directory / certs.DEFAULT).read_bytes())
    assert "billowin default" in default.subject.rfc4514_string()
    assert (directory / certs.DEFAULT).stat().st_mode & 0o777 == 0o600


def test_nothing_changes_when_nothing_did_and_a_removed_certificate_goes(tmp_path: Path) -> None:
    service, store = issued(["shop.localhost"], ["blog.localhost"])
    directory = tmp_path / "certs"
    assert certs.sync(directory, certs.served_certificates(store, now())) is True
    default = (directory / certs.DEFAULT).read_bytes()
    assert certs.sync(directory, certs.served_certificates(store, now())) is False, "no reload for nothing"
    store.delete("blog.localhost")
    assert certs.sync(directory, certs.served_certificates(store, now())) is True
    assert not (directory / "blog.localhost.pem").exists()
    assert "blog.localhost" not in (directory / certs.HTTPS_HOSTS).read_text()
    assert (directory / certs.DEFAULT).read_bytes() == default, "the default certificate is made once"
    service.issue(["shop.localhost"])  # renewed: a new chain and key
    assert certs.sync(directory, certs.served_certificates(store, now())) is True


def test_an_expired_certificate_or_one_without_a_key_is_not_served(tmp_path: Path) -> None:
    _, store = issued(["shop.localhost"], ["blog.localhost"])
    record = store.get("blog.localhost")
    assert record is not None and record.not_after is not None
    later = record.not_after + timedelta(seconds=1)
    assert certs.served_certificates(store, later) == []
    store.save(replace(record, id="new.localhost", names=("new.localhost",)))  # a record, no chain yet
    served = certs.served_certificates(store, now())
    assert [s.cert_id for s in served] == ["blog.localhost", "shop.localhost"]


def test_a_failed_renewal_keeps_serving_the_previous_certificate(tmp_path: Path) -> None:
    _, store = issued(["shop.localhost"])
    record = store.get("shop.localhost")
    assert record is not None
    store.save(replace(record, status="failed", last_error="the CA refused"))
    assert [s.cert_id for s in certs.served_certificates(store, now())] == ["shop.localhost"]


def test_haproxy_takes_the_files_with_no_certificate_yet_and_with_some(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""{MARKER}
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend http
    bind 127.0.0.1:18443 ssl crt {directory}/default.pem crt-list {directory}/crt-list alpn h2,http/1.1
    acl https_host var(txn.host),map_str({directory}/https-hosts.map) -m found
    acl https_host var(txn.host),regsub(^[^.]+,*),map_str({directory}/https-hosts.map) -m found
    http-request set-var(txn.https) bool(true) if !{{ ssl_fc }} https_host
    default_backend app_a
backend app_a
    server s1 127.0.0.1:9
""")
    check = [HAPROXY, "-c", "-q", "-f", str(config)]
    assert certs.sync(directory, []) is True
    assert subprocess.run(check, capture_output=True, check=False).returncode == 0
    _, store = issued(["shop.localhost"], ["*.localhost"])
    certs.sync(directory, certs.served_certificates(store, now()))
    result = subprocess.run(check, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
