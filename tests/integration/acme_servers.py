"""A real ACME CA (Debian's pebble) and a real authoritative DNS server (Debian's knot) for tests.

Both run as ``ManagedProcess`` children on free ports, log to their state directory and are
stopped cleanly. What each test trusts stays inside the test:

- pebble serves its ACME API over HTTPS with a throwaway server certificate made here
  (``tls_bundle`` is the CA that signs it: the ``BILLOWIN_ACME_CA_BUNDLE`` of the tests), and
  signs certificates with a root it makes at each start (``root_pem()``, from its management
  port's ``/roots/0``). Neither is ever added to a system trust store.
- knot serves one zone, with ``@`` and ``*`` at 127.0.0.1, and takes RFC 2136 updates of TXT
  records signed with the TSIG key made here. Pebble resolves every name through it
  (``-dnsserver``), so ``<app>.<zone>`` reaches the router on this machine, and a name in no
  zone of knot's does not resolve at all.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
from acme import client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from josepy.jwa import ES256
from josepy.jwk import JWK
from pydantic import SecretStr

from billowin.ports import AcmeAccount
from billowin.settings import Settings
from billowin.stack.process import ManagedProcess, free_port
from billowin.system import System

TSIG_KEY = "billowin-acme."


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signs for 127.0.0.1 and localhost (pebble's HTTPS).

    Returns (ca bundle, server certificate, server key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billowin test: pebble's HTTPS")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle, cert_path, key_path = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    bundle.write_bytes(_pem(ca))
    cert_path.write_bytes(_pem(server))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return bundle, cert_path, key_path


# -- knot ---------------------------------------------------------------------------------------
@dataclass
class Knot:
    process: ManagedProcess
    port: int
    zone: str  # with its final dot
    tsig_secret: str  # base64
    tsig_key: str = TSIG_KEY

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def query(self, name: str, rdtype: str) -> tuple[str, list[str]]:
        """(rcode, answers as text) of a non-recursive query for ``name``."""
        query = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=2)
        values = [rdata.to_text() for rrset in answer.answer for rdata in rrset]
        return dns.rcode.to_text(answer.rcode()), values


def knot_server(knotd: Path, directory: Path, zone: str, *, more_zones: tuple[str, ...] = ()) -> Knot:
    """knotd for ``zone`` (``localhost``: the session stack's domain) on a free port; not started.

    ``more_zones`` are served the same way (every name at 127.0.0.1), as a user's own domains
    pointed at this router; only ``zone`` takes dynamic updates."""
    directory.mkdir(parents=True, exist_ok=True)
    zone = zone.rstrip(".") + "."
    port = free_port()
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    extra = ""
    for name in (zone, *(z.rstrip(".") + "." for z in more_zones)):
        file = "zone.db" if name == zone else f"{name}db"
        (directory / file).write_text(
            f"$ORIGIN {name}\n$TTL 60\n"
            f"@ SOA ns.{name} hostmaster.{name} 1 60 60 3600 60\n"
            f"@ NS ns.{name}\nns A 127.0.0.1\n@ A 127.0.0.1\n* A 127.0.0.1\n"
        )
        if name != zone:
            extra += f'  - domain: {name}\n    storage: "{directory}"\n    file: "{file}"\n'

    config = directory / "knot.conf"
    config.write_text(f"""
server:
    rundir: "{directory}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{directory}"
control:
    listen: "{directory}/knot.sock"
key:
  - id: {TSIG_KEY}
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: acme_updates
    key: {TSIG_KEY}
    action: update
    update-type: TXT
zone:
  - domain: {zone}
    storage: "{directory}"
    file: "zone.db"
    acl: acme_updates
    zonefile-sync: -1
    zonefile-load: difference-no-serial
    journal-content: all
{extra}""")
    config.chmod(0o600)  # it holds the TSIG secret
    knot = Knot(
        ManagedProcess(
            name="knotd",
            argv=[str(knotd), "-c", str(config)],
            run_dir=directory,
            ready=lambda: _answers_soa(port, zone),
        ),
        port,
        zone,
        secret,
    )
    return knot


def _answers_soa(port: int, zone: str) -> bool:
    try:
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
    except (OSError, dns.exception.DNSException):
        return False
    return answer.rcode() == dns.rcode.NOERROR and bool(answer.answer)


# -- pebble ---------------------------------------------------------------------------------------
@dataclass
class Pebble:
    process: ManagedProcess
    port: int
    management_port: int
    tls_bundle: Path  # trusted for pebble's HTTPS API only, inside the tests

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def client(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.tls_bundle)), timeout=10)

    def orders(self, account: AcmeAccount) -> list[str]:
        """Every order pebble holds for ``account`` (RFC 8555 7.1.2.1): what the CA was asked."""
        key = JWK.json_loads(account.key_json)
        net = client.ClientNetwork(key, alg=ES256, verify_ssl=str(self.tls_bundle))  # type: ignore[arg-type]
        try:
            net.account = messages.RegistrationResource(uri=account.uri, body=messages.Registration())
            acme = client.ClientV2(client.ClientV2.get_directory(self.directory_url, net), net)
            listing = acme._post_as_get(acme._post_as_get(account.uri).json()["orders"]).json()
        finally:
            net.session.close()
        return list(listing.get("orders") or [])

    def root_pem(self) -> bytes:
        """The root pebble signs with (made at its start): what issued chains must verify against."""
        with self.client() as http:
            resp = http.get(f"https://127.0.0.1:{self.management_port}/roots/0")
        resp.raise_for_status()
        return resp.content


def pebble_server(
    pebble: Path,
    directory: Path,
    *,
    http_port: int,
    dns_server: str,
    eab_keys: dict[str, str] | None = None,
    validity: int | None = None,
) -> Pebble:
    """pebble on free ports, validating HTTP-01 on ``http_port`` and resolving names with ``dns_server``;
    with ``eab_keys`` (kid -> base64url HMAC key), External Account Binding is required; with
    ``validity``, its certificates last that many seconds (instead of five years)."""
    directory.mkdir(parents=True, exist_ok=True)
    bundle, cert, key = make_tls_files(directory / "tls")
    port, management = free_port(), free_port()
    config = directory / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,  # the router: HTTP-01 goes through the real HAProxy
                    "tlsPort": free_port(),  # TLS-ALPN-01, unused
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": bool(eab_keys),
                    **({"externalAccountMACKeys": eab_keys} if eab_keys else {}),
                    **({"certificateValidityPeriod": validity} if validity else {}),
                }
            }
        )
    )
    context = ssl.create_default_context(cafile=str(bundle))

    def ready() -> bool:
        try:
            return httpx.get(f"https://127.0.0.1:{port}/dir", verify=context, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    process = ManagedProcess(
        name="pebble",
        argv=[str(pebble), "-config", str(config), "-dnsserver", dns_server],
        run_dir=directory,
        ready=ready,
        env={
            "PEBBLE_VA_NOSLEEP": "1",  # validate at once
            "PEBBLE_WFE_NONCEREJECT": "0",  # no deliberate bad nonces
            "PEBBLE_AUTHZREUSE": "0",  # every order really validates its names
            "PEBBLE_WFE_ORDERS_PER_PAGE": "1000",  # orders() reads one page
        },
    )
    return Pebble(process, port, management, bundle)


@contextlib.contextmanager
def serving(process: ManagedProcess, timeout: float = 20) -> Iterator[None]:
    """``process`` started and ready for the length of the block, then stopped."""
    process.start()
    try:
        process.wait_ready(timeout)
        yield
    finally:
        process.stop()


def acme_settings(pebble: Pebble, knot: Knot) -> dict[str, Any]:
    """``Settings`` fields for ordering from ``pebble``, with DNS-01 through ``knot``."""
    return {
        "acme_directory_url": pebble.directory_url,
        "acme_ca_bundle": pebble.tls_bundle,
        "acme_email": "ops@example.com",
        "acme_timeout": 60.0,
        "acme_dns_server": knot.address,
        "acme_dns_zone": knot.zone,
        "acme_dns_tsig_key": TSIG_KEY,
        "acme_dns_tsig_secret": SecretStr(knot.tsig_secret),
    }


def forget_certificates(settings: Settings) -> None:
    """Delete every stored certificate: the session's router serves whatever the store holds, and a
    leftover from a module's own pebble (a CA no other module trusts) would redirect later modules'
    plain HTTP to it."""
    store = System(settings).cert_store
    for record in store.all():
        store.delete(record.id)
