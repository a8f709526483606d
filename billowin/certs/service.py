"""Ordering certificates and keeping what happened: ``Certificates.issue(names)``.

``issue`` takes the names one certificate covers (``<app>.<domain>``, a custom domain, or
``*.<domain>``, which needs DNS-01), and:

1. checks them (``billowin.names.check_certificate_name``) and that a solver exists for each
   (a wildcard without DNS-01 settings is a ``ConfigError``, and nothing is recorded);
2. answers the stored failure as it is, sending nothing to the CA, while its ``next_attempt``
   has not come (``force=True`` skips that, for an admin's explicit retry): so no caller, a loop,
   a retried API call or ``apps:create``, can make Billowin hammer the CA;
3. records ``pending``, makes a fresh ECDSA P-256 key (every renewal gets a new one), and orders
   through the ``CertificateAuthority`` with the ACME account from the store (registered, and
   stored, on first use or when the directory changed; registered again once if the CA forgot it);
4. on success, checks the chain (it covers the names, its leaf matches the key) and stores it,
   the key and a ``valid`` record in one write; on failure, a ``failed`` record with the plain
   reason and hint of the error, the count of failures in a row, and the next attempt after an
   exponential back-off (``BILLOWIN_ACME_RETRY_MIN``, doubling, at most ``BILLOWIN_ACME_RETRY_MAX``).
   A failed renewal keeps the previous chain and key in place.

``check_upload`` checks a user's own certificate (``certs:add``) before it is stored.

``due_for_renewal`` says when a certificate has a third of its lifetime left (Let's Encrypt's
90 days: at 60); ``needs_attempt`` adds the back-off, for the scheduler that will call ``issue``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from billowin.errors import AccountUnknown, BillowinError, CertificateError, ConfigError, InvalidInput
from billowin.names import WILDCARD_PREFIX, certificate_id, check_certificate_name
from billowin.ports import (
    AcmeAccount,
    CertificateAuthority,
    CertificateRecord,
    CertificateStore,
    ChallengeSolver,
    KeyPair,
)

log = logging.getLogger(__name__)

PENDING, VALID, FAILED = "pending", "valid", "failed"
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def backoff(failures: int, *, first: float, longest: float) -> timedelta:
    """The wait after ``failures`` failures in a row: ``first``, then doubling, at most ``longest``."""
    return timedelta(seconds=min(longest, first * 2 ** min(max(failures, 1) - 1, 40)))


def due_for_renewal(record: CertificateRecord, now: datetime) -> bool:
    """Whether ``record`` needs a new certificate: it has none, or a third of its lifetime is left."""
    if record.not_before is None or record.not_after is None:
        return True
    lifetime = record.not_after - record.not_before
    return now >= record.not_after - lifetime / 3


def needs_attempt(record: CertificateRecord, now: datetime) -> bool:
    """Whether a scheduler should call ``issue`` for ``record`` now: Billowin orders it (not an
    uploaded one), it is due, and no back-off holds it."""
    if record.source != "acme" or not due_for_renewal(record, now):
        return False
    return record.next_attempt is None or record.next_attempt <= now


def new_private_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


def inspect_chain(chain_pem: str, key_pem: str, names: Sequence[str]) -> x509.Certificate:
    """The chain's leaf, once it is known to cover ``names`` and to belong to ``key_pem``."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        raise CertificateError("the CA sent a chain that is not PEM certificates") from exc
    leaf = chain[0]
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise CertificateError("the CA's certificate is not for the key Billowin sent")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        covered = set()
    if missing := [n for n in names if n not in covered]:
        raise CertificateError(f"the CA's certificate does not cover {', '.join(missing)}")
    return leaf


class Certificates:
    """Orders certificates from the CA and keeps them, and every failure, in the store."""

    def __init__(
        self,
        store: CertificateStore,
        authority: CertificateAuthority,
        solvers: Mapping[str, ChallengeSolver],
        *,
        email: str = "",
        eab_kid: str = "",
        eab_hmac_key: SecretStr | None = None,
        retry_min: float = 300,
        retry_max: float = 86400,
        clock: Clock = utcnow,
    ) -> None:
        self.store = store
        self.authority = authority
        self.solvers = dict(solvers)
        self.email = email
        self.eab_kid = eab_kid
        self.eab_hmac_key = eab_hmac_key
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.clock = clock

    def get(self, cert_id: str) -> CertificateRecord | None:
        return self.store.get(cert_id)

    def all(self) -> list[CertificateRecord]:
        return self.store.all()

    def issue(self, names: Sequence[str], *, force: bool = False) -> CertificateRecord:
        """Order (or renew) the certificate for ``names``; the record of how it went."""
        wanted = self._names(names)
        cert_id = certificate_id(wanted)
        current = self.store.get(cert_id)
        now = self.clock()
        if (
            not force
            and current is not None
            and current.status == FAILED
            and current.names == wanted
            and current.next_attempt is not None
            and current.next_attempt > now
        ):
            log.info("certificate %s: backing off until %s", cert_id, current.next_attempt.isoformat())
            return current
        if current is None:
            base = CertificateRecord(cert_id, wanted)
        elif current.names != wanted:  # another set of names: a new request, no back-off carried over
            base = replace(current, failures=0, next_attempt=None, failing_since=None, last_error="", hint="")
        else:
            base = current  # the dates, issuer and serial still describe the chain in the store
        pending = replace(base, names=wanted, status=PENDING, source="acme", updated_at=now)
        self.store.save(pending)
        key_pem = new_private_key()
        try:
            chain = self._order(wanted, key_pem)
            leaf = inspect_chain(chain, key_pem, wanted)
        except BillowinError as exc:
            return self._failed(pending, exc.message, exc.hint)
        except Exception as exc:  # a bug, or a library error nobody planned for: recorded, then raised
            self._failed(pending, f"unexpected error ({type(exc).__name__})", "")
            raise
        issued = replace(
            pending,
            status=VALID,
            issuer=leaf.issuer.rfc4514_string(),
            serial=format(leaf.serial_number, "x"),
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            last_error="",
            hint="",
            failures=0,
            next_attempt=None,
            failing_since=None,
            updated_at=self.clock(),
        )
        self.store.save(issued, KeyPair(chain, key_pem))
        log.info("certificate %s issued by %s, valid until %s", cert_id, issued.issuer, issued.not_after)
        return issued

    def _names(self, names: Sequence[str]) -> tuple[str, ...]:
        if isinstance(names, str):
            raise TypeError("issue() takes a list of names, not one string")
        if not names:
            raise InvalidInput("a certificate needs at least one name")
        wanted = tuple(dict.fromkeys(check_certificate_name(n) for n in names))
        if any(n.startswith(WILDCARD_PREFIX) for n in wanted) and "dns-01" not in self.solvers:
            raise ConfigError(
                f"{', '.join(n for n in wanted if n.startswith(WILDCARD_PREFIX))}: a wildcard certificate "
                "needs DNS-01, and no DNS server is configured",
                hint="Set BILLOWIN_ACME_DNS_SERVER, BILLOWIN_ACME_DNS_ZONE, BILLOWIN_ACME_DNS_TSIG_KEY and "
                "BILLOWIN_ACME_DNS_TSIG_SECRET (README, 'HTTPS settings').",
            )
        if not self.solvers:
            raise ConfigError("no way to answer the CA's challenges (neither HTTP-01 nor DNS-01)")
        return wanted

    def _order(self, names: tuple[str, ...], key_pem: str) -> str:
        account = self._account()
        try:
            return self.authority.order(account, names, key_pem.encode(), self.solvers)
        except AccountUnknown:
            log.warning("the CA no longer knows Billowin's account; registering a new one")
            account = self._account(fresh=True)
            return self.authority.order(account, names, key_pem.encode(), self.solvers)

    def _account(self, *, fresh: bool = False) -> AcmeAccount:
        stored = self.store.account()
        if stored is not None and not fresh and stored.directory == self.authority.directory_url:
            return stored
        hmac = self.eab_hmac_key.get_secret_value() if self.eab_hmac_key else ""
        account = self.authority.register(self.email, eab_kid=self.eab_kid, eab_hmac_key=hmac)
        self.store.save_account(account)
        return account

    def _failed(self, pending: CertificateRecord, reason: str, hint: str) -> CertificateRecord:
        now = self.clock()
        failures = pending.failures + 1
        failed = replace(
            pending,
            status=FAILED,
            last_error=reason,
            hint=hint,
            failures=failures,
            next_attempt=now + backoff(failures, first=self.retry_min, longest=self.retry_max),
            failing_since=pending.failing_since or now,
            updated_at=now,
        )
        self.store.save(failed)
        assert failed.next_attempt is not None
        log.warning(
            "certificate %s not issued (failure %d in a row): %s; next attempt at %s",
            failed.id,
            failures,
            reason,
            failed.next_attempt.isoformat(),
        )
        return failed


def covers(pattern: str, name: str) -> bool:
    """Whether a certificate name (``shop.example.com`` or ``*.example.com``) covers host ``name``."""
    if pattern == name:
        return True
    if pattern.startswith(WILDCARD_PREFIX):
        label, _, rest = name.partition(".")
        return bool(label) and rest == pattern.removeprefix(WILDCARD_PREFIX)
    return False


def check_upload(
    chain_pem: str, key_pem: str, names: Sequence[str], now: datetime
) -> tuple[list[CertificateRecord], KeyPair]:
    """A user's own certificate (``certs:add``), checked: one ``uploaded`` record per name of
    ``names`` (the app's) that it covers, and the chain and key as the router will serve them.

    Every problem is an ``InvalidInput`` that says what to pass instead; nothing in one names
    or shows the key.
    """
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        raise InvalidInput(
            "CERT is not a PEM certificate chain",
            hint="Pass the certificate file in PEM ('-----BEGIN CERTIFICATE-----'), leaf first, then "
            "its intermediates.",
        ) from exc
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError as exc:  # a passphrase protects it
        raise InvalidInput(
            "KEY is encrypted", hint="Remove its passphrase first: openssl pkey -in KEY -out KEY.plain"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(
            "KEY is not a PEM private key", hint="Pass the private key file ('-----BEGIN PRIVATE KEY-----')."
        ) from exc
    leaf = chain[0]
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise InvalidInput(
            "KEY does not belong to the certificate",
            hint="Pass the key the certificate was issued for, and the certificate (leaf) first in CERT.",
        )
    if leaf.not_valid_after_utc <= now:
        raise InvalidInput(f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        patterns = [p.lower() for p in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        patterns = []
    covered = [n for n in names if any(covers(p, n) for p in patterns)]
    if not covered:
        raise InvalidInput(
            f"the certificate covers {', '.join(patterns) or 'no host name'}, none of the app's names "
            f"({', '.join(names)})",
            hint="Add the domain to the app first (domains:add), or upload a certificate for one of "
            "its names.",
        )
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)
    records = [
        CertificateRecord(
            certificate_id([n]),
            (n,),
            status=VALID,
            source="uploaded",
            issuer=leaf.issuer.rfc4514_string(),
            serial=format(leaf.serial_number, "x"),
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            updated_at=now,
        )
        for n in covered
    ]
    return records, KeyPair(pem, plain)
