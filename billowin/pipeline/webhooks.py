"""Webhook verification and parsing: GitHub (push, workflow_run, check_suite, pull_request,
ping) and Travis CI.

Every source verifies first, then normalizes into one domain event,
``CodeEvent``: "this SHA of this repository's branch was pushed" or
"CI finished for this SHA". The pipeline only ever sees ``CodeEvent``. A
``pull_request`` becomes a ``PullRequestEvent`` instead, for review apps
(``billowin/review/apps.py``).

This is the boundary where outside values enter: every value taken from a
header or a payload is checked here, with ``fullmatch``, before it can become
a Consul key, a file path, a URL or a git argument. A delivery id is a UUID,
a SHA is 40 lowercase hex digits, a repository is ``owner/name`` of safe
characters, a branch follows ``billowin.apps.store.BRANCH``, a Travis build id
is a number. ``CodeEvent`` checks its own fields, so it only ever holds safe
values; anything else is refused with ``InvalidInput`` (the API answers 400).

Only CI results for the repository's own pushes may deploy: a ``workflow_run``
for a pull request or from a fork, a ``check_suite`` listing pull requests and
a Travis build of anything but a push are ``Skipped``. (A ``check_suite`` names
no head repository, so intake also requires its SHA to be the last one pushed
to the app's branch.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from billowin.apps.store import BRANCH
from billowin.errors import InvalidInput

GITHUB_EVENTS = {"push", "workflow_run", "check_suite", "pull_request", "ping"}
# The pull_request actions review apps act on; every other action (edited, labeled, ...) is skipped.
PULL_REQUEST_ACTIONS = {"opened", "reopened", "synchronize", "closed"}
MAX_PULL_NUMBER = 10**9
# Who signed a delivery, in verify_github's answer: the global secret acts for every app,
# an app's own secret only for that app (app names are DNS labels, never "*").
GLOBAL = "*"

SHA = re.compile(r"[0-9a-f]{40}")
GITHUB_DELIVERY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# owner/name: the owner starts with a letter or digit, the name is never "." or "..".
REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/(?!\.{1,2}\Z)[A-Za-z0-9_.-]{1,100}")
GITHUB_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
TRAVIS_ID = re.compile(r"[0-9]{1,20}")
# What a CodeEvent's delivery may be (it becomes one part of a Consul key): a GitHub UUID or
# "travis-<build id>-<sha>".
DELIVERY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_sha(value: object, what: str = "the commit SHA") -> str:
    if not isinstance(value, str) or not SHA.fullmatch(value):
        raise InvalidInput(f"{what} {_shown(value)} is not a full commit SHA (40 lowercase hex digits)")
    return value


def check_repository(value: object) -> str:
    if not isinstance(value, str) or not REPOSITORY.fullmatch(value):
        raise InvalidInput(f"the repository {_shown(value)} is not a GitHub owner/name")
    return value


def check_branch(value: object) -> str:
    if not isinstance(value, str) or not BRANCH.fullmatch(value):
        raise InvalidInput(
            f"the branch {_shown(value)} is not a branch name Billowin accepts",
            hint="Letters, digits, '.', '_', '-' and '/', not starting with '-', without '..'.",
        )
    return value


def check_delivery(value: str | None) -> str:
    """A GitHub ``X-GitHub-Delivery`` (a UUID, in lowercase): it names the delivery's Consul record."""
    if not value:
        raise InvalidInput(
            "the X-GitHub-Delivery header is missing",
            hint="Send GitHub's delivery id: it is how replays are recognized.",
        )
    if not GITHUB_DELIVERY.fullmatch(value.lower()):
        raise InvalidInput(
            f"the X-GitHub-Delivery header {_shown(value)} is not a delivery id (a UUID)",
            hint="Send GitHub's delivery id unchanged.",
        )
    return value.lower()


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

    def __post_init__(self) -> None:
        """Only safe values: each of these ends up in a Consul key, a path, a URL or a job record."""
        check_repository(self.repository)
        check_sha(self.sha)
        if self.branch is not None:
            check_branch(self.branch)
        if self.delivery is not None and not DELIVERY.fullmatch(self.delivery):
            raise InvalidInput(f"the delivery id {_shown(self.delivery)} is not a safe name")


@dataclass(frozen=True)
class PullRequestEvent:
    """One pull request opened, reopened, pushed to (``synchronize``) or closed: review apps."""

    action: Literal["opened", "reopened", "synchronize", "closed"]
    repository: str  # the base repository, owner/name: the apps that follow it
    number: int
    sha: str  # the head commit
    head_branch: str
    head_repository: str | None  # None when the fork was deleted
    base_branch: str
    delivery: str

    @property
    def fork(self) -> bool:
        """A pull request from another repository: it builds nothing until it is approved."""
        return self.head_repository != self.repository

    def __post_init__(self) -> None:
        check_repository(self.repository)
        check_sha(self.sha)
        check_branch(self.head_branch)
        check_branch(self.base_branch)
        if self.head_repository is not None:
            check_repository(self.head_repository)
        if self.action not in PULL_REQUEST_ACTIONS:
            raise InvalidInput(f"the pull_request action {_shown(self.action)} is not one Billowin acts on")
        if (
            isinstance(self.number, bool)
            or not isinstance(self.number, int)
            or not 0 < self.number < MAX_PULL_NUMBER
        ):
            raise InvalidInput(f"the pull request number {_shown(self.number)} is not a number")
        if not GITHUB_DELIVERY.fullmatch(self.delivery):
            raise InvalidInput(f"the delivery id {_shown(self.delivery)} is not a UUID")


@dataclass(frozen=True)
class Skipped:
    """A verified delivery that deploys nothing, and why (the webhook's reply says it)."""

    reason: str


def github_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def is_github_signature(header: str | None) -> bool:
    """Whether ``X-Hub-Signature-256`` is well formed (``sha256=`` and 64 hex), before reading the body."""
    return header is not None and GITHUB_SIGNATURE.fullmatch(header) is not None


def verify_github(secrets: Iterable[tuple[str, bytes]], body: bytes, header: str | None) -> set[str]:
    """Who signed ``body``: the owners (``GLOBAL`` or app names) of every secret whose
    ``X-Hub-Signature-256`` over the raw body matches ``header``, compared in constant time.

    Empty when none does. Each distinct secret is computed once, whoever shares it.
    """
    if not is_github_signature(header):
        return set()
    assert header is not None
    owners: dict[bytes, set[str]] = {}
    for owner, secret in secrets:
        owners.setdefault(secret, set()).add(owner)
    signed: set[str] = set()
    for secret, names in owners.items():
        if hmac.compare_digest(github_signature(secret, body), header):
            signed |= names
    return signed


def load_payload(body: bytes) -> dict[str, Any]:
    """A delivery's JSON object, or ``InvalidInput``."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidInput("the payload is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("the payload is not a JSON object")
    return payload


def repository_of(payload: dict[str, Any] | None) -> str | None:
    """``repository.full_name`` when it is a valid owner/name (to pick the secrets to try), else None."""
    repo = payload.get("repository") if payload is not None else None
    name = repo.get("full_name") if isinstance(repo, dict) else None
    return name if isinstance(name, str) and REPOSITORY.fullmatch(name) else None


def _branch(ref: object) -> str | None:
    if not isinstance(ref, str):
        raise InvalidInput(f"the ref {_shown(ref)} is not a git ref")
    if ref.startswith("refs/heads/"):
        return check_branch(ref.removeprefix("refs/heads/"))
    return None  # a tag: deploys nothing to a branch


def _optional_branch(value: object) -> str | None:
    return None if value is None else check_branch(value)


def parse_github(event: str, body: bytes, delivery: str | None) -> CodeEvent | PullRequestEvent | Skipped:
    """Normalize one verified GitHub delivery; ``Skipped`` for deliveries that deploy nothing."""
    check_github_event(event)
    return github_event(event, load_payload(body), check_delivery(delivery))


def check_github_event(event: str | None) -> str:
    if event is None or event not in GITHUB_EVENTS:
        raise InvalidInput(
            f"unsupported GitHub event {_shown(event)}", hint=f"Send only {sorted(GITHUB_EVENTS)}."
        )
    return event


def github_event(
    event: str, payload: dict[str, Any], delivery: str
) -> CodeEvent | PullRequestEvent | Skipped:
    """The ``CodeEvent`` of one verified delivery's parsed payload (see ``parse_github``)."""
    check_github_event(event)
    if event == "ping":
        return Skipped("pong")  # an organization's ping names no repository
    try:
        repository = check_repository(payload["repository"]["full_name"])
        if event == "push":
            if payload.get("deleted"):
                return Skipped("a deleted branch deploys nothing")
            branch = _branch(payload["ref"])
            sha = check_sha(payload["after"], "after")
            if set(sha) == {"0"}:
                return Skipped("a deleted branch deploys nothing")
            return CodeEvent("push", "push", repository, branch, sha, delivery=delivery)
        if event == "workflow_run":
            return _workflow_run(repository, payload, delivery)
        if event == "pull_request":
            return _pull_request(repository, payload, delivery)
        return _check_suite(repository, payload, delivery)
    except (KeyError, TypeError) as exc:
        raise InvalidInput(f"the {event} payload lacks {exc}") from exc


def _workflow_run(repository: str, payload: dict[str, Any], delivery: str) -> CodeEvent | Skipped:
    run = payload["workflow_run"]
    if payload.get("action") != "completed":
        return Skipped(f"workflow_run {payload.get('action')}: only completed runs deploy")
    head = run.get("head_repository")
    head_repository = head.get("full_name") if isinstance(head, dict) else None
    if run.get("event") != "push" or head_repository != repository:
        return Skipped(
            "this workflow run was not triggered by a push to this repository (a pull request, a fork, "
            "or another trigger): it never deploys"
        )
    name = run.get("name")
    return CodeEvent(
        "ci",
        "workflow_run",
        repository,
        _optional_branch(run.get("head_branch")),
        check_sha(run["head_sha"], "workflow_run.head_sha"),
        ci_passed=run.get("conclusion") == "success",
        workflow=name if isinstance(name, str) else None,
        delivery=delivery,
    )


def _pull_request(repository: str, payload: dict[str, Any], delivery: str) -> PullRequestEvent | Skipped:
    action = payload.get("action")
    if action not in PULL_REQUEST_ACTIONS:
        return Skipped(
            f"pull_request {_shown(action)}: review apps act only on {sorted(PULL_REQUEST_ACTIONS)}"
        )
    pull = payload["pull_request"]
    head, base = pull["head"], pull["base"]
    head_repo = head.get("repo")
    return PullRequestEvent(
        action=action,
        repository=repository,
        number=payload.get("number", pull.get("number")),
        sha=check_sha(head["sha"], "pull_request.head.sha"),
        head_branch=check_branch(head["ref"]),
        head_repository=check_repository(head_repo["full_name"]) if isinstance(head_repo, dict) else None,
        base_branch=check_branch(base["ref"]),
        delivery=delivery,
    )


def _check_suite(repository: str, payload: dict[str, Any], delivery: str) -> CodeEvent | Skipped:
    suite = payload["check_suite"]
    if payload.get("action") != "completed":
        return Skipped(f"check_suite {payload.get('action')}: only completed suites deploy")
    pulls = suite.get("pull_requests")
    if not isinstance(pulls, list) or pulls:
        return Skipped("this check suite is for a pull request: it never deploys")
    return CodeEvent(
        "ci",
        "check_suite",
        repository,
        _optional_branch(suite.get("head_branch")),
        check_sha(suite["head_sha"], "check_suite.head_sha"),
        ci_passed=suite.get("conclusion") == "success",
        delivery=delivery,
    )


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


def _travis_id(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not TRAVIS_ID.fullmatch(value):
        raise InvalidInput(f"the Travis build id {_shown(value)} is not a number")
    return value


def parse_travis(payload: str) -> CodeEvent | Skipped:
    """Normalize one verified Travis notification; only a build of a push may deploy."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise InvalidInput("the Travis payload is not valid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidInput("the Travis payload is not a JSON object")
    try:
        repo = data["repository"]
        repository = check_repository(f"{repo['owner_name']}/{repo['name']}")
        build = _travis_id(data["id"])
        sha = check_sha(data["commit"], "commit")
        if data.get("type") != "push" or data.get("pull_request"):
            return Skipped(
                f"a Travis build of type {_shown(data.get('type'))} (not a push, or a pull request) "
                "never deploys: only builds of pushes do"
            )
        status = data.get("state") or data.get("status_message") or ""
        return CodeEvent(
            "ci",
            "travis",
            repository,
            _optional_branch(data.get("branch")),
            sha,
            ci_passed=isinstance(status, str) and status.lower() in ("passed", "fixed"),
            delivery=f"travis-{build}-{sha}",  # one per build and commit
        )
    except (KeyError, TypeError) as exc:
        raise InvalidInput(f"the Travis payload lacks {exc}") from exc
