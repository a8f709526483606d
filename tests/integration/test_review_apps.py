"""Review apps on the real stack: GitHub's own ``pull_request`` example payloads, signed and
posted to the API, become ``<app>-pr-<n>`` apps that are built, routed and destroyed for real.
GitHub's side is the fake that checks every call against GitHub's OpenAPI description.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from billowin.apps.store import App
from billowin.apps.tokens import Role
from billowin.errors import NotFound
from billowin.review.model import ReviewSettings
from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.gitrepo import commit
from tests.testdata import webhook_example

from .conftest import Cli, wait_for
from .fake_github import FakeGitHub
from .test_build import APPS
from .test_dashboard import browser  # noqa: F401 - the headless Chromium fixture
from .test_trigger import Hooks

# The page shows the review app's own config: GREETING, and whether the parent's secret leaked in.
APP_RB = """require "sinatra/base"

class App < Sinatra::Base
  set :host_authorization, { permitted_hosts: [] } if respond_to?(:host_authorization)

  get "/" do
    content_type "text/plain"
    "#{ENV.fetch("GREETING", "Hello")} #{ENV.fetch("PARENT_SECRET", "no-secret")}\\n"
  end
end
"""


class Reviews(Hooks):
    def __init__(self, stack: SingleBox) -> None:
        super().__init__(stack)
        self.system = System(stack.settings)

    def settings(self, app: str, **body: Any) -> dict[str, Any]:
        resp = httpx.put(f"{self.api}/apps/{app}/review-apps", json=body, headers=self.auth, timeout=10)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def listing(self, app: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.api}/apps/{app}/review-apps", headers=self.auth, timeout=10)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def pull_request(
        self, parent: App, action: str, number: int, sha: str, *, fork: str | None = None
    ) -> httpx.Response:
        payload = webhook_example("pull_request", action)
        pull = payload["pull_request"]
        base_repo = {**pull["base"]["repo"], "full_name": parent.github_repo}
        head_repo = {**pull["head"]["repo"], "full_name": fork or parent.github_repo}
        payload["number"] = number
        payload["pull_request"] = {
            **pull,
            "number": number,
            "head": {**pull["head"], "sha": sha, "ref": f"feature-{number}", "repo": head_repo},
            "base": {**pull["base"], "ref": "main", "repo": base_repo},
        }
        payload["repository"] = {**payload["repository"], "full_name": parent.github_repo}
        return self.github("pull_request", payload)

    def page_of(self, app: str) -> str | None:
        return self.page(app)

    def router_status(self, app: str) -> int:
        return httpx.get(self.router, headers={"Host": f"{app}.localhost"}, timeout=5).status_code

    def exists(self, app: str) -> bool:
        try:
            self.system.apps.get(app)
        except NotFound:
            return False
        return True

    def reconcile(self, parent: str) -> None:
        """One round of the reconciler, here and now (the API's own thread waits for its lock)."""
        reviews = self.system.review_apps
        with reviews.lock.hold(parent, wait=60) as held:
            assert held
            reviews.reconcile(parent)


@pytest.fixture
def reviews(stack: SingleBox) -> Reviews:
    return Reviews(stack)


@pytest.fixture
def parent(
    stack: SingleBox, app_name: str, tmp_path: Path, cleanup_apps: list[str]
) -> Iterator[tuple[App, Path]]:
    repo = tmp_path / "review-app"
    shutil.copytree(APPS / "ruby", repo)
    (repo / "app.rb").write_text(APP_RB)
    system = System(stack.settings)
    cleanup_apps.append(app_name)
    app = system.apps.create(App(name=app_name, repository=str(repo), github_repo=f"acme/{app_name}"))
    system.config.write(app_name, {"PARENT_SECRET": "parent-only-s3cret"})
    yield app, repo
    # Pass or fail: review apps off, so the API's reconciler destroys whatever is left.
    system.review_apps.store.save_settings(app_name, ReviewSettings(enabled=False))


def number() -> int:
    return uuid.uuid4().int % 90000 + 1000


def gone(reviews: Reviews, app: str) -> bool:
    s = reviews.system
    return (
        not reviews.exists(app)
        and s.nomad.current(app) is None
        and reviews.router_status(app) == 404
        and s.image_registry.tags(app) == []
        and s.config.latest(app) == (0, {})
        and s.releases.list(app) == []
    )


def test_a_pull_request_gets_a_review_app_that_follows_its_pushes_and_goes_when_it_closes(
    reviews: Reviews, parent: tuple[App, Path], fake_github: FakeGitHub
) -> None:
    app, repo = parent
    shown = reviews.settings(app.name, enabled=True, config={"GREETING": "Review"})
    assert shown["enabled"] and shown["config_keys"] == ["GREETING"]
    assert "Review" not in str(shown)  # a config value is never shown
    pr = number()
    review = f"{app.name}-pr-{pr}"

    sha1 = commit(repo, "first")
    resp = reviews.pull_request(app, "opened", pr, sha1)
    assert resp.status_code == 202 and resp.json()["review_apps"] == [review], resp.text
    # The parent's secret is not copied unless asked for.
    assert wait_for(lambda: reviews.page_of(review), 300, "the review app to serve") == "Review no-secret\n"
    listed = wait_for(
        lambda: (found := reviews.listing(app.name)["review_apps"]) and found[0]["state"] == "live" and found,
        120,
        "the review app listed live",
    )
    assert [(r["number"], r["app"], r["sha"], r["state"]) for r in listed] == [(pr, review, sha1, "live")]
    assert listed[0]["url"].startswith(f"http://{review}.")

    (repo / "app.rb").write_text(APP_RB.replace("no-secret", "second-push"))
    sha2 = commit(repo, "second")
    assert reviews.pull_request(app, "synchronize", pr, sha2).status_code == 202
    assert wait_for(
        lambda: reviews.page_of(review) == "Review second-push\n", 300, "the second push to be served"
    )
    assert [r.number for r in reviews.system.releases.list(review)] == [1, 2]  # its own history

    # GitHub was told: a deployment per SHA to the environment pr-<n>, each ending in success
    # with the review app's URL, and the commit statuses, all valid against GitHub's schema.
    deployments = fake_github.deployments(f"pr-{pr}")
    assert [body["ref"] for _, body in deployments] == [sha1, sha2]
    assert all(
        body["transient_environment"] and not body["production_environment"] for _, body in deployments
    )
    last = wait_for(
        lambda: (
            (s := fake_github.deployment_statuses(deployments[-1][0])) and s[-1]["state"] == "success" and s
        ),
        60,
        "the deployment's success",
    )
    assert last[-1]["environment_url"] == listed[0]["url"]
    assert [s["state"] for s in fake_github.statuses(sha2)][-1] == "success"

    assert reviews.pull_request(app, "closed", pr, sha2).status_code == 202
    assert wait_for(lambda: gone(reviews, review), 120, "the review app to be gone")
    assert reviews.listing(app.name)["review_apps"] == []
    assert wait_for(
        lambda: fake_github.deployment_statuses(deployments[-1][0])[-1]["state"] == "inactive",
        30,
        "the deployment marked inactive",
    )
    assert fake_github.violations == []


def test_a_forks_pull_request_builds_only_once_approved_and_never_gets_the_parents_secrets(
    reviews: Reviews, parent: tuple[App, Path], stack: SingleBox
) -> None:
    app, repo = parent
    reviews.settings(
        app.name, enabled=True, config_from=app.name, config={"GREETING": "Fork"}, forks="approve"
    )
    pr = number()
    review = f"{app.name}-pr-{pr}"
    sha = commit(repo, "from a fork")
    assert reviews.pull_request(app, "opened", pr, sha, fork="mallory/fork").status_code == 202

    reviews.reconcile(app.name)  # a whole round has looked at it: nothing was made
    assert not reviews.exists(review) and reviews.system.jobs.list(review) == []
    (listed,) = reviews.listing(app.name)["review_apps"]
    assert (listed["state"], listed["fork"], listed["head_repository"]) == (
        "awaiting approval",
        True,
        "mallory/fork",
    )

    system = reviews.system
    reader = system.tokens.create(f"read {app.name}", role=Role.READ, apps=[app.name])
    refused = httpx.post(
        f"{reviews.api}/apps/{app.name}/review-apps/{pr}/approve",
        headers={"Authorization": f"Bearer {reader}"},
        timeout=10,
    )
    assert refused.status_code == 403
    deployer = system.tokens.create(f"deploy {app.name}", role=Role.DEPLOY, apps=[app.name])
    approved = httpx.post(
        f"{reviews.api}/apps/{app.name}/review-apps/{pr}/approve",
        headers={"Authorization": f"Bearer {deployer}"},
        timeout=10,
    )
    assert approved.status_code == 200, approved.text
    # Approved, it builds and serves: with the settings' own config, never the parent's.
    assert (
        wait_for(lambda: reviews.page_of(review), 300, "the fork's review app to serve") == "Fork no-secret\n"
    )
    assert "PARENT_SECRET" not in system.config.latest(review)[1]

    # A later push to the fork waits for approval again; the approved commit keeps serving.
    (repo / "NOTES").write_text("a second commit\n")
    sha2 = commit(repo, "another fork push")
    assert reviews.pull_request(app, "synchronize", pr, sha2, fork="mallory/fork").status_code == 202
    reviews.reconcile(app.name)
    assert [j["sha"] for j in reviews.jobs(review)] == [sha]
    assert reviews.listing(app.name)["review_apps"][0]["state"] == "awaiting approval"
    assert reviews.page_of(review) == "Fork no-secret\n"

    reviews.settings(app.name, enabled=False)
    assert wait_for(lambda: gone(reviews, review), 120, "review apps off: the fork's app gone")


def test_beyond_max_the_oldest_goes_and_an_idle_one_goes_after_its_ttl(
    reviews: Reviews,
    parent: tuple[App, Path],
    cli: Cli,
    browser: webdriver.Chrome,  # noqa: F811 - the fixture imported above
) -> None:
    app, repo = parent
    said = cli("apps:review-apps", app.name, "--enable", "--max", "1", "--ttl", "0").stdout
    assert "review apps: on  max 1  ttl never  forks approve" in said, said
    first, second = number(), number()
    sha = commit(repo, "reviewed")
    assert reviews.pull_request(app, "opened", first, sha).status_code == 202
    assert wait_for(lambda: reviews.page_of(f"{app.name}-pr-{first}"), 300, "the first review app")

    assert reviews.pull_request(app, "opened", second, sha).status_code == 202
    assert wait_for(lambda: reviews.page_of(f"{app.name}-pr-{second}"), 300, "the second review app")
    assert wait_for(lambda: gone(reviews, f"{app.name}-pr-{first}"), 120, "the oldest one gone (max 1)")
    assert [r["number"] for r in reviews.listing(app.name)["review_apps"]] == [second]
    row = f"#{second}  {app.name}-pr-{second}  live  {sha[:7]}"
    listed = wait_for(
        lambda: (said := cli("review-apps", app.name).stdout) and row in said and said, 120, row
    )
    assert f"#{first}" not in listed

    # The app's dashboard page lists it too, with a link to it (in headless Chromium).
    browser.get(f"{reviews.api}/dashboard/login")
    browser.find_element(By.ID, "token").send_keys(cli.token)
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "apps")))
    browser.get(f"{reviews.api}/dashboard/apps/{app.name}")
    table = WebDriverWait(browser, 20).until(ec.presence_of_element_located((By.ID, "review-apps")))
    assert f"#{second}" in table.text and "live" in table.text and sha[:7] in table.text, table.text
    link = table.find_element(By.LINK_TEXT, f"{app.name}-pr-{second}")
    assert link.get_attribute("href").startswith(f"http://{app.name}-pr-{second}.")

    # Idle for longer than the TTL since its deploy: destroyed.
    cli("apps:review-apps", app.name, "--enable", "--ttl", "5s")
    assert wait_for(lambda: gone(reviews, f"{app.name}-pr-{second}"), 120, "the idle review app gone (TTL)")
    assert reviews.listing(app.name)["review_apps"] == []
