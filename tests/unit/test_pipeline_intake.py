"""Webhook intake: each delivery is acted on once, redeliveries of failed ones again, for the right apps."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import pytest

from billowin.apps.store import App, AppStore, DeployOn
from billowin.errors import ServiceError
from billowin.pipeline.intake import Intake
from billowin.pipeline.jobs import Job, JobState, JobStore
from billowin.pipeline.webhooks import CodeEvent
from billowin.ports import KVWrite
from tests.fakes import InMemoryKV

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER_SHA = "f" * 40
REPO = "acme/shop"


def _intake(*apps: App, kv: InMemoryKV | None = None) -> Intake:
    kv = kv or InMemoryKV()
    store = AppStore(kv)
    for app in apps:
        store.create(app)
    return Intake(store, JobStore(kv))


def _app(name: str = "shop", **fields: object) -> App:
    return App.model_validate(
        {"name": name, "repository": f"https://github.com/{REPO}", "github_repo": REPO, **fields}
    )


def push(
    branch: str | None = "main", *, repo: str = REPO, delivery: str | None = "d-1", sha: str = SHA
) -> CodeEvent:
    return CodeEvent("push", "push", repo, branch, sha, delivery=delivery)


def ci(
    passed: bool = True,
    *,
    source: str = "workflow_run",
    workflow: str | None = "CI",
    branch: str | None = "main",
    delivery: str | None = None,
    sha: str = SHA,
) -> CodeEvent:
    return CodeEvent("ci", source, REPO, branch, sha, ci_passed=passed, workflow=workflow, delivery=delivery)


def _fail_all(intake: Intake, jobs: list[Job]) -> None:
    for job in jobs:
        job.move(JobState.FAILED, "the build failed")
        intake.jobs.save(job)


def _apps(jobs: list[Job]) -> list[str]:
    return [j.app for j in jobs]


# -- delivery claims ----------------------------------------------------------------------------
def test_a_new_delivery_is_claimed_once_and_a_replay_is_a_duplicate() -> None:
    intake = _intake(_app())
    first = intake.deliver(push())
    assert not first.duplicate and _apps(first.jobs) == ["shop"]
    again = intake.deliver(push())
    assert again.duplicate and again.jobs == [], "a replay of the same delivery id is refused"
    assert len(intake.jobs.list("shop")) == 1


def test_events_without_a_delivery_id_are_always_processed() -> None:
    intake = _intake(_app())
    assert len(intake.deliver(push(delivery=None)).jobs) == 1
    assert len(intake.deliver(push(delivery=None)).jobs) == 1


class _ReadCountingKV(InMemoryKV):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.transactions = 0

    def kv_get(self, key: str) -> tuple[int, bytes | None]:
        self.reads.append(key)
        return super().kv_get(key)

    def kv_txn(self, writes: Sequence[KVWrite]) -> bool:
        self.transactions += 1
        return super().kv_txn(writes)


def test_a_new_delivery_is_claimed_without_reading_its_record_first() -> None:
    """The claim is one transaction (check-and-set 0); only a lost one reads the record."""
    kv = _ReadCountingKV()
    intake = _intake(_app(), kv=kv)
    assert intake.deliver(push(branch="feature")).jobs == []  # no app follows it: nothing else read
    assert kv.reads == [] and kv.transactions == 1
    assert intake.deliver(push(branch="feature")).duplicate
    assert kv.reads == [Intake.delivery_key("d-1")] and kv.transactions == 2
    kv.reads.clear()
    assert len(intake.deliver(push(delivery="d-2")).jobs) == 1
    assert Intake.delivery_key("d-2") not in kv.reads, "only the app's job id counter is read"


def test_the_delivery_record_lists_its_jobs_as_json() -> None:
    intake = _intake(_app("shop"), _app("blog"))
    jobs = intake.deliver(push()).jobs
    _, raw = intake.jobs.kv.kv_get(Intake.delivery_key("d-1"))
    assert raw is not None and sorted(json.loads(raw)) == sorted(f"{j.app}/{j.id}" for j in jobs)


def test_a_replay_while_the_first_jobs_still_run_is_a_duplicate() -> None:
    intake = _intake(_app())
    (job,) = intake.deliver(push()).jobs
    job.move(JobState.BUILDING, "building")
    intake.jobs.save(job)
    assert intake.deliver(push()).duplicate
    job.move(JobState.LIVE, "v1 is live")
    intake.jobs.save(job)
    assert intake.deliver(push()).duplicate, "a delivery that deployed is never deployed again"


def test_a_redelivery_after_its_job_failed_is_processed_again() -> None:
    intake = _intake(_app())
    _fail_all(intake, intake.deliver(push()).jobs)
    again = intake.deliver(push())
    assert [j.id for j in again.jobs] == ["00000002"]
    assert intake.deliver(push()).duplicate, "the new job is not failed: a further replay is a duplicate"


def _concurrently(intake: Intake, event: CodeEvent, n: int = 2) -> list[bool]:
    """``n`` deliveries of ``event`` at once; whether each queued (True) or was a duplicate."""
    start = threading.Barrier(n)
    results: list[bool] = []
    guard = threading.Lock()

    def deliver() -> None:
        start.wait()
        outcome = intake.deliver(event)
        with guard:
            results.append(not outcome.duplicate)

    threads = [threading.Thread(target=deliver, name=f"redeliver-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_concurrent_deliveries_of_one_id_queue_its_jobs_exactly_once() -> None:
    for _ in range(10):
        intake = _intake(_app("shop"), _app("blog"))
        assert sorted(_concurrently(intake, push(), n=4)) == [False, False, False, True]
        assert len(intake.jobs.list("shop")) == 1 and len(intake.jobs.list("blog")) == 1


def test_of_two_concurrent_redeliveries_of_a_failed_delivery_only_one_wins() -> None:
    for _ in range(20):
        intake = _intake(_app())
        _fail_all(intake, intake.deliver(push()).jobs)
        assert sorted(_concurrently(intake, push())) == [False, True]
        assert len(intake.jobs.list("shop")) == 2


def test_two_redeliveries_overtaking_each_other_still_claim_once() -> None:
    """Both read the failed jobs before either writes: the loser's transaction fails, and on its
    retry it finds the winner's queued job, so it answers duplicate."""
    kv = InMemoryKV()
    intake = _intake(_app(), kv=kv)
    _fail_all(intake, intake.deliver(push()).jobs)
    start = threading.Barrier(2)
    first_reads: set[str] = set()

    def in_lock_step() -> None:  # both redeliveries finish their first read before either writes
        name = threading.current_thread().name
        if name.startswith("redeliver") and name not in first_reads:
            first_reads.add(name)
            start.wait(timeout=5)

    kv.between_read_and_write = in_lock_step
    assert sorted(_concurrently(intake, push())) == [False, True]
    assert len(intake.jobs.list("shop")) == 2


def test_a_delivery_that_queued_nothing_is_a_duplicate_when_redelivered() -> None:
    intake = _intake(_app())
    assert intake.deliver(push("feature", delivery="d-9")).jobs == []
    assert intake.deliver(push("feature", delivery="d-9")).duplicate


def test_a_redelivery_is_processed_again_when_every_app_it_deployed_failed() -> None:
    """The record is JSON and read as JSON: the second app's ref has no stray space."""
    intake = _intake(_app("shop"), _app("blog"))
    jobs = intake.deliver(push()).jobs
    assert sorted(_apps(jobs)) == ["blog", "shop"]
    _fail_all(intake, jobs)
    again = intake.deliver(push())
    assert not again.duplicate and sorted(_apps(again.jobs)) == ["blog", "shop"]


def test_a_record_that_is_not_a_list_of_job_refs_is_never_acted_on_twice() -> None:
    intake = _intake(_app())
    for raw in (b"not json", b'{"a": 1}', b'["no-slash"]', b"[1, 2]", b'["../../x/1"]'):
        intake.jobs.kv.kv_put(Intake.delivery_key("d-odd"), raw)
        assert intake.deliver(push(delivery="d-odd")).duplicate


class _FailingKV(InMemoryKV):
    """A Consul that goes away for the next ``failures`` transactions (the API crashing there is
    the same: a transaction either happened whole or not at all)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def kv_txn(self, writes: Sequence[KVWrite]) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise ServiceError("consul", "cannot reach http://127.0.0.1:8500")
        return super().kv_txn(writes)


def test_a_redelivery_after_queueing_failed_half_way_is_processed() -> None:
    kv = _FailingKV(failures=1)
    intake = _intake(_app("shop"), _app("blog"), kv=kv)
    with pytest.raises(ServiceError):
        intake.deliver(push())
    assert kv.kv_get(Intake.delivery_key("d-1")) == (0, None), "no claim was left behind"
    assert intake.jobs.list("shop") == [] and intake.jobs.list("blog") == []
    again = intake.deliver(push())
    assert not again.duplicate, "the redelivery of a delivery that queued nothing due to an error"
    assert sorted((j.app, j.id) for j in again.jobs) == [("blog", "00000001"), ("shop", "00000001")]


# -- which apps an event deploys -------------------------------------------------------------------
def test_a_push_deploys_only_apps_following_that_repository_and_branch() -> None:
    intake = _intake(
        _app("shop"),
        _app("staging", branch="develop"),
        _app("other", github_repo="acme/other"),
        _app("local", github_repo=None),
        _app("waits", deploy_on=DeployOn.CI),
    )
    jobs = intake.deliver(push("main")).jobs
    assert _apps(jobs) == ["shop"]
    (job,) = jobs
    assert (job.sha, job.branch, job.repository, job.source, job.delivery) == (
        SHA,
        "main",
        REPO,
        "push",
        "d-1",
    )
    assert _apps(intake.deliver(push("develop", delivery="d-2")).jobs) == ["staging"]
    assert intake.deliver(push("main", repo="acme/unknown", delivery="d-3")).jobs == []


def test_a_push_to_a_tag_deploys_nothing() -> None:
    intake = _intake(_app())
    assert intake.deliver(push(None)).jobs == []


def test_a_delivery_signed_with_an_apps_own_secret_acts_for_that_app_only() -> None:
    intake = _intake(_app("shop"), _app("blog"))
    assert _apps(intake.deliver(push(delivery="d-a"), only={"shop"}).jobs) == ["shop"]
    assert intake.jobs.list("blog") == []
    assert intake.deliver(push(delivery="d-b"), only=set()).jobs == []
    assert sorted(_apps(intake.deliver(push(delivery="d-c"), only=None).jobs)) == ["blog", "shop"]


def test_ci_apps_deploy_only_when_ci_passed() -> None:
    intake = _intake(_app("shop", deploy_on=DeployOn.CI), _app("pushy"))
    assert intake.deliver(ci(passed=False)).jobs == []
    jobs = intake.deliver(ci(passed=True)).jobs
    assert _apps(jobs) == ["shop"], "push apps ignore CI results"
    assert jobs[0].source == "workflow_run"


def test_ci_apps_ignore_pushes() -> None:
    intake = _intake(_app("shop", deploy_on=DeployOn.CI))
    assert intake.deliver(push()).jobs == []


def test_a_ci_workflow_filter_keeps_other_workflows_from_deploying() -> None:
    intake = _intake(_app("shop", deploy_on=DeployOn.CI, ci_workflow="Deploy checks"))
    assert intake.deliver(ci(workflow="Lint")).jobs == []
    assert _apps(intake.deliver(ci(workflow="Deploy checks")).jobs) == ["shop"]


def test_a_ci_result_for_another_branch_or_without_a_branch_deploys_nothing() -> None:
    intake = _intake(_app("shop", deploy_on=DeployOn.CI))
    assert intake.deliver(ci(branch="feature")).jobs == []
    assert intake.deliver(ci(branch=None)).jobs == []
    assert _apps(intake.deliver(ci(source="travis", workflow=None)).jobs) == ["shop"]


def test_a_check_suite_deploys_only_the_sha_the_branch_was_last_pushed_to() -> None:
    """A check suite names no head repository: a fork's SHA must not ride on the branch name."""
    intake = _intake(_app("shop", deploy_on=DeployOn.CI), _app("pushy"))
    suite = ci(source="check_suite", workflow=None)
    assert intake.deliver(suite).jobs == [], "nothing was pushed yet"
    intake.deliver(push(delivery="d-push"))  # a ci app queues nothing for it, but it is recorded
    assert intake.pushed("shop") == ("main", SHA) and intake.pushed("pushy") == ("main", SHA)
    assert _apps(intake.deliver(suite).jobs) == ["shop"]
    assert intake.deliver(ci(source="check_suite", workflow=None, sha=OTHER_SHA)).jobs == []
    intake.deliver(push(delivery="d-newer", sha=OTHER_SHA))
    assert intake.deliver(suite).jobs == [], "an older SHA is not the branch's last push any more"
    assert intake.deliver(ci(source="check_suite", workflow=None, branch="feature", sha=OTHER_SHA)).jobs == []


def test_a_push_to_another_branch_or_for_another_app_records_nothing() -> None:
    intake = _intake(_app("shop", deploy_on=DeployOn.CI), _app("blog", deploy_on=DeployOn.CI))
    intake.deliver(push("feature", delivery="d-f"))
    intake.deliver(push(delivery="d-a"), only={"blog"})
    assert intake.pushed("shop") is None and intake.pushed("blog") == ("main", SHA)


def test_deliver_can_be_given_the_apps_already_read() -> None:
    intake = _intake(_app("shop"))
    only = [_app("blog")]  # not even stored: deliver trusts the list it is given
    assert _apps(intake.deliver(push(), only).jobs) == ["blog"]
    assert intake.jobs.list("shop") == []
