"""HTTP-01: the answers the CA fetches from ``http://<name>/.well-known/acme-challenge/<token>``.

The router sends that path, for every host it is asked for, to the API (the ``billowin_api``
backend of ``billowin/router/haproxy.cfg.ctmpl``), whose route
(``billowin/api/routes/acme.py``) answers from Consul KV::

    billowin/acme-challenges/<token>    the key authorization

So whichever API process (or node) the CA reaches, the answer is there. Each order's answers
are held by one Consul session with a TTL and ``behavior = delete``: ``cleanup`` destroys it
(which deletes them), and if the API dies mid-order Consul deletes them by itself once the
TTL runs out. Tokens are checked strictly (RFC 8555 8.3: base64url, at least 128 bits) before
they become a key, and nothing else is ever served from here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Sequence

from billowin.errors import BillowinError, InvalidInput
from billowin.ports import Coordinator, PendingChallenge

log = logging.getLogger(__name__)

PREFIX = "billowin/acme-challenges"
# base64url without padding; 128 bits are 22 characters. Let's Encrypt's are 43.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")
# What a key authorization is: "<token>.<base64url SHA-256 thumbprint of the account key>".
KEY_AUTHORIZATION = re.compile(r"^[A-Za-z0-9_-]{22,128}\.[A-Za-z0-9_-]{43}$")
TTL = 600  # seconds the answers outlive a crashed API at most (Consul may take up to twice that)


def is_token(value: object) -> bool:
    return isinstance(value, str) and TOKEN.fullmatch(value) is not None


def check_token(value: object) -> str:
    if not is_token(value):
        raise InvalidInput("not an ACME challenge token", hint="A token is 22 to 128 base64url characters.")
    assert isinstance(value, str)
    return value


class Http01Responder:
    """The HTTP-01 ``ChallengeSolver``, and what the API's challenge route reads."""

    kind = "http-01"

    def __init__(self, kv: Coordinator, *, ttl: int = TTL) -> None:
        self.kv = kv
        self.ttl = ttl
        self._lock = threading.Lock()
        self._sessions: dict[str, str] = {}  # token -> the session holding its answer

    @staticmethod
    def key(token: str) -> str:
        return f"{PREFIX}/{check_token(token)}"

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        for challenge in challenges:  # every value checked before anything is written
            check_token(challenge.token)
            if not KEY_AUTHORIZATION.fullmatch(challenge.key_authorization) or not (
                challenge.key_authorization.startswith(challenge.token + ".")
            ):
                raise InvalidInput("a key authorization that does not belong to its token")
        if not challenges:
            return
        session = self.kv.session_create("billowin-acme-http01", ttl=self.ttl)
        with self._lock:
            for challenge in challenges:
                self._sessions[challenge.token] = session
        for challenge in challenges:
            answer = challenge.key_authorization.encode()
            if not self.kv.kv_acquire(self.key(challenge.token), session, answer):
                self.cleanup(challenges)
                raise InvalidInput(f"the ACME token {challenge.token} is already being answered")

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        with self._lock:
            sessions = {self._sessions.pop(c.token) for c in challenges if c.token in self._sessions}
        for session in sessions:
            try:
                self.kv.session_destroy(session)  # deletes the answers it holds
            except BillowinError as exc:
                log.warning("HTTP-01 answers left for Consul to expire (%s)", exc.message)

    def answer(self, token: str) -> str | None:
        """The key authorization to serve for ``token``; None when nothing is pending for it."""
        _, value = self.kv.kv_get(self.key(token))
        if not value:
            return None
        with contextlib.suppress(UnicodeDecodeError):
            text = value.decode("ascii")
            if KEY_AUTHORIZATION.fullmatch(text):
                return text
        return None
