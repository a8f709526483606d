"""An ACME certificate authority (Let's Encrypt, or pebble in the tests), through certbot's ``acme``.

Why this client: ``acme`` is the protocol library of certbot, maintained by the EFF with Let's
Encrypt and released with every certbot. It runs in-process (no subprocess to start, no
output to parse, no files on disk: keys stay in memory until they reach the store), speaks
RFC 8555 with External Account Binding, and raises typed errors carrying the CA's problem
documents, which this module translates once into ``billowin.errors``. Debian's ``lego`` would
be a Go binary driven by command lines, its outcome read from exit codes and text, and its
account and keys kept in its own directory, outside the cluster's store. The protocol is never
written by hand here: ``ClientV2`` signs, nonces, polls and finalizes.

``AcmeIssuer`` implements the ``CertificateAuthority`` port:

- ``register``: a new account, its key an ECDSA P-256 JWK (ES256), with the e-mail and, when
  ``eab_kid`` is given, External Account Binding (ZeroSSL, Google, in-house CAs).
- ``order``: new order → for each pending authorization one challenge (``dns-01`` for a
  wildcard, else ``http-01``, else ``dns-01``), presented by the solver of that kind, answered,
  polled until valid → finalize with the CSR → the chain; the solvers' answers are taken down
  whatever happens.

The CA's server certificate is checked against ``BILLOWIN_ACME_CA_BUNDLE`` when set (pebble's
own CA in the tests), otherwise against the system's trust store. The library logs requests at
DEBUG level; they carry the CSR and public keys, never a private key.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests
from acme import challenges, client, crypto_util, messages
from acme import errors as acme_errors
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import errors as jose_errors
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from billowin.errors import AccountUnknown, CertificateError, ChallengeFailed, ConfigError, Unreachable
from billowin.ports import AcmeAccount, ChallengeSolver, PendingChallenge

log = logging.getLogger(__name__)
SYSTEM = "acme"
USER_AGENT = "billowin"
T = TypeVar("T")

# What to do about each kind of problem the CA reports (RFC 8555 6.7), in plain words.
HINTS = {
    "connection": "Point the name at this router (an A or AAAA record), so the CA reaches port 80 there.",
    "dns": "Check the name's DNS records: the CA could not look them up.",
    "unknownHost": "Check the name's DNS records: the CA could not look them up.",
    "incorrectResponse": "Something other than Billowin answered the CA: check that the name's "
    "port 80 reaches this router, and its DNS the server Billowin updates.",
    "unauthorized": "The CA saw another answer than Billowin's: check that the name's port 80 reaches "
    "this router (not a proxy or an old address), and for DNS-01 that nobody else sets its TXT record.",
    "caa": "A CAA record of the domain forbids this CA: allow it there, or use another CA.",
    "rejectedIdentifier": "The CA will not issue for this name (a reserved or public-suffix name?).",
    "rateLimited": "The CA's rate limit was reached: Billowin waits longer before each new try.",
    "externalAccountRequired": "This CA wants External Account Binding: set BILLOWIN_ACME_EAB_KID "
    "and BILLOWIN_ACME_EAB_HMAC_KEY from the CA's account page.",
    "invalidContact": "Set BILLOWIN_ACME_EMAIL to an address the CA accepts.",
    "invalidEmail": "Set BILLOWIN_ACME_EMAIL to an address the CA accepts.",
    "unsupportedContact": "Set BILLOWIN_ACME_EMAIL to an address the CA accepts.",
    "tls": "The CA hit a TLS error reaching the name: check what answers on its ports 80 and 443.",
    "serverInternal": "The CA had an internal error; it usually passes.",
}


# What the CA saw, in a few plain words, for the problems a challenge ends with.
PLAIN = {
    "connection": "the CA could not connect to it",
    "dns": "the CA could not look it up in DNS",
    "unknownHost": "the CA could not look it up in DNS",
    "incorrectResponse": "the CA got a wrong answer",
    "unauthorized": "the CA got a wrong answer, or none",
    "caa": "a CAA record forbids this CA",
    "rejectedIdentifier": "the CA will not issue for it",
    "tls": "the CA hit a TLS error",
    "rateLimited": "the CA's rate limit was reached",
}


def _trim(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _problem(error: messages.Error) -> tuple[str, str]:
    """The CA's problem document as (what happened, what to do)."""
    code = error.code or ""
    detail = error.detail or error.description or code or "no reason given"
    parts = [_trim(detail)]
    for sub in error.subproblems or ():
        name = sub.identifier.value if sub.identifier is not None else ""
        parts.append(_trim(f"{name}: {sub.detail or sub.code}"))
    return "; ".join(parts), HINTS.get(code, "")


def _new_account_key() -> JWKEC:
    return JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


class AcmeIssuer:
    """The ``CertificateAuthority`` port on one ACME directory."""

    def __init__(self, directory_url: str, *, ca_bundle: Path | None = None, timeout: float = 120) -> None:
        self.directory_url = directory_url
        self.ca_bundle = ca_bundle
        self.timeout = timeout

    # -- errors: translated once, here ----------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except acme_errors.ValidationError as exc:
            raise self._validation_failed(exc) from exc
        except acme_errors.TimeoutError as exc:
            raise CertificateError(
                f"{what}: the CA did not finish within {self.timeout:.0f} s",
                hint="The CA may be slow or the challenge never answered; Billowin tries again later.",
            ) from exc
        except acme_errors.IssuanceError as exc:
            message, hint = _problem(exc.error)
            raise CertificateError(f"{what}: the CA refused to issue: {message}", hint=hint or None) from exc
        except messages.Error as exc:
            message, hint = _problem(exc)
            if exc.code == "accountDoesNotExist":
                raise AccountUnknown(f"{what}: the CA does not know Billowin's account: {message}") from exc
            raise CertificateError(f"{what}: the CA refused: {message}", hint=hint or None) from exc
        except requests.exceptions.SSLError as exc:
            raise CertificateError(
                f"{what}: the CA's HTTPS certificate did not verify ({self.directory_url})",
                hint="Set BILLOWIN_ACME_CA_BUNDLE to the CA bundle that signs the ACME server's "
                "certificate (only for a private or test CA), or fix BILLOWIN_ACME_DIRECTORY_URL.",
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise Unreachable(
                SYSTEM,
                self.directory_url,
                hint="Check BILLOWIN_ACME_DIRECTORY_URL and that this machine reaches it (proxy, firewall).",
            ) from exc
        except requests.RequestException as exc:
            raise CertificateError(f"{what}: {_trim(str(exc))}") from exc
        except (acme_errors.Error, jose_errors.Error) as exc:
            raise CertificateError(f"{what}: {_trim(str(exc)) or type(exc).__name__}") from exc

    def _validation_failed(self, exc: acme_errors.ValidationError) -> ChallengeFailed:
        reasons, hints, names = [], [], []
        for authzr in exc.failed_authzrs:
            name = authzr.body.identifier.value
            names.append(name)
            for challb in authzr.body.challenges:
                if challb.error is None:
                    continue
                message, hint = _problem(challb.error)
                plain = PLAIN.get(challb.error.code or "", "the CA refused it")
                reasons.append(f"{name}: {challb.chall.typ} check failed, {plain} ({_trim(message, 200)})")
                if hint and hint not in hints:
                    hints.append(hint)
        return ChallengeFailed(
            "; ".join(reasons) or "the CA could not validate " + ", ".join(names),
            names=tuple(names),
            hint=" ".join(hints) or None,
        )

    # -- the protocol, through ClientV2 ---------------------------------------------------------
    @contextlib.contextmanager
    def _client(self, key: JWK, account_uri: str | None = None) -> Any:
        # requests takes a CA bundle's path where ``verify_ssl`` says bool.
        verify: Any = str(self.ca_bundle) if self.ca_bundle else True
        net = client.ClientNetwork(
            key, alg=ES256, verify_ssl=verify, user_agent=USER_AGENT, timeout=int(min(self.timeout, 60))
        )
        try:
            if account_uri is not None:
                net.account = messages.RegistrationResource(uri=account_uri, body=messages.Registration())
            directory = self._call("directory", client.ClientV2.get_directory, self.directory_url, net)
            yield client.ClientV2(directory, net)
        finally:
            net.session.close()

    def register(self, email: str, *, eab_kid: str = "", eab_hmac_key: str = "") -> AcmeAccount:
        key = _new_account_key()
        with self._client(key) as acme:
            eab = None
            if eab_kid:
                try:
                    eab = messages.ExternalAccountBinding.from_data(
                        account_public_key=key.public_key(),
                        kid=eab_kid,
                        hmac_key=eab_hmac_key,
                        directory=acme.directory,
                    )
                except (ValueError, TypeError) as exc:  # not base64url
                    raise ConfigError(
                        "BILLOWIN_ACME_EAB_HMAC_KEY is not a base64url key",
                        hint="Copy the HMAC key exactly as the CA shows it.",
                    ) from exc
            registration = messages.NewRegistration.from_data(
                email=email or None, terms_of_service_agreed=True, external_account_binding=eab
            )
            regr = self._call("account registration", acme.new_account, registration)
        log.info("registered an ACME account with %s", self.directory_url)
        return AcmeAccount(self.directory_url, str(regr.uri), key.json_dumps(), email)

    def order(
        self,
        account: AcmeAccount,
        names: Sequence[str],
        key_pem: bytes,
        solvers: Mapping[str, ChallengeSolver],
    ) -> str:
        key = JWK.json_loads(account.key_json)
        csr = crypto_util.make_csr(key_pem, list(names))
        with self._client(key, account.uri) as acme:
            orderr = self._call("new order", acme.new_order, csr)
            chosen = [self._choose(authzr, key, solvers) for authzr in orderr.authorizations]
            pending = [c for c in chosen if c is not None]
            presented: list[tuple[ChallengeSolver, list[PendingChallenge]]] = []
            try:
                for kind, solver in solvers.items():
                    mine = [p for p, _ in pending if p.kind == kind]
                    if mine:
                        presented.append((solver, mine))
                        solver.present(mine)
                for challenge, challb in pending:
                    response = challb.chall.response(key)
                    self._call(f"answer to {challenge.name}", acme.answer_challenge, challb, response)
                deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.timeout)
                done = self._call("validation", acme.poll_and_finalize, orderr, deadline)
            finally:
                for solver, mine in presented:
                    solver.cleanup(mine)
        chain: str = done.fullchain_pem
        return chain

    def _choose(
        self, authzr: messages.AuthorizationResource, key: JWK, solvers: Mapping[str, ChallengeSolver]
    ) -> tuple[PendingChallenge, messages.ChallengeBody] | None:
        """The challenge to solve for one authorization; None when the CA already holds it valid."""
        body = authzr.body
        name = body.identifier.value
        if body.status == messages.STATUS_VALID:
            return None
        offered = {
            c.chall.typ: c
            for c in body.challenges
            if isinstance(c.chall, challenges.KeyAuthorizationChallenge)
        }
        order = ("dns-01",) if body.wildcard else ("http-01", "dns-01")
        for kind in order:
            if kind in offered and kind in solvers:
                challb = offered[kind]
                chall = challb.chall
                assert isinstance(chall, challenges.KeyAuthorizationChallenge)
                key_authorization = chall.key_authorization(key)
                dns01 = challenges.DNS01(token=chall.token)
                return (
                    PendingChallenge(
                        kind=kind,
                        name=name,
                        token=chall.encode("token"),
                        key_authorization=key_authorization,
                        txt_name=dns01.validation_domain_name(name),
                        txt_value=dns01.validation(key),
                    ),
                    challb,
                )
        wanted = " or ".join(order)
        raise CertificateError(
            f"{'*.' if body.wildcard else ''}{name}: no way to answer the CA's challenge ({wanted} needed, "
            f"the CA offers {', '.join(sorted(offered)) or 'none'})",
            hint="A wildcard needs DNS-01: set BILLOWIN_ACME_DNS_SERVER, BILLOWIN_ACME_DNS_ZONE and the "
            "TSIG key settings (README, 'HTTPS settings')."
            if body.wildcard
            else None,
        )
