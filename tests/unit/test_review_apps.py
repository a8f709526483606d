"""Review apps offline: the pull_request boundary, the TTL rule, and how a delivery merges
into a pull request's record."""

from __future__ import annotations

import pytest

from billowin.errors import InvalidInput
from billowin.pipeline.webhooks import PullRequestEvent, Skipped, github_event
from billowin.review.apps import merged
from billowin.review.model import Forks, PullState, check_parent_name, parse_ttl
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
