"""The webhook items of the security review, against the real stack over HTTP.

Every delivery here is signed properly (with the stack's global secret or an
app's own), so each refusal comes from the check under test, not from the
signature. Jobs that must not run are kept queued by holding the app's
pipeline lock (``AppLock``) the way a busy worker would; their records are
removed before it is let go, so nothing builds.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from billowin.apps.store import App, DeployOn
from billowin.pipeline.lock import AppLock
from billowin.pipeline.webhooks import github_signature
from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.gitrepo import commit
from tests.testdata import webhook_example

from .conftest import WEBHOOK_SECRET
from .test_build import APPS
from .test_trigger import Hooks, push_payload, travis_notification, travis_post, workflow_run_payload


@pytest.fixture
def hooks(stack: SingleBox) -> Hooks:
    return Hooks(stack)


@pytest.fixture
def system(stack: SingleBox) -> System:
    return System(stack.settings)


@pytest.fixture
def unbuildable_apps(system: System) -> Iterator[list[str]]:
    """Apps that never deploy (their jobs stay queued behind a held lock): records removed at the end."""
    names: list[str] = []
    yield names
    for name in names:
        system.jobs.delete(name)
        system.apps.delete(name)


def _make(system: System, names: list[str], repo: str, **fields: Any) -> App:
    name = f"s{uuid.uuid4().hex[:10]}"
    names.append(name)
    app = App(name=name, repository="/nonexistent/never-built", github_repo=repo, **fields)
    return system.apps.create(app)


@contextlib.contextmanager
def held(system: System, *apps: App) -> Iterator[None]:
    """Hold the apps' pipeline locks, as a busy worker would, so their queued jobs wait; on the way
    out their jobs are removed before the locks are let go, so none of them runs."""
    with contextlib.ExitStack() as stack:
        for app in apps:
            assert stack.enter_context(AppLock(system.kv).hold(app.name)), f"{app.name}'s lock is free"
        try:
            yield
        finally:
            for app in apps:
                system.jobs.delete(app.name)


def _push(repo: str, sha: str, branch: str = "main") -> dict[str, Any]:
    payload = webhook_example("push")
    payload.update(ref=f"refs/heads/{branch}", after=sha, deleted=False)
    payload["repository"] = {**payload["repository"], "full_name": repo}
    return payload


def _post(hooks: Hooks, event: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    base = {"X-GitHub-Event": event, "Content-Type": "application/json"}
    return httpx.post(f"{hooks.api}/hooks/github", content=body, headers=base | headers, timeout=10)


def _signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": github_signature(secret.encode(), body)}


# -- 1. an unsigned header never becomes a Consul path ------------------------------------------
def test_a_delivery_id_that_climbs_out_of_its_consul_prefix_is_refused_and_consul_stays_up(
    hooks: Hooks, stack: SingleBox, system: System
) -> None:
    body = json.dumps(_push("acme/nobody-follows-this", "a" * 40)).encode()
    consul = stack.settings.consul_addr

    leave = _post(hooks, "push", body, _signed(body) | {"X-GitHub-Delivery": "../../../agent/leave"})
    assert leave.status_code == 400, leave.text
    assert "X-GitHub-Delivery" in leave.json()["message"]
    # The agent is still there and still a member (a PUT /v1/agent/leave would have shut it down).
    members = httpx.get(f"{consul}/v1/agent/members", timeout=10)
    assert members.status_code == 200
    assert [m["Status"] for m in members.json()] == [1], members.json()
    assert system.catalog.health().ok

    plant = _post(hooks, "push", body, _signed(body) | {"X-GitHub-Delivery": "../apps/x/app"})
    assert plant.status_code == 400, plant.text
    assert system.kv.kv_get("billowin/apps/x/app") == (0, None), "no record was planted"
    apps = httpx.get(f"{hooks.api}/apps", headers=hooks.auth, timeout=10)
    assert apps.status_code == 200, apps.text


# -- 2. an app's own secret acts for that app only -------------------------------------------------
def test_a_push_signed_with_one_apps_secret_queues_a_job_for_that_app_only(
    hooks: Hooks, system: System, unbuildable_apps: list[str]
) -> None:
    repo = f"acme/shared-{uuid.uuid4().hex[:8]}"
    a = _make(system, unbuildable_apps, repo, webhook_secret="secret of app a")
    b = _make(system, unbuildable_apps, repo, webhook_secret="secret of app b")
    other = _make(system, unbuildable_apps, f"acme/other-{uuid.uuid4().hex[:8]}")
    with held(system, a, b, other):
        body = json.dumps(_push(repo, "b" * 40)).encode()
        resp = _post(
            hooks, "push", body, _signed(body, "secret of app a") | {"X-GitHub-Delivery": str(uuid.uuid4())}
        )
        assert resp.status_code == 202, resp.text
        assert [j["app"] for j in resp.json()["jobs"]] == [a.name]
        assert [j["app"] for j in hooks.jobs(a.name)] == [a.name]
        assert hooks.jobs(b.name) == [], "B's secret did not sign it: nothing for B"

        # A's secret is not tried for a repository A does not follow.
        elsewhere = json.dumps(_push(other.github_repo or "", "c" * 40)).encode()
        refused = _post(
            hooks,
            "push",
            elsewhere,
            _signed(elsewhere, "secret of app a") | {"X-GitHub-Delivery": str(uuid.uuid4())},
        )
        assert refused.status_code == 401, refused.text
        assert hooks.jobs(other.name) == []

        # The global secret acts for every app that follows the repository.
        body = json.dumps(_push(repo, "d" * 40)).encode()
        both = _post(hooks, "push", body, _signed(body) | {"X-GitHub-Delivery": str(uuid.uuid4())})
        assert sorted(j["app"] for j in both.json()["jobs"]) == sorted([a.name, b.name]), both.text


# -- 3. only CI results of the app's own pushes deploy ------------------------------------------------
@pytest.fixture
def ci_app(stack: SingleBox, app_name: str, tmp_path: Path, cleanup_apps: list[str]) -> tuple[App, Path]:
    repo = tmp_path / "ruby-app"
    shutil.copytree(APPS / "ruby", repo)
    cleanup_apps.append(app_name)
    app = App(name=app_name, repository=str(repo), github_repo=f"acme/{app_name}", deploy_on=DeployOn.CI)
    return System(stack.settings).apps.create(app), repo


def test_fork_and_pull_request_ci_results_never_deploy_and_a_push_triggered_run_does(
    hooks: Hooks, ci_app: tuple[App, Path], travis_key: rsa.RSAPrivateKey
) -> None:
    app, repo = ci_app
    sha = commit(repo)
    pushed = hooks.github("push", push_payload(app, sha))
    assert pushed.status_code == 202 and "nothing to deploy" in pushed.json()["message"]

    # A fork's pull request from a branch it named `main`, whose workflow succeeded.
    fork = workflow_run_payload(
        app, sha, "success", head_repository=f"mallory/{app.name}", event="pull_request"
    )
    resp = hooks.github("workflow_run", fork)
    assert resp.status_code == 200 and "never deploys" in resp.json()["message"], resp.text
    # Same repository, but run for a pull request.
    resp = hooks.github("workflow_run", workflow_run_payload(app, sha, "success", event="pull_request"))
    assert resp.status_code == 200 and "never deploys" in resp.json()["message"], resp.text
    # A passed Travis build of a pull request.
    resp = travis_post(hooks, travis_key, travis_notification(app, sha, type="pull_request"))
    assert resp.status_code == 200 and "never deploys" in resp.json()["message"], resp.text

    # check_suite: GitHub's own example, for a pull request, then for a SHA nobody pushed.
    suite = webhook_example("check_suite", "completed")
    suite["repository"] = {**suite["repository"], "full_name": app.github_repo}
    for_pr = {**suite["check_suite"], "head_sha": sha, "head_branch": "main", "conclusion": "success"}
    assert for_pr["pull_requests"], "GitHub's example lists its pull request"
    resp = hooks.github("check_suite", suite | {"check_suite": for_pr})
    assert resp.status_code == 200 and "never deploys" in resp.json()["message"], resp.text
    unpushed = for_pr | {"pull_requests": [], "head_sha": "e" * 40}
    resp = hooks.github("check_suite", suite | {"check_suite": unpushed})
    assert resp.status_code == 202 and "nothing to deploy" in resp.json()["message"], resp.text
    assert hooks.jobs(app.name) == []

    # The repository's own push-triggered run deploys.
    ok = hooks.github("workflow_run", workflow_run_payload(app, sha, "success"))
    assert ok.status_code == 202, ok.text
    assert hooks.wait_job(app.name, ok.json()["jobs"][0]["id"])["state"] == "live"


# -- 4. a SHA that is not one never reaches a path or a URL -----------------------------------------
def test_a_push_whose_after_is_a_path_is_refused_and_queues_nothing(
    hooks: Hooks, system: System, unbuildable_apps: list[str], fake_github: Any
) -> None:
    repo = f"acme/paths-{uuid.uuid4().hex[:8]}"
    app = _make(system, unbuildable_apps, repo)
    with held(system, app):
        for after in ("../../../../var/log/auth", "/var/log/auth", "../forks"):
            body = json.dumps(_push(repo, after)).encode()
            resp = _post(hooks, "push", body, _signed(body) | {"X-GitHub-Delivery": str(uuid.uuid4())})
            assert resp.status_code == 400 and "SHA" in resp.json()["message"], resp.text
        assert hooks.jobs(app.name) == []
    assert not [c for c in fake_github.calls if "forks" in c.path or "var/log" in c.path]


# -- 5. replays ---------------------------------------------------------------------------------------
def test_a_delivery_without_an_id_is_refused(
    hooks: Hooks, system: System, unbuildable_apps: list[str]
) -> None:
    repo = f"acme/noid-{uuid.uuid4().hex[:8]}"
    app = _make(system, unbuildable_apps, repo)
    with held(system, app):
        body = json.dumps(_push(repo, "a" * 40)).encode()
        resp = _post(hooks, "push", body, _signed(body))
        assert resp.status_code == 400 and "X-GitHub-Delivery" in resp.json()["message"], resp.text
        assert hooks.jobs(app.name) == []


def test_concurrent_deliveries_with_one_id_queue_exactly_one_job(
    hooks: Hooks, system: System, unbuildable_apps: list[str]
) -> None:
    repo = f"acme/replay-{uuid.uuid4().hex[:8]}"
    app = _make(system, unbuildable_apps, repo)
    body = json.dumps(_push(repo, "a" * 40)).encode()
    headers = _signed(body) | {"X-GitHub-Delivery": str(uuid.uuid4())}
    n = 8
    start = threading.Barrier(n)
    replies: list[httpx.Response] = []
    guard = threading.Lock()

    def deliver() -> None:
        start.wait(timeout=10)
        resp = _post(hooks, "push", body, headers)
        with guard:
            replies.append(resp)

    with held(system, app):
        threads = [threading.Thread(target=deliver) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        statuses = sorted(r.status_code for r in replies)
        assert statuses == [200] * (n - 1) + [202], [r.text for r in replies]
        assert all("duplicate" in r.json()["message"] for r in replies if r.status_code == 200)
        assert len(hooks.jobs(app.name)) == 1


# -- 6. unauthenticated deliveries are cheap to refuse ----------------------------------------------
def _raw_reply(stack: SingleBox, head: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send a request head (and at most ``body``), then read the reply without sending the rest.

    A server that waited for the declared body would never answer: the read times out and the
    test fails, so a reply proves the API refused it from the headers alone.
    """
    with socket.create_connection(("127.0.0.1", stack.ports.api), timeout=30) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload or b"{}")


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _head(**headers: str) -> str:
    lines = ["POST /hooks/github HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def test_a_20_mb_delivery_with_no_or_a_malformed_signature_is_refused_before_its_body_is_read(
    stack: SingleBox,
) -> None:
    twenty_mb = str(20 * 1024 * 1024)
    delivery = str(uuid.uuid4())
    first_bytes = b'{"pad": "' + b"x" * 65536  # a start of the body, nowhere near all of it

    status, reply = _raw_reply(
        stack, _head(X_GitHub_Event="push", X_GitHub_Delivery=delivery, Content_Length=twenty_mb), first_bytes
    )
    assert status == 401 and "X-Hub-Signature-256" in reply["message"], reply
    for malformed in ("sha256=nothex", "sha1=" + "0" * 40, "sha256=" + "0" * 63):
        status, reply = _raw_reply(
            stack,
            _head(
                X_GitHub_Event="push",
                X_GitHub_Delivery=delivery,
                X_Hub_Signature_256=malformed,
                Content_Length=twenty_mb,
            ),
        )
        assert status == 401, (malformed, reply)

    well_formed = "sha256=" + "0" * 64  # right shape, wrong value: refusing it needs the body
    status, reply = _raw_reply(
        stack,
        _head(
            X_GitHub_Event="issues",
            X_GitHub_Delivery=delivery,
            X_Hub_Signature_256=well_formed,
            Content_Length=twenty_mb,
        ),
    )
    assert status == 400 and "unsupported" in reply["message"], reply
    status, reply = _raw_reply(
        stack, _head(X_GitHub_Event="push", X_Hub_Signature_256=well_formed, Content_Length=twenty_mb)
    )
    assert status == 400 and "X-GitHub-Delivery" in reply["message"], reply
    status, reply = _raw_reply(
        stack,
        _head(
            X_GitHub_Event="push",
            X_GitHub_Delivery=delivery,
            X_Hub_Signature_256=well_formed,
            Content_Length=str(stack.settings.webhook_max_bytes + 1),
        ),
    )
    assert status == 413, reply
    status, reply = _raw_reply(
        stack,
        _head(
            X_GitHub_Event="push",
            X_GitHub_Delivery=delivery,
            X_Hub_Signature_256=well_formed,
            Transfer_Encoding="chunked",
        ),
    )
    assert status == 411 and "Content-Length" in reply["message"], reply
