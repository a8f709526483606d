"""DNS-01 by RFC 2136 dynamic updates, signed with TSIG (dnspython): BIND, Knot, PowerDNS…

``Rfc2136Solver`` is the DNS-01 ``ChallengeSolver``. ``present`` sends one signed UPDATE that
adds every ``_acme-challenge.<name>`` TXT value of an order (a wildcard and its base name share
one owner name and get two values), then asks the same server, a plain non-recursive query,
until it answers every value, within ``BILLOWIN_ACME_DNS_TIMEOUT``. ``cleanup`` removes exactly
those values, nothing else at that name. The update goes to the zone's primary over TCP;
secondaries follow by NOTIFY and zone transfer, which the CA may see a moment later.

The TSIG key should be allowed to update TXT records only (Knot: ``acl: update-type: TXT``;
BIND: ``update-policy { grant <key> wildcard *.<zone> TXT; }``). Every name is checked to lie
in ``BILLOWIN_ACME_DNS_ZONE`` and every value to be base64url before anything is sent.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
from pydantic import SecretStr

from billowin.errors import ConfigError, InvalidInput, ServiceError, Unreachable
from billowin.ports import PendingChallenge

log = logging.getLogger(__name__)
SYSTEM = "dns"
TXT_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 digest
HINT_KEY = (
    "Check BILLOWIN_ACME_DNS_TSIG_KEY, BILLOWIN_ACME_DNS_TSIG_SECRET and BILLOWIN_ACME_DNS_TSIG_ALGORITHM "
    "against the key the DNS server knows."
)


def split_server(server: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address → (host, port)."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif server.count(":") == 1:
        host, _, port = server.partition(":")
    else:
        host, port = server, "53"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"BILLOWIN_ACME_DNS_SERVER={server!r} is not host[:port]")
    return host, int(port)


class Rfc2136Solver:
    """The DNS-01 ``ChallengeSolver`` on one primary server and zone."""

    kind = "dns-01"

    def __init__(
        self,
        server: str,
        zone: str,
        *,
        key_name: str,
        secret: SecretStr,
        algorithm: str = "hmac-sha256",
        ttl: int = 60,
        timeout: float = 120,
        query_timeout: float = 5,
    ) -> None:
        self.server = server
        self.host, self.port = split_server(server)
        try:
            self.zone = dns.name.from_text(zone)
            self.key = dns.tsig.Key(dns.name.from_text(key_name), secret.get_secret_value(), algorithm)
        except (dns.exception.DNSException, ValueError) as exc:  # a bad name, base64 or algorithm
            raise ConfigError(f"the DNS-01 settings are not usable: {exc}", hint=HINT_KEY) from exc
        self.ttl = ttl
        self.timeout = timeout
        self.query_timeout = query_timeout

    def _address(self) -> str:
        """The server's address (dnspython wants one, not a name); looked up at each use."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Unreachable(SYSTEM, self.server, hint="Check BILLOWIN_ACME_DNS_SERVER.") from exc
        return str(infos[0][4][0])

    def _owner(self, challenge: PendingChallenge) -> dns.name.Name:
        if not TXT_VALUE.fullmatch(challenge.txt_value):
            raise InvalidInput("a DNS-01 value that is not base64url of a SHA-256 digest")
        try:
            owner = dns.name.from_text(challenge.txt_name)
        except dns.exception.DNSException as exc:
            raise InvalidInput(f"{challenge.txt_name!r} is not a DNS name") from exc
        if not owner.is_subdomain(self.zone) or owner.labels[0] != b"_acme-challenge":
            raise ConfigError(
                f"{challenge.name} is not in the zone {self.zone.to_text()} Billowin updates",
                hint="Set BILLOWIN_ACME_DNS_ZONE to the zone that holds the name, or order the "
                "certificate over HTTP-01 (no wildcard).",
            )
        return owner

    def _rdata(self, value: str) -> dns.rdata.Rdata:
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, f'"{value}"')

    def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        try:
            answer = dns.query.tcp(update, self._address(), timeout=self.query_timeout, port=self.port)
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.message.UnknownTSIGKey) as exc:
            refused = f"{what}: the DNS server refused the TSIG key ({exc})"
            raise ServiceError(SYSTEM, refused, hint=HINT_KEY) from exc
        except dns.tsig.PeerBadTime as exc:
            clock = f"{what}: the DNS server says this machine's clock is off"
            raise ServiceError(SYSTEM, clock, hint="Sync the clock (NTP).") from exc
        except (OSError, dns.exception.Timeout) as exc:
            hint = "Check BILLOWIN_ACME_DNS_SERVER and that this machine reaches it over TCP."
            raise Unreachable(SYSTEM, self.server, hint=hint) from exc
        except dns.exception.DNSException as exc:
            raise ServiceError(SYSTEM, f"{what}: {exc}") from exc
        rcode = answer.rcode()
        if rcode != dns.rcode.NOERROR:
            raise ServiceError(
                SYSTEM,
                f"{what}: the DNS server answered {dns.rcode.to_text(rcode)}",
                hint=(
                    f"Allow the TSIG key to update TXT records in {self.zone.to_text()} (Knot: an acl with "
                    "action: update; BIND: update-policy), and check BILLOWIN_ACME_DNS_ZONE."
                ),
            )

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        owners = [(self._owner(c), c.txt_value) for c in challenges]
        if not owners:
            return
        update = dns.update.UpdateMessage(self.zone, keyring=self.key)
        for owner, value in owners:
            update.add(owner, self.ttl, self._rdata(value))
        self._send(update, f"adding the DNS-01 record of {', '.join(c.name for c in challenges)}")
        self._wait_visible(owners)

    def _wait_visible(self, owners: list[tuple[dns.name.Name, str]]) -> None:
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        missing = owners
        while True:
            missing = [(o, v) for o, v in missing if v not in self._values(o)]
            if not missing:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise ServiceError(
            SYSTEM,
            f"{self.server} did not answer the DNS-01 record of {missing[0][0].to_text()} "
            f"within {self.timeout:.0f} s of the update",
            hint="Check that BILLOWIN_ACME_DNS_SERVER is authoritative for BILLOWIN_ACME_DNS_ZONE.",
        )

    def _values(self, owner: dns.name.Name) -> set[str]:
        query = dns.message.make_query(owner, dns.rdatatype.TXT)
        query.flags &= ~dns.flags.RD  # ask the server itself, never its resolver
        try:
            answer = dns.query.udp(query, self._address(), timeout=self.query_timeout, port=self.port)
        except (OSError, dns.exception.DNSException):
            return set()  # asked again until the deadline
        found = set()
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    found.add(b"".join(rdata.strings).decode("ascii", "replace"))
        return found

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        try:
            owners = [(self._owner(c), c.txt_value) for c in challenges]
            if not owners:
                return
            update = dns.update.UpdateMessage(self.zone, keyring=self.key)
            for owner, value in owners:
                update.delete(owner, self._rdata(value))
            self._send(update, "removing DNS-01 records")
        except (ServiceError, InvalidInput, ConfigError) as exc:
            log.warning("DNS-01 records left behind (harmless, remove them by hand): %s", exc.message)
