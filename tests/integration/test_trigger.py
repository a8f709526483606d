"""Trigger: signed GitHub and Travis webhooks drive the durable pipeline end to end.

A local git repository holds a sample app; GitHub's own example payloads,
with only the repository, ref and SHA changed, are signed and posted to the
stack's API. Commit statuses go to a fake GitHub that checks every request
against GitHub's OpenAPI description.
"""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from billowin.apps.store import App, DeployOn
from billowin.pipeline.webhooks import github_signature
from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.gitrepo import commit
from tests.testdata import webhook_example

from .conftest import WEBHOOK_SECRET, wait_for
from .fake_github import FakeGitHub
from .test_build import APPS

TERMINAL = {"live", "failed", "superseded"}


class Hooks:
    def __init__(self, stack: SingleBox) -> None:
        self.api = f"http://127.0.0.1:{stack.ports.api}"
        self.router = f"http://127.0.0.1:{stack.ports.router_http}"
        token = System(stack.settings).tokens.create("trigger tests")
        self.auth = {"Authorization": f"Bearer {token}"}

    def github(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        delivery: str | None = None,
        secret: str = WEBHOOK_SECRET,
        body: bytes | None = None,
    ) -> httpx.Response:
        raw = body if body is not None else json.dumps(payload).encode()
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": github_signature(secret.encode(), raw),
            "Content-Type": "application/json",
        }
        return httpx.post(f"{self.api}/hooks/github", content=raw, headers=headers, timeout=10)

    def jobs(self, app: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.api}/pipeline/{app}/jobs", headers=self.auth, timeout=10)
        resp.raise_for_status()
        return list(resp.json())

    def wait_job(self, app: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = next((j for j in self.jobs(app) if j["id"] == job_id), None)
            return job if job and job["state"] in TERMINAL else None

        result: dict[str, Any] = wait_for(done, timeout, f"job {job_id} of {app} to finish")
        return result

    def page(self, app: str) -> str | None:
        try:
            resp = httpx.get(self.router, headers={"Host": f"{app}.localhost"}, timeout=5)
        except httpx.HTTPError:
            return None
        return resp.text if resp.status_code == 200 else None


@pytest.fixture
def hooks(stack: SingleBox) -> Hooks:
    return Hooks(stack)


@pytest.fixture
def app_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "ruby-app"
    shutil.copytree(APPS / "ruby", repo)
    return repo


@pytest.fixture
def make_app(stack: SingleBox, app_name: str, app_repo: Path, cleanup_apps):  # type: ignore[no-untyped-def]
    def make(**fields: Any) -> App:
        cleanup_apps.append(app_name)
        app = App(name=app_name, repository=str(app_repo), github_repo=f"acme/{app_name}", **fields)
        return System(stack.settings).apps.create(app)

    return make


def push_payload(app: App, sha: str, branch: str = "main") -> dict[str, Any]:
    payload = webhook_example("push")
    payload["ref"] = f"refs/heads/{branch}"
    payload["after"] = sha
    payload["deleted"] = False
    payload["repository"] = {**payload["repository"], "full_name": app.github_repo, "name": app.name}
    return payload


def workflow_run_payload(
    app: App,
    sha: str,
    conclusion: str,
    *,
    head_repository: str | None = None,
    event: str = "push",
    branch: str = "main",
) -> dict[str, Any]:
    """A completed run; by default one a push to the app's own repository triggered (the only
    kind that deploys). ``head_repository``/``event`` make a fork's or a pull request's run."""
    payload = webhook_example("workflow_run", "completed")
    run = payload["workflow_run"]
    payload["workflow_run"] = {
        **run,
        "head_sha": sha,
        "head_branch": branch,
        "conclusion": conclusion,
        "status": "completed",
        "event": event,
        "head_repository": {**run["head_repository"], "full_name": head_repository or app.github_repo},
    }
    payload["repository"] = {**payload["repository"], "full_name": app.github_repo}
    return payload


def travis_notification(app: App, sha: str, *, build: int = 4242, type: str = "push") -> dict[str, Any]:
    return {
        "id": build,
        "type": type,
        "pull_request": type == "pull_request",
        "state": "passed",
        "status_message": "Passed",
        "branch": "main",
        "commit": sha,
        "repository": {"owner_name": "acme", "name": app.name},
    }


def travis_post(hooks: Hooks, key: rsa.RSAPrivateKey, notification: dict[str, Any]) -> httpx.Response:
    payload = json.dumps(notification)
    signature = base64.b64encode(
        key.sign(payload.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - Travis signs with SHA-1
    ).decode()
    headers = {"Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    return httpx.post(
        f"{hooks.api}/hooks/travis", content=urlencode({"payload": payload}), headers=headers, timeout=10
    )


def set_greeting(repo: Path, text: str) -> None:
    app_rb = repo / "app.rb"
    app_rb.write_text(app_rb.read_text().replace("Hello from Ruby on Billowin", text))


def test_a_signed_push_deploys_and_a_second_push_replaces_it(
    hooks: Hooks, make_app, app_repo: Path, fake_github: FakeGitHub
) -> None:
    app = make_app()
    sha1 = commit(app_repo)
    resp = hooks.github("push", push_payload(app, sha1))
    assert resp.status_code == 202, resp.text
    (queued,) = resp.json()["jobs"]
    job = hooks.wait_job(app.name, queued["id"])
    assert job["state"] == "live", job
    assert wait_for(lambda: hooks.page(app.name), 30, "v1 to be served") == "Hello from Ruby on Billowin\n"

    set_greeting(app_repo, "Second push")
    sha2 = commit(app_repo, "second")
    job2 = hooks.wait_job(app.name, hooks.github("push", push_payload(app, sha2)).json()["jobs"][0]["id"])
    assert job2["state"] == "live", job2
    assert wait_for(lambda: hooks.page(app.name) == "Second push\n", 30, "v2 to be served")

    # GitHub was told, with requests GitHub's OpenAPI description accepts.
    assert fake_github.violations == []
    states = [s["state"] for s in fake_github.statuses(sha2)]
    assert states[0] == "pending" and states[-1] == "success", states
    assert fake_github.statuses(sha2)[-1]["target_url"].endswith(f"/pipeline/{app.name}/jobs/{job2['id']}")
    log = httpx.get(
        f"{hooks.api}/pipeline/{app.name}/jobs/{job2['id']}/log", headers=hooks.auth, timeout=10
    ).text
    assert "building" in log and "Pushed" in log


def test_waiting_for_ci_deploys_only_what_passed(
    hooks: Hooks, make_app, app_repo: Path, travis_key: rsa.RSAPrivateKey
) -> None:
    app = make_app(deploy_on=DeployOn.CI)
    sha = commit(app_repo)
    resp = hooks.github("push", push_payload(app, sha))
    assert resp.status_code == 202 and "nothing to deploy" in resp.json()["message"]
    assert hooks.jobs(app.name) == []

    failed = hooks.github("workflow_run", workflow_run_payload(app, sha, "failure"))
    assert "nothing to deploy" in failed.json()["message"]
    assert hooks.jobs(app.name) == []

    ok = hooks.github("workflow_run", workflow_run_payload(app, sha, "success"))
    assert ok.status_code == 202, ok.text
    assert hooks.wait_job(app.name, ok.json()["jobs"][0]["id"])["state"] == "live"
    assert wait_for(lambda: hooks.page(app.name), 30, "the app to be served")

    # Travis: a passed build of the next commit, signed with the configured key, deploys it.
    set_greeting(app_repo, "Passed on Travis")
    sha2 = commit(app_repo, "travis")
    notification = travis_notification(app, sha2)
    payload = json.dumps(notification)
    signature = base64.b64encode(
        travis_key.sign(payload.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - Travis signs with SHA-1
    ).decode()
    form = urlencode({"payload": payload})
    headers = {"Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    forged = httpx.post(
        f"{hooks.api}/hooks/travis",
        content=form,
        timeout=10,
        headers={**headers, "Signature": base64.b64encode(b"x" * 256).decode()},
    )
    assert forged.status_code == 401
    resp = httpx.post(f"{hooks.api}/hooks/travis", content=form, headers=headers, timeout=10)
    assert resp.status_code == 202, resp.text
    assert hooks.wait_job(app.name, resp.json()["jobs"][0]["id"])["state"] == "live"
    assert wait_for(
        lambda: hooks.page(app.name) == "Passed on Travis\n", 30, "the Travis commit to be served"
    )


def test_a_broken_push_fails_reports_it_and_the_previous_release_keeps_serving(
    hooks: Hooks, make_app, app_repo: Path, fake_github: FakeGitHub
) -> None:
    app = make_app()
    good = commit(app_repo)
    assert (
        hooks.wait_job(app.name, hooks.github("push", push_payload(app, good)).json()["jobs"][0]["id"])[
            "state"
        ]
        == "live"
    )
    assert wait_for(lambda: hooks.page(app.name), 30, "the good release to be served")

    (app_repo / "app.rb").write_text("class App < Sinatra::Base\n  get '/' do\n    'broken'\n")  # no `end`
    bad = commit(app_repo, "broken")
    delivery = str(uuid.uuid4())
    job = hooks.wait_job(
        app.name, hooks.github("push", push_payload(app, bad), delivery=delivery).json()["jobs"][0]["id"]
    )
    assert job["state"] == "failed"
    assert "app.rb" in job["reason"], job["reason"]
    assert hooks.page(app.name) == "Hello from Ruby on Billowin\n"
    final = fake_github.statuses(bad)[-1]
    assert final["state"] == "failure" and "app.rb" in final["description"]
    assert fake_github.violations == []

    # A manual redelivery of the failed delivery is processed again.
    redelivered = hooks.github("push", push_payload(app, bad), delivery=delivery)
    assert redelivered.status_code == 202, redelivered.text
    assert hooks.wait_job(app.name, redelivered.json()["jobs"][0]["id"])["state"] == "failed"


def test_hostile_and_replayed_deliveries_are_refused_and_run_nothing(
    hooks: Hooks, make_app, app_repo: Path, stack: SingleBox
) -> None:
    app = make_app()
    sha = commit(app_repo)
    payload = push_payload(app, sha)

    # Forged: signed with another secret, or not signed at all.
    assert hooks.github("push", payload, secret="not the secret").status_code == 401
    unsigned = httpx.post(
        f"{hooks.api}/hooks/github",
        content=json.dumps(payload),
        headers={"X-GitHub-Event": "push"},
        timeout=10,
    )
    assert unsigned.status_code == 401
    # Oversized and malformed bodies.
    huge = b'{"pad": "' + b"x" * (26 * 1024 * 1024) + b'"}'
    assert hooks.github("push", {}, body=huge).status_code == 413
    malformed = hooks.github("push", {}, body=b'{"ref": "refs/heads/main", ')
    assert malformed.status_code == 400 and "JSON" in malformed.json()["message"]
    assert hooks.github("issues", payload).status_code == 400
    # A hostile branch name is refused at the door: never compared, run or fetched.
    pwned = Path("/tmp/pwned")
    pwned.unlink(missing_ok=True)
    hostile = hooks.github("push", push_payload(app, sha, branch="$(touch /tmp/pwned)"))
    assert hostile.status_code == 400 and "branch" in hostile.json()["message"], hostile.text
    with pytest.raises(ValueError, match="branch"):
        App(name="evil", repository="/tmp", branch="--upload-pack=touch /tmp/pwned")
    assert hooks.jobs(app.name) == []

    # A replayed delivery (same X-GitHub-Delivery) is accepted once.
    delivery = str(uuid.uuid4())
    first = hooks.github("push", payload, delivery=delivery)
    again = hooks.github("push", payload, delivery=delivery)
    assert first.status_code == 202 and again.status_code == 200
    assert "duplicate" in again.json()["message"]
    assert len(hooks.jobs(app.name)) == 1
    assert hooks.wait_job(app.name, first.json()["jobs"][0]["id"])["state"] == "live"
    assert not pwned.exists()


def test_killing_the_api_mid_build_ends_in_a_finished_deploy_not_a_hung_one(
    hooks: Hooks, make_app, app_repo: Path, stack: SingleBox
) -> None:
    app = make_app()
    sha = commit(app_repo)
    job_id = hooks.github("push", push_payload(app, sha)).json()["jobs"][0]["id"]
    wait_for(lambda: any(j["state"] == "building" for j in hooks.jobs(app.name)), 60, "the build to start")
    stack.restart("api", crash=True)  # SIGKILL mid-build, then a fresh start
    job = hooks.wait_job(app.name, job_id, timeout=300)
    assert job["state"] in ("live", "failed"), job
    assert job["state"] == "live", job  # resumed: builds are keyed by SHA
    assert any("resuming" in s["message"] for s in job["steps"]), job["steps"]
    assert wait_for(lambda: hooks.page(app.name), 30, "the app to be served")


def test_quick_successive_pushes_end_with_the_newest_live_and_none_lost(
    hooks: Hooks, make_app, app_repo: Path
) -> None:
    app = make_app()
    shas = []
    for n in range(3):
        set_greeting(app_repo, f"Push {n}")
        shas.append(commit(app_repo, f"push {n}"))
        app_rb = app_repo / "app.rb"
        app_rb.write_text(app_rb.read_text().replace(f"Push {n}", "Hello from Ruby on Billowin"))
    ids = [hooks.github("push", push_payload(app, sha)).json()["jobs"][0]["id"] for sha in shas]
    finished = [hooks.wait_job(app.name, job_id) for job_id in ids]
    assert finished[-1]["state"] == "live", finished[-1]
    assert all(j["state"] in ("live", "superseded") for j in finished), [j["state"] for j in finished]
    assert wait_for(lambda: hooks.page(app.name) == "Push 2\n", 30, "the newest push to be served")


def test_pipeline_endpoints_refuse_missing_wrong_and_guessed_tokens(
    hooks: Hooks, make_app, stack: SingleBox
) -> None:
    app = make_app()
    url = f"{hooks.api}/pipeline/{app.name}/jobs"
    good = hooks.auth["Authorization"].removeprefix("Bearer ")
    token_id = good.split("_")[1]
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": good},  # no scheme
        {"Authorization": f"Bearer bw_{token_id}_{'A' * 43}"},  # a real id, a guessed secret
        {"Authorization": f"Bearer bw_{'0' * 16}_{good.split('_', 2)[2]}"},  # the secret under another id
    ):
        resp = httpx.get(url, headers=headers, timeout=10)
        assert resp.status_code == 401, (headers, resp.text)
        assert "tokens:create" in resp.json()["hint"]
    assert httpx.get(url, headers=hooks.auth, timeout=10).status_code == 200
    # The token itself is stored only as a hash.
    stored = System(stack.settings).kv.kv_get(f"billowin/tokens/{token_id}")[1] or b""
    assert good.split("_", 2)[2].encode() not in stored
