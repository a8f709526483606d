"""Webhook verification and parsing: GitHub (push, workflow_run, check_suite, ping) and Travis CI.

Every source verifies first, then normalizes into one domain event,
``CodeEvent``: "this SHA of this repository's branch was pushed" or
"CI finished for this SHA". The pipeline only ever sees ``CodeEvent``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from billowin.errors import InvalidInput

GITHUB_EVENTS = {"push", "workflow_run", "check_suite", "ping"}


@dataclass(frozen=True)
class CodeEvent:
    kind: Literal["push", "ci"]
    source: str  # push | workflow_run | check_suite | travis
    repository: str  # owner/name
    branch: str | None
    sha: str
    ci_passed: bool | None = None  # for kind == "ci"
    workflow: str | None = None
    delivery: str | None = None


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_github(secrets: list[bytes], body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256`` over the raw body, compared in constant time, against any secret."""
    if not header or not header.startswith("sha256="):
        return False
    return any(hmac.compare_digest(github_signature(s, body), header) for s in secrets)


def _branch(ref: str | None) -> str | None:
    if ref and ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return None


def parse_github(event: str, body: bytes, delivery: str | None) -> CodeEvent | None:
    """Normalize one verified GitHub delivery; ``None`` for events that deploy nothing."""
    if event not in GITHUB_EVENTS:
        raise InvalidInput(f"unsupported GitHub event {event!r}", hint=f"Send only {sorted(GITHUB_EVENTS)}.")
    try:
        payload: dict[str, Any] = json.loads(body)
    except ValueError as exc:
        raise InvalidInput("the payload is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("the payload is not a JSON object")
    try:
        repository = payload["repository"]["full_name"]
        if event == "ping":
            return None
        if event == "push":
            ref, after = payload["ref"], payload["after"]
            if payload.get("deleted") or not after or set(after) == {"0"}:
                return None  # a deleted branch deploys nothing
            return CodeEvent("push", "push", repository, _branch(ref), after, delivery=delivery)
        if event == "workflow_run":
            run = payload["workflow_run"]
            if payload.get("action") != "completed":
                return None
            return CodeEvent(
                "ci",
                "workflow_run",
                repository,
                run.get("head_branch"),
                run["head_sha"],
                ci_passed=run.get("conclusion") == "success",
                workflow=run.get("name"),
                delivery=delivery,
            )
        suite = payload["check_suite"]  # check_suite
        if payload.get("action") != "completed":
            return None
        return CodeEvent(
            "ci",
            "check_suite",
            repository,
            suite.get("head_branch"),
            suite["head_sha"],
            ci_passed=suite.get("conclusion") == "success",
            delivery=delivery,
        )
    except (KeyError, TypeError) as exc:
        raise InvalidInput(f"the {event} payload lacks {exc}") from exc


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidInput("the Travis public key is not an RSA key")
    return key


def verify_travis(public_key_pem: str, payload: str, signature_b64: str | None) -> bool:
    """The ``Signature`` header: base64 RSA-SHA1 (PKCS#1 v1.5) of the ``payload`` form field."""
    if not signature_b64:
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        load_public_key(public_key_pem).verify(signature, payload.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def parse_travis(payload: str) -> CodeEvent:
    try:
        data = json.loads(payload)
        repo = data["repository"]
        status = (data.get("state") or data.get("status_message") or "").lower()
        return CodeEvent(
            "ci",
            "travis",
            f"{repo['owner_name']}/{repo['name']}",
            data.get("branch"),
            data["commit"],
            ci_passed=status in ("passed", "fixed"),
            delivery=f"travis-{data.get('id', '')}-{data['commit']}",  # one per build and commit
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"the Travis payload is malformed: {exc}") from exc
