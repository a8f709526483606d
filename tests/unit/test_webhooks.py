from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr
from starlette.datastructures import Headers

from billowin.adapters.consul import ConsulRegistry
from billowin.adapters.github import GitHub
from billowin.api.routes.hooks import _github_accept, _github_headers_refused
from billowin.apps.store import App
from billowin.errors import InvalidInput
from billowin.pipeline.webhooks import (
    GLOBAL,
    CodeEvent,
    Skipped,
    check_delivery,
    github_signature,
    is_github_signature,
    parse_github,
    parse_travis,
    verify_github,
    verify_travis,
)
from billowin.ports import KVWrite
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import InMemoryKV

SECRET = b"It's a Secret to Everybody"
BODY = b"Hello, World!"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"  # the form GitHub's X-GitHub-Delivery takes
SHA = "a" * 40


def test_githubs_known_answer_vector() -> None:
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature(SECRET, BODY) == expected
    assert verify_github([(GLOBAL, SECRET)], BODY, expected) == {GLOBAL}


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (b"Hello, World?", github_signature(SECRET, BODY)),  # a flipped byte
        (BODY, None),  # no header
        (BODY, "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0"),  # SHA-1 only
        (BODY, github_signature(SECRET, BODY).replace("sha256=", "sha512=")),  # wrong prefix
        (BODY, github_signature(SECRET, BODY).upper().replace("SHA256=", "sha256=")),  # not GitHub's form
        (BODY, github_signature(SECRET, BODY) + "\n"),  # a trailing newline
        (BODY, github_signature(b"wrong secret", BODY)),
        (json.dumps(json.loads('{"a": 1}')).encode(), github_signature(SECRET, b'{"a":1}')),  # re-serialized
    ],
)
def test_forged_github_signatures_are_refused(body: bytes, header: str | None) -> None:
    assert verify_github([(GLOBAL, SECRET)], body, header) == set()


def test_verify_github_says_which_secrets_signed() -> None:
    secrets = [(GLOBAL, b"global"), ("shop", SECRET), ("blog", b"blog's"), ("twin", SECRET)]
    assert verify_github(secrets, BODY, github_signature(SECRET, BODY)) == {"shop", "twin"}
    assert verify_github(secrets, BODY, github_signature(b"global", BODY)) == {GLOBAL}
    assert verify_github(secrets, BODY, github_signature(b"nobody's", BODY)) == set()


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256=" + "g" * 64,
        "sha256=" + "a" * 63,
        "sha1=" + "a" * 40,
        "sha256=" + "a" * 65,
    ],
)
def test_a_malformed_signature_header_is_recognized_without_the_body(header: str | None) -> None:
    assert not is_github_signature(header)
    assert is_github_signature(github_signature(SECRET, BODY))


def push(ref: str = "refs/heads/main", after: str = SHA, repo: str = "acme/shop") -> bytes:
    return json.dumps(
        {"ref": ref, "after": after, "deleted": False, "repository": {"full_name": repo}}
    ).encode()


def test_a_push_becomes_a_code_event() -> None:
    event = parse_github("push", push(), DELIVERY)
    assert isinstance(event, CodeEvent)
    assert (event.kind, event.repository, event.branch, event.sha, event.delivery) == (
        "push",
        "acme/shop",
        "main",
        SHA,
        DELIVERY,
    )


def test_tag_pushes_and_deleted_branches_deploy_nothing_to_a_branch() -> None:
    tag = parse_github("push", push(ref="refs/tags/v1"), DELIVERY)
    assert isinstance(tag, CodeEvent) and tag.branch is None
    assert isinstance(parse_github("push", push(after="0" * 40), DELIVERY), Skipped)
    deleted = json.loads(push()) | {"deleted": True}
    assert isinstance(parse_github("push", json.dumps(deleted).encode(), DELIVERY), Skipped)


def test_malformed_and_unknown_events_are_refused() -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        parse_github("push", b"{not json", DELIVERY)
    with pytest.raises(InvalidInput, match="unsupported"):
        parse_github("issues", push(), DELIVERY)
    with pytest.raises(InvalidInput, match="lacks"):
        parse_github("push", b'{"repository": {"full_name": "a/b"}}', DELIVERY)


# -- values that become Consul keys, paths, URLs and git arguments --------------------------------
@pytest.mark.parametrize(
    "delivery",
    [
        None,
        "",
        "../../../agent/leave",
        "../apps/x/app",
        "d-1",
        DELIVERY + "\n",
        DELIVERY + "/x",
        DELIVERY.replace("-", ""),
        "72d3162e-cc78-11e3-81ab-4c9367dc095g",
    ],
)
def test_a_delivery_id_must_be_a_uuid(delivery: str | None) -> None:
    with pytest.raises(InvalidInput, match="X-GitHub-Delivery"):
        parse_github("push", push(), delivery)


def test_a_delivery_id_is_kept_in_lowercase() -> None:
    assert check_delivery(DELIVERY.upper()) == DELIVERY


@pytest.mark.parametrize(
    "after",
    ["../../../../var/log/auth", "/var/log/auth", "A" * 40, "a" * 39, "a" * 41, SHA + "\n", "g" * 40, ""],
)
def test_a_push_whose_sha_is_not_40_lowercase_hex_is_refused(after: str) -> None:
    with pytest.raises(InvalidInput, match="SHA"):
        parse_github("push", push(after=after), DELIVERY)


@pytest.mark.parametrize(
    "repo",
    ["../..", "acme/..", "acme/.", "../apps", "acme", "a/b/c", "-acme/shop", "acme/shop\n", "ac me/shop"],
)
def test_a_repository_that_is_not_owner_slash_name_is_refused(repo: str) -> None:
    with pytest.raises(InvalidInput, match="repository"):
        parse_github("push", push(repo=repo), DELIVERY)


@pytest.mark.parametrize("branch", ["$(touch /tmp/pwned)", "--upload-pack=x", "a..b", "main\n", "mä in", ""])
def test_a_branch_outside_the_branch_rule_is_refused(branch: str) -> None:
    with pytest.raises(InvalidInput, match="branch"):
        parse_github("push", push(ref=f"refs/heads/{branch}"), DELIVERY)


def test_a_code_event_can_only_hold_safe_values() -> None:
    CodeEvent("push", "push", "acme/shop", "feature/x", SHA, delivery="travis-12-" + SHA)
    for bad in (
        {"repository": "../x"},
        {"sha": "../../etc"},
        {"branch": "-x"},
        {"delivery": "../../../agent/leave"},
        {"delivery": "a/b"},
    ):
        fields: dict[str, Any] = {"repository": "acme/shop", "branch": "main", "sha": SHA} | bad
        with pytest.raises(InvalidInput):
            CodeEvent("push", "push", **fields)


# -- which CI results may deploy --------------------------------------------------------------
def workflow_run(
    *,
    head_repo: str = "acme/shop",
    trigger: str = "push",
    conclusion: str = "success",
    action: str = "completed",
) -> bytes:
    return json.dumps(
        {
            "action": action,
            "repository": {"full_name": "acme/shop"},
            "workflow_run": {
                "head_sha": "b" * 40,
                "head_branch": "main",
                "head_repository": {"full_name": head_repo},
                "event": trigger,
                "conclusion": conclusion,
                "name": "CI",
            },
        }
    ).encode()


def test_a_workflow_run_carries_its_conclusion() -> None:
    event = parse_github("workflow_run", workflow_run(conclusion="failure"), DELIVERY)
    assert isinstance(event, CodeEvent)
    assert (
        event.kind == "ci" and event.ci_passed is False and event.workflow == "CI" and event.branch == "main"
    )
    assert isinstance(parse_github("workflow_run", workflow_run(action="requested"), DELIVERY), Skipped)


def test_a_workflow_run_from_a_fork_or_a_pull_request_never_deploys() -> None:
    """A fork's pull request from its own branch `main` says head_branch "main": that must not count."""
    fork = parse_github(
        "workflow_run", workflow_run(head_repo="mallory/shop", trigger="pull_request"), DELIVERY
    )
    assert isinstance(fork, Skipped) and "pull request" in fork.reason
    assert isinstance(parse_github("workflow_run", workflow_run(trigger="pull_request"), DELIVERY), Skipped)
    assert isinstance(parse_github("workflow_run", workflow_run(head_repo="mallory/shop"), DELIVERY), Skipped)
    assert isinstance(
        parse_github("workflow_run", workflow_run(trigger="workflow_dispatch"), DELIVERY), Skipped
    )
    assert isinstance(parse_github("workflow_run", workflow_run(), DELIVERY), CodeEvent)


def check_suite(pull_requests: object) -> bytes:
    suite = {
        "head_sha": "c" * 40,
        "head_branch": "main",
        "conclusion": "success",
        "pull_requests": pull_requests,
    }
    return json.dumps(
        {"action": "completed", "repository": {"full_name": "acme/shop"}, "check_suite": suite}
    ).encode()


def test_a_check_suite_for_a_pull_request_never_deploys() -> None:
    assert isinstance(parse_github("check_suite", check_suite([{"number": 2}]), DELIVERY), Skipped)
    assert isinstance(parse_github("check_suite", check_suite(None), DELIVERY), Skipped)
    event = parse_github("check_suite", check_suite([]), DELIVERY)
    assert isinstance(event, CodeEvent) and event.source == "check_suite" and event.ci_passed


def test_an_organizations_ping_needs_no_repository() -> None:
    assert parse_github("ping", b'{"zen": "Design for failure."}', DELIVERY) == Skipped("pong")


# -- Travis ------------------------------------------------------------------------------------
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


def travis(**changes: object) -> str:
    notification = {
        "id": 1,
        "type": "push",
        "pull_request": False,
        "state": "passed",
        "branch": "main",
        "commit": "c" * 40,
        "repository": {"owner_name": "acme", "name": "shop"},
    }
    return json.dumps(notification | changes)


def test_a_travis_notification_verifies_against_the_configured_key(travis_key) -> None:  # type: ignore[no-untyped-def]
    key, pem = travis_key
    payload = travis()
    assert verify_travis(pem, payload, sign(key, payload))
    assert not verify_travis(pem, payload.replace("passed", "failed"), sign(key, payload))
    assert not verify_travis(pem, payload, None)
    assert not verify_travis(pem, payload, "not base64!!")
    event = parse_travis(payload)
    assert isinstance(event, CodeEvent)
    assert (event.repository, event.branch, event.sha, event.ci_passed, event.delivery) == (
        "acme/shop",
        "main",
        "c" * 40,
        True,
        f"travis-1-{'c' * 40}",
    )


def test_only_a_travis_build_of_a_push_may_deploy() -> None:
    assert isinstance(parse_travis(travis(type="pull_request", pull_request=True)), Skipped)
    assert isinstance(parse_travis(travis(pull_request=True)), Skipped)
    assert isinstance(parse_travis(travis(type="cron")), Skipped)
    assert isinstance(
        parse_travis(json.dumps({k: v for k, v in json.loads(travis()).items() if k != "type"})), Skipped
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "../../x"},
        {"id": True},
        {"id": -1},
        {"commit": "../../../../var/log/auth"},
        {"repository": {"owner_name": "..", "name": ".."}},
        {"branch": "--upload-pack=x"},
    ],
)
def test_unsafe_travis_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        parse_travis(travis(**changes))


# -- the KV layer refuses keys that would change Consul's URL ------------------------------------
def _consul() -> ConsulRegistry:
    # Nothing listens there: a check that let a key through would fail with Unreachable instead.
    return ConsulRegistry(Settings(consul_addr="http://127.0.0.1:9"))


BAD_KEYS = [
    "billowin/deliveries/../../../agent/leave",
    "billowin/deliveries/../apps/x/app",
    "../agent/self",
    "billowin/./apps",
    "/billowin/apps",
    "billowin//apps",
    "billowin/apps/",
    "",
    "billowin/apps/x?recurse",
    "billowin/apps/x#y",
    "billowin/apps/%2e%2e",
    "billowin/apps/x y",
    "billowin/apps/x\n",
    "billowin/" + "x" * 600,
]


@pytest.mark.parametrize("make", [_consul, InMemoryKV], ids=["consul", "fake"])
@pytest.mark.parametrize("key", BAD_KEYS)
def test_every_kv_call_refuses_a_key_that_is_not_a_plain_path(make: Any, key: str) -> None:
    kv = make()
    calls = [
        lambda: kv.kv_get(key),
        lambda: kv.kv_put(key, b"x"),
        lambda: kv.kv_put(key, b"x", cas=0),
        lambda: kv.kv_acquire(key, "0f0e3c5a-6d43-4a40-8a3f-2a1c9e1a1b2c"),
        lambda: kv.kv_release(key, "0f0e3c5a-6d43-4a40-8a3f-2a1c9e1a1b2c"),
        lambda: kv.kv_txn([KVWrite("billowin/ok", b"1"), KVWrite(key, b"x")]),
    ]
    if key not in ("", "billowin/apps/"):  # a prefix may end in one '/'; reads may list everything
        calls += [
            lambda: kv.kv_list(key),
            lambda: kv.kv_entries(key),
            lambda: kv.kv_keys(key),
            lambda: kv.kv_wait(key, None),
            lambda: kv.kv_list_wait(key, None),
        ]
    if key != "billowin/apps/":
        calls.append(lambda: kv.kv_delete_tree(key))
    for call in calls:
        with pytest.raises(InvalidInput, match="KV key"):
            call()
    if isinstance(kv, InMemoryKV):
        assert kv.kv_keys("") == [], "nothing was written, not even the transaction's good key"


@pytest.mark.parametrize("make", [_consul, InMemoryKV], ids=["consul", "fake"])
def test_the_empty_prefix_never_deletes_everything(make: Any) -> None:
    with pytest.raises(InvalidInput):
        make().kv_delete_tree("")


def test_every_key_billowin_writes_passes_the_check() -> None:
    kv = InMemoryKV()
    for key in (
        "billowin/apps/shop/app",
        "billowin/releases/shop/releases/00000001",
        "billowin/pipeline/shop/jobs/00000001",
        "billowin/pipeline/shop/seq",
        "billowin/pipeline/shop/lock",
        "billowin/pipeline/shop/pushed",
        "billowin/tokens/0123456789abcdef",
        f"billowin/deliveries/{DELIVERY}",
        f"billowin/deliveries/travis-4242-{SHA}",
        "billowin/domains/www.example.com",
    ):
        assert kv.kv_put(key, b"1")
    for prefix in ("", "billowin/", "billowin/pipeline/", "billowin/pipeline/shop/jobs/"):
        kv.kv_keys(prefix)


# -- commit statuses: the repository and SHA become the URL -------------------------------------
@pytest.mark.parametrize(
    ("repository", "sha"),
    [
        ("acme/shop", "../forks"),
        ("acme/shop", "../../../user"),
        ("acme/shop", "A" * 40),
        ("../../user", SHA),
        ("acme/..", SHA),
        ("acme", SHA),
        ("acme/shop/extra", SHA),
    ],
)
def test_commit_statuses_refuse_a_repository_or_sha_that_would_change_the_url(
    repository: str, sha: str
) -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201)

    statuses = GitHub("https://api.github.invalid", SecretStr("ghp_x"))
    statuses._client = httpx.Client(transport=httpx.MockTransport(record))
    with pytest.raises(InvalidInput):
        statuses.report(repository, sha, "pending", "building", None)
    assert sent == [], "nothing was sent with the token"
    statuses.report("acme/shop", SHA, "pending", "building", None)
    assert [r.url.path for r in sent] == [f"/repos/acme/shop/statuses/{SHA}"]


def test_uuid4_delivery_ids_are_accepted() -> None:
    value = str(uuid.uuid4())
    assert check_delivery(value) == value


# -- the GitHub route: cheap checks first, then who may act for which app ----------------------------
def _headers(**changes: str | None) -> Headers:
    base: dict[str, str | None] = {
        "x-hub-signature-256": "sha256=" + "0" * 64,
        "x-github-event": "push",
        "x-github-delivery": DELIVERY,
        "content-length": "100",
    }
    return Headers({k: v for k, v in (base | changes).items() if v is not None})


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, None),
        ({"x-hub-signature-256": None}, 401),
        ({"x-hub-signature-256": "sha256=nothex"}, 401),
        ({"x-hub-signature-256": None, "x-github-delivery": None}, 401),  # unsigned: 401 before anything
        ({"x-github-event": "issues"}, 400),
        ({"x-github-event": None}, 400),
        ({"x-github-delivery": None}, 400),
        ({"x-github-delivery": "../../../agent/leave"}, 400),
        ({"content-length": None}, 411),
        ({"content-length": "-1"}, 400),
        ({"content-length": "1001"}, 413),
    ],
)
def test_a_github_delivery_is_refused_from_its_headers_alone_when_it_can_be(
    changes: dict[str, str | None], status: int | None
) -> None:
    refused = _github_headers_refused(_headers(**changes), limit=1000)
    assert (refused.status_code if refused is not None else None) == status
    if refused is not None:
        assert set(json.loads(bytes(refused.body))) >= {"message"}


def _system(*apps: App, global_secret: str | None = "global") -> tuple[System, Settings]:  # noqa: S107
    settings = Settings(github_webhook_secret=SecretStr(global_secret) if global_secret else None)
    system = System(settings, kv=InMemoryKV())
    for app in apps:
        system.apps.create(app)
    return system, settings


def _app(name: str, repo: str = "acme/shop", secret: str | None = None) -> App:
    return App(
        name=name,
        repository=f"https://github.com/{repo}",
        github_repo=repo,
        webhook_secret=SecretStr(secret) if secret else None,
    )


def _deliver(system: System, settings: Settings, secret: str, body: bytes, event: str = "push") -> Any:
    headers = _headers(
        **{
            "x-hub-signature-256": github_signature(secret.encode(), body),
            "x-github-event": event,
            "x-github-delivery": str(uuid.uuid4()),
        }
    )
    reply = _github_accept(headers, body, settings, system)
    return reply.status_code, json.loads(bytes(reply.body))


def test_an_apps_own_secret_acts_for_that_app_only_and_the_global_one_for_all() -> None:
    system, settings = _system(
        _app("shop", secret="shop's"), _app("blog", secret="blog's"), _app("else", "acme/else", "else's")
    )
    status, reply = _deliver(system, settings, "shop's", push())
    assert status == 202 and [j["app"] for j in reply["jobs"]] == ["shop"]
    status, reply = _deliver(system, settings, "global", push(after="b" * 40))
    assert status == 202 and sorted(j["app"] for j in reply["jobs"]) == ["blog", "shop"]
    # A secret is only tried for the repository its app follows.
    assert _deliver(system, settings, "else's", push(after="c" * 40))[0] == 401
    assert _deliver(system, settings, "shop's", push(repo="acme/else"))[0] == 401
    assert system.jobs.list("else") == []


def test_without_any_secret_for_the_repository_nothing_is_accepted() -> None:
    system, settings = _system(_app("shop"), global_secret=None)
    status, reply = _deliver(system, settings, "anything", push())
    assert status == 401 and "no webhook secret" in reply["message"]


def test_a_signed_but_malformed_or_unsafe_delivery_is_a_400_and_an_unsigned_one_a_401() -> None:
    system, settings = _system(_app("shop"))
    assert _deliver(system, settings, "global", b"{not json")[0] == 400
    assert _deliver(system, settings, "wrong", b"{not json")[0] == 401
    status, reply = _deliver(system, settings, "global", push(after="../../../../var/log/auth"))
    assert status == 400 and "SHA" in reply["message"]
    status, reply = _deliver(
        system, settings, "global", workflow_run(head_repo="mallory/shop"), "workflow_run"
    )
    assert status == 200 and "never deploys" in reply["message"]
    assert system.jobs.list("shop") == []
