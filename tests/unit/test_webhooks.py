from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from billowin.errors import InvalidInput
from billowin.pipeline.webhooks import (
    github_signature,
    parse_github,
    parse_travis,
    verify_github,
    verify_travis,
)

SECRET = b"It's a Secret to Everybody"
BODY = b"Hello, World!"


def test_githubs_known_answer_vector() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature(SECRET, BODY) == expected
    assert verify_github([SECRET], BODY, expected)


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (b"Hello, World?", github_signature(SECRET, BODY)),  # a flipped byte
        (BODY, None),  # no header
        (BODY, "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0"),  # SHA-1 only
        (BODY, github_signature(SECRET, BODY).replace("sha256=", "sha512=")),  # wrong prefix
        (BODY, github_signature(b"wrong secret", BODY)),
        (json.dumps(json.loads('{"a": 1}')).encode(), github_signature(SECRET, b'{"a":1}')),  # re-serialized
    ],
)
def test_forged_github_signatures_are_refused(body: bytes, header: str | None) -> None:
    assert not verify_github([SECRET], body, header)


def test_any_configured_secret_verifies() -> None:
    assert verify_github([b"global", SECRET], BODY, github_signature(SECRET, BODY))


def push(ref: str = "refs/heads/main", after: str = "a" * 40) -> bytes:
    return json.dumps(
        {"ref": ref, "after": after, "deleted": False, "repository": {"full_name": "acme/shop"}}
    ).encode()


def test_a_push_becomes_a_code_event() -> None:
    event = parse_github("push", push(), "d-1")
    assert event is not None
    assert (event.kind, event.repository, event.branch, event.sha, event.delivery) == (
        "push",
        "acme/shop",
        "main",
        "a" * 40,
        "d-1",
    )


def test_tag_pushes_and_deleted_branches_deploy_nothing_to_a_branch() -> None:
    tag = parse_github("push", push(ref="refs/tags/v1"), None)
    assert tag is not None and tag.branch is None
    assert parse_github("push", push(after="0" * 40), None) is None


def test_malformed_and_unknown_events_are_refused() -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        parse_github("push", b"{not json", None)
    with pytest.raises(InvalidInput, match="unsupported"):
        parse_github("issues", push(), None)
    with pytest.raises(InvalidInput, match="lacks"):
        parse_github("push", b'{"repository": {"full_name": "a/b"}}', None)


def test_a_workflow_run_carries_its_conclusion() -> None:
    body = json.dumps(
        {
            "action": "completed",
            "repository": {"full_name": "acme/shop"},
            "workflow_run": {
                "head_sha": "b" * 40,
                "head_branch": "main",
                "conclusion": "failure",
                "name": "CI",
            },
        }
    ).encode()
    event = parse_github("workflow_run", body, None)
    assert event is not None and event.kind == "ci" and event.ci_passed is False and event.workflow == "CI"
    requested = json.loads(body) | {"action": "requested"}
    assert parse_github("workflow_run", json.dumps(requested).encode(), None) is None


@pytest.fixture(scope="module")
def travis_key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, pem


def sign(key: rsa.RSAPrivateKey, payload: str) -> str:
    return base64.b64encode(key.sign(payload.encode(), padding.PKCS1v15(), hashes.SHA1())).decode()  # noqa: S303


def test_a_travis_notification_verifies_against_the_configured_key(travis_key) -> None:  # type: ignore[no-untyped-def]
    key, pem = travis_key
    payload = json.dumps(
        {
            "id": 1,
            "state": "passed",
            "branch": "main",
            "commit": "c" * 40,
            "repository": {"owner_name": "acme", "name": "shop"},
        }
    )
    assert verify_travis(pem, payload, sign(key, payload))
    assert not verify_travis(pem, payload.replace("passed", "failed"), sign(key, payload))
    assert not verify_travis(pem, payload, None)
    assert not verify_travis(pem, payload, "not base64!!")
    event = parse_travis(payload)
    assert (event.repository, event.branch, event.sha, event.ci_passed) == (
        "acme/shop",
        "main",
        "c" * 40,
        True,
    )
