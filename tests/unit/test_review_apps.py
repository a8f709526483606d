"""Review apps offline: the pull_request boundary, the TTL rule, and how a delivery merges
into a pull request's record."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from billowin.apps.store import App
from billowin.errors import InvalidInput, NotFound, ServiceError
from billowin.pipeline.jobs import JobKind
from billowin.pipeline.webhooks import PullRequestEvent, Skipped, github_event
from billowin.review.apps import merged
from billowin.review.model import Forks, PullState, ReviewSettings, check_parent_name, parse_ttl
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import FakeScheduler, InMemoryConfig, InMemoryKV, RecordingDeployments
from tests.testdata import webhook_example

DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def pull(action: str, **head: object) -> PullRequestEvent:
    payload = webhook_example("pull_request", action)
    payload["pull_request"]["head"] = {**payload["pull_request"]["head"], **head}
    event = github_event("pull_request", payload, DELIVERY)
    assert isinstance(event, PullRequestEvent)
    return event


def test_a_pull_request_from_the_repository_itself_is_no_fork() -> None:
    event = pull("opened")
    assert (event.action, event.number, event.repository, event.fork) == (
        "opened",
        2,
        "Codertocat/Hello-World",
        False,
    )
    assert event.sha == webhook_example("pull_request", "opened")["pull_request"]["head"]["sha"]


def test_a_pull_request_from_another_repository_or_a_deleted_fork_is_a_fork() -> None:
    assert pull("opened", repo={"full_name": "mallory/Hello-World"}).fork
    assert pull("opened", repo=None).fork


@pytest.mark.parametrize(
    "head",
    [{"sha": "not-a-sha"}, {"ref": "--upload-pack=evil"}, {"ref": "a..b"}, {"repo": {"full_name": "../x"}}],
)
def test_unsafe_values_are_refused_at_the_boundary(head: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        pull("opened", **head)


def test_actions_review_apps_do_not_act_on_are_skipped() -> None:
    payload = webhook_example("pull_request", "opened")
    payload["action"] = "labeled"
    assert isinstance(github_event("pull_request", payload, DELIVERY), Skipped)


def test_ttl() -> None:
    assert [parse_ttl(t) for t in ("7d", "12h", "30m", "90s", "45", "0")] == [604800, 43200, 1800, 90, 45, 0]
    for bad in ("", "7w", "-1d", "1.5h", "d"):
        with pytest.raises(InvalidInput):
            parse_ttl(bad)


def test_a_name_too_long_for_its_review_apps_is_refused() -> None:
    check_parent_name("a" * 54)  # aaa…-pr-99999 is 63 characters
    with pytest.raises(InvalidInput, match="too long"):
        check_parent_name("a" * 55)


def test_a_push_keeps_what_was_done_and_a_fork_push_needs_approval_again() -> None:
    opened = merged(None, "web", pull("opened", repo={"full_name": "mallory/Hello-World"}))
    assert opened is not None and opened.waiting_for_approval(Forks.APPROVE)
    approved = opened.model_copy(update={"approved_sha": opened.sha, "queued_sha": opened.sha, "job_id": "7"})
    assert not approved.waiting_for_approval(Forks.APPROVE)
    assert approved.waiting_for_approval(Forks.DENY)
    pushed = merged(
        approved, "web", pull("synchronize", sha="b" * 40, repo={"full_name": "mallory/Hello-World"})
    )
    assert pushed is not None
    assert (pushed.sha, pushed.queued_sha, pushed.job_id, pushed.opened_at) == (
        "b" * 40,
        opened.sha,
        "7",
        opened.opened_at,
    )
    assert pushed.waiting_for_approval(Forks.APPROVE)
    closed = merged(pushed, "web", pull("closed"))
    assert closed is not None and closed.state == PullState.CLOSED
    assert merged(None, "web", pull("closed")) is None  # never seen open: nothing to record


# -- the reconciler, on the in-memory fakes ----------------------------------------------------------
def reviews_on_fakes(tmp_path: Path, github: RecordingDeployments) -> System:
    settings = Settings(state_dir=tmp_path, cache_dir=tmp_path, pipeline=False, monitoring=False)
    system = System(
        settings, kv=InMemoryKV(max_wait=0.1), nomad=FakeScheduler(), config=InMemoryConfig(), github=github
    )
    system.apps.create(App(name="web", repository="https://github.com/acme/web.git", github_repo="acme/web"))
    system.config.write("web", {"PARENT_SECRET": "s3cret"})
    return system


def event(action: str, sha: str, *, fork: bool = False, number: int = 7) -> PullRequestEvent:
    return PullRequestEvent(
        action=action,  # type: ignore[arg-type]
        repository="acme/web",
        number=number,
        sha=sha,
        head_branch=f"feature-{number}",
        head_repository="mallory/web" if fork else "acme/web",
        base_branch="main",
        delivery=str(uuid.uuid4()),
    )


def test_an_open_pull_request_becomes_an_app_with_a_build_and_a_close_takes_it_apart(tmp_path: Path) -> None:
    github = RecordingDeployments()
    system = reviews_on_fakes(tmp_path, github)
    reviews = system.review_apps
    reviews.configure("web", ReviewSettings(config={"GREETING": SecretStr("hi")}))
    parent = system.apps.get("web")

    opened = event("opened", "a" * 40)
    assert reviews.accept(opened, [parent], None).touched == ["web-pr-7"]
    assert reviews.accept(opened, [parent], None).duplicate  # the same delivery again
    reviews.reconcile("web")
    (job,) = system.jobs.list("web-pr-7")
    assert (job.sha, job.kind, job.source, job.repository) == (
        "a" * 40,
        JobKind.BUILD,
        "pull_request",
        "acme/web",
    )
    assert system.config.latest("web-pr-7")[1] == {"GREETING": "hi"}  # never the parent's
    assert github.created == [("acme/web", "a" * 40, "pr-7")]
    reviews.reconcile("web")  # nothing new: no second build
    assert len(system.jobs.list("web-pr-7")) == 1

    reviews.accept(event("closed", "a" * 40), [parent], None)
    reviews.reconcile("web")
    with pytest.raises(NotFound):
        system.apps.get("web-pr-7")
    assert system.config.latest("web-pr-7") == (0, {})
    assert github.statuses[-1] == (1, "inactive", None)
    assert reviews.view("web").review_apps == []


def test_a_github_that_refuses_never_stops_a_review_app(tmp_path: Path) -> None:
    system = reviews_on_fakes(tmp_path, RecordingDeployments(error=ServiceError("github", "HTTP 500")))
    reviews = system.review_apps
    reviews.configure("web", ReviewSettings())
    reviews.accept(event("opened", "b" * 40), [system.apps.get("web")], None)
    reviews.reconcile("web")
    assert [j.sha for j in system.jobs.list("web-pr-7")] == ["b" * 40]


def test_a_fork_waits_for_approval_and_a_deny_setting_refuses_it(tmp_path: Path) -> None:
    system = reviews_on_fakes(tmp_path, RecordingDeployments())
    reviews = system.review_apps
    reviews.configure("web", ReviewSettings(config_from="web"))
    reviews.accept(event("opened", "c" * 40, fork=True), [system.apps.get("web")], None)
    reviews.reconcile("web")
    with pytest.raises(NotFound):
        system.apps.get("web-pr-7")
    assert reviews.approve("web", 7).state == "queued"
    reviews.reconcile("web")
    assert [j.sha for j in system.jobs.list("web-pr-7")] == ["c" * 40]
    assert system.config.latest("web-pr-7") == (0, {})  # config_from is never a fork's

    reviews.configure("web", ReviewSettings(forks=Forks.DENY))
    with pytest.raises(InvalidInput, match="denies"):
        reviews.approve("web", 7)
    with pytest.raises(NotFound):
        reviews.approve("web", 8)


def test_settings_are_checked_before_they_are_stored(tmp_path: Path) -> None:
    system = reviews_on_fakes(tmp_path, RecordingDeployments())
    reviews = system.review_apps
    with pytest.raises(NotFound):
        reviews.configure("web", ReviewSettings(config_from="nosuchapp"))
    system.apps.create(App(name="local", repository="/srv/local"))
    with pytest.raises(InvalidInput, match="no GitHub repository"):
        reviews.configure("local", ReviewSettings())
    assert reviews.store.settings("web") is None
