"""What runs next: the newest code wins, other changes all run in order, interrupted jobs resume once."""

from __future__ import annotations

from billowin.pipeline.jobs import Job, JobKind, JobState
from billowin.pipeline.planner import MAX_ATTEMPTS, plan


def job(n: int, kind: JobKind = JobKind.BUILD, state: JobState = JobState.QUEUED, attempts: int = 0) -> Job:
    return Job(id=f"{n:08d}", app="shop", kind=kind, sha=f"{n:040x}", state=state, attempts=attempts)


def ids(jobs: list[Job]) -> list[str]:
    return [j.id for j in jobs]


def test_nothing_queued_means_nothing_to_run() -> None:
    done = [job(1, state=JobState.LIVE), job(2, state=JobState.FAILED), job(3, state=JobState.SUPERSEDED)]
    out = plan(done)
    assert out.next is None and out.newest_code is None
    assert out.superseded == out.resume == out.give_up == []
    assert plan([]).next is None


def test_of_three_queued_builds_only_the_newest_runs() -> None:
    jobs = [job(1), job(2), job(3)]
    out = plan(jobs)
    assert out.next is jobs[2] and out.newest_code is jobs[2]
    assert ids(out.superseded) == ["00000001", "00000002"]


def test_an_image_deploy_and_a_build_supersede_each_other() -> None:
    out = plan([job(1, JobKind.IMAGE), job(2, JobKind.BUILD), job(3, JobKind.IMAGE)])
    assert ids(out.superseded) == ["00000001", "00000002"]
    assert out.next is not None and out.next.id == "00000003"


def test_config_domains_and_rollbacks_are_never_superseded_and_run_oldest_first() -> None:
    jobs = [
        job(1, JobKind.CONFIG),
        job(2, JobKind.BUILD),
        job(3, JobKind.DOMAINS),
        job(4, JobKind.BUILD),
        job(5, JobKind.ROLLBACK),
        job(6, JobKind.CONFIG),
    ]
    out = plan(jobs)
    assert ids(out.superseded) == ["00000002"]
    assert out.next is jobs[0]
    # As each finishes, the next oldest runs; the newest build keeps its place in line.
    order = []
    remaining = [j for j in jobs if j not in out.superseded]
    while (nxt := plan(remaining).next) is not None:
        order.append(nxt.id)
        remaining.remove(nxt)
    assert order == ["00000001", "00000003", "00000004", "00000005", "00000006"]


def test_finished_jobs_do_not_take_part() -> None:
    jobs = [job(1, state=JobState.LIVE), job(2, state=JobState.FAILED), job(3)]
    out = plan(jobs)
    assert out.superseded == [] and out.next is jobs[2]


def test_an_interrupted_job_is_resumed_once() -> None:
    for state in (JobState.BUILDING, JobState.DEPLOYING):
        interrupted = job(1, state=state, attempts=1)
        out = plan([interrupted])
        assert out.resume == [interrupted] and out.give_up == []
        assert out.next is interrupted


def test_an_interrupted_job_at_max_attempts_is_given_up() -> None:
    tired = job(1, JobKind.CONFIG, JobState.DEPLOYING, attempts=MAX_ATTEMPTS)
    queued = job(2, JobKind.DOMAINS)
    out = plan([tired, queued])
    assert out.give_up == [tired] and out.resume == []
    assert out.next is queued
    assert plan([job(1, state=JobState.BUILDING, attempts=5)], max_attempts=6).resume != []


def test_an_interrupted_build_is_superseded_by_a_newer_one() -> None:
    interrupted, newer = job(1, state=JobState.BUILDING, attempts=1), job(2)
    out = plan([interrupted, newer])
    assert out.resume == [interrupted]
    assert out.superseded == [interrupted]
    assert out.next is newer


def test_planning_changes_nothing() -> None:
    jobs = [job(1), job(2, state=JobState.BUILDING, attempts=2), job(3)]
    before = [j.model_copy(deep=True) for j in jobs]
    plan(jobs)
    assert jobs == before
