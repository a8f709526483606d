"""Pipeline job records: ids that never collide, followers that see steps at once, open-job discovery."""

from __future__ import annotations

import threading
import time

from billowin.errors import BillowinError
from billowin.pipeline.jobs import Job, JobKind, JobState, JobStore
from billowin.pipeline.lock import AppLock
from tests.fakes import InMemoryKV

SHA = "a" * 40


def _create_concurrently(store: JobStore, threads: int, each: int) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    errors: list[str] = []
    guard = threading.Lock()
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(each):
            try:
                job = store.create("shop", SHA)
            except BillowinError as exc:
                with guard:
                    errors.append(exc.message)
                continue
            with guard:
                ids.append(job.id)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    return ids, errors


def test_concurrent_deploys_of_one_app_get_distinct_consecutive_ids_and_are_all_kept() -> None:
    store = JobStore(InMemoryKV())
    ids, errors = _create_concurrently(store, threads=8, each=25)
    assert errors == []
    assert sorted(ids) == [f"{n:08d}" for n in range(1, 201)]
    stored = store.list("shop")
    assert [j.id for j in stored] == sorted(ids)
    assert all(j.state == JobState.QUEUED and j.steps[0].message.startswith("queued:") for j in stored)


def test_interleaved_writers_never_share_an_id_or_leave_a_gap() -> None:
    """Even when every writer is overtaken between its read and its write, ids stay unique."""
    store = JobStore(InMemoryKV(between_read_and_write=lambda: time.sleep(0)))
    ids, errors = _create_concurrently(store, threads=8, each=25)
    assert len(ids) == len(set(ids))
    assert sorted(ids) == [f"{n:08d}" for n in range(1, len(ids) + 1)]
    assert len(store.list("shop")) == len(ids)
    assert len(ids) + len(errors) == 200


def test_eight_concurrent_writers_at_consul_latency_all_get_their_job_queued() -> None:
    """A ~1 ms round trip between read and write (any real Consul): jittered backoff and enough
    tries keep every create of 8 concurrent writers for one app from giving up."""
    store = JobStore(InMemoryKV(between_read_and_write=lambda: time.sleep(0.001)))
    ids, errors = _create_concurrently(store, threads=8, each=25)
    assert errors == [], f"{len(errors)} of 200 creates failed: {errors[0]}"
    assert len(ids) == 200


def test_ids_are_per_app() -> None:
    store = JobStore(InMemoryKV())
    assert store.create("shop", SHA).id == "00000001"
    assert store.create("blog", SHA).id == "00000001"
    assert store.create("shop", SHA).id == "00000002"


def test_a_queued_job_says_what_it_will_do_and_who_asked() -> None:
    store = JobStore(InMemoryKV())
    job = store.create("shop", kind=JobKind.ROLLBACK, rollback_to=3, source="api")
    assert store.get("shop", job.id) == job
    assert job.steps[0].message == "queued: roll back to v3 (api)"
    assert store.get("shop", "99999999") is None


def test_a_follower_sees_a_new_step_as_soon_as_it_is_saved() -> None:
    kv = InMemoryKV()
    store = JobStore(kv)
    job = store.create("shop", SHA)

    def worker_moves_it() -> None:
        moved = store.get("shop", job.id)
        assert moved is not None
        moved.move(JobState.BUILDING, "building")
        store.save(moved)

    timer = threading.Timer(0.05, worker_moves_it)
    started = time.monotonic()
    timer.start()
    seen = store.wait("shop", job.id, steps_seen=1, timeout=20)
    elapsed = time.monotonic() - started
    timer.join()
    assert seen is not None and seen.state == JobState.BUILDING and len(seen.steps) == 2
    assert elapsed < 5, "wait returned on the change, not at its timeout"
    assert kv.waits >= 1, "it blocked on the store instead of polling"


def test_a_follower_gets_the_unchanged_job_back_at_the_timeout() -> None:
    store = JobStore(InMemoryKV(max_wait=0.05))
    job = store.create("shop", SHA)
    started = time.monotonic()
    seen = store.wait("shop", job.id, steps_seen=1, timeout=0.2)
    elapsed = time.monotonic() - started
    assert seen is not None and len(seen.steps) == 1 and seen.state == JobState.QUEUED
    assert 0.15 <= elapsed < 2


def test_following_a_finished_or_missing_job_answers_at_once() -> None:
    store = JobStore(InMemoryKV())
    job = store.create("shop", SHA)
    job.move(JobState.FAILED, "broken")
    store.save(job)
    started = time.monotonic()
    done = store.wait("shop", job.id, steps_seen=99, timeout=20)
    assert done is not None and done.state == JobState.FAILED
    assert store.wait("shop", "00000042", steps_seen=0, timeout=20) is None
    assert time.monotonic() - started < 2


def test_a_change_to_any_apps_job_wakes_the_pipeline_watch() -> None:
    store = JobStore(InMemoryKV())
    index = store.watch(None)
    timer = threading.Timer(0.05, store.create, args=("blog", SHA))
    started = time.monotonic()
    timer.start()
    assert store.watch(index, wait="20s") > index
    timer.join()
    assert time.monotonic() - started < 5


def _finish(store: JobStore, job: Job, state: JobState) -> None:
    job.move(state, state.value)
    store.save(job)


def test_only_apps_with_unfinished_jobs_are_open() -> None:
    kv = InMemoryKV()
    store = JobStore(kv)
    store.create("queued", SHA)
    _finish(store, store.create("live", SHA), JobState.LIVE)
    _finish(store, store.create("failed", SHA), JobState.FAILED)
    _finish(store, store.create("superseded", SHA), JobState.SUPERSEDED)
    _finish(store, store.create("interrupted", SHA), JobState.DEPLOYING)
    # A held lock and the id counter live under the same prefix: they are not jobs.
    kv.kv_acquire(AppLock.key("live"), kv.session_create("w"))
    assert store.apps_with_open_jobs() == {"queued", "interrupted"}


def test_deleting_an_apps_jobs_leaves_other_apps_alone() -> None:
    store = JobStore(InMemoryKV())
    store.create("shop", SHA)
    store.create("blog", SHA)
    store.delete("shop")
    assert store.list("shop") == []
    assert [j.app for j in store.list("blog")] == ["blog"]
    assert store.apps_with_open_jobs() == {"blog"}
