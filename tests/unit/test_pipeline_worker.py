"""The pipeline worker on in-memory fakes: what each kind of job does, supersede, resume, locks, statuses.

Every test calls ``Worker.run_app`` synchronously (no watch threads), so what
happened is settled when it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from billowin.apps.store import App, AppStore
from billowin.build.builder import BuildRecord
from billowin.errors import BuildFailed, ServiceError
from billowin.pipeline.jobs import Job, JobKind, JobState, JobStore
from billowin.pipeline.lock import AppLock
from billowin.pipeline.worker import Worker
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import Release, ReleaseStatus, ReleaseStore
from billowin.settings import Settings
from tests.fakes import (
    BuildCall,
    FakeBuilder,
    FakeDeployer,
    FakeScheduler,
    InMemoryKV,
    RecordingStatuses,
    RollbackCall,
)

REPO = "acme/shop"
PUBLIC = "https://billowin.example"
SHA1, SHA2, SHA3 = ("1" * 40, "2" * 40, "3" * 40)


@dataclass
class Pipeline:
    kv: InMemoryKV
    apps: AppStore
    jobs: JobStore
    builder: FakeBuilder
    deployer: FakeDeployer
    statuses: RecordingStatuses
    worker: Worker
    finished: list[Job] = field(default_factory=list)

    def build(self, sha: str, **fields: object) -> Job:
        return self.jobs.create("shop", sha, kind=JobKind.BUILD, repository=REPO, **fields)

    def queue(self, kind: JobKind, **fields: object) -> Job:
        return self.jobs.create("shop", kind=kind, source="api", **fields)

    def get(self, job: Job) -> Job:
        found = self.jobs.get(job.app, job.id)
        assert found is not None
        return found

    def live_release(self, image: str = "reg/shop:old", processes: list[Process] | None = None) -> Release:
        """A release that is already live, as if an earlier deploy had made it."""
        release = self.deployer.releases.create(
            "shop",
            image,
            processes or [Process(name="web", command=["sh", "-c", "old"])],
            [],
            sha=SHA1,
            cause="push 1111111",
        )
        release.status = ReleaseStatus.LIVE
        self.deployer.releases.save(release)
        return release


@pytest.fixture
def p() -> Pipeline:
    kv = InMemoryKV(max_wait=0.1)
    apps = AppStore(kv)
    apps.create(App(name="shop", repository=f"https://github.com/{REPO}", github_repo=REPO))
    jobs = JobStore(kv)
    builder = FakeBuilder({"web": "python app.py", "worker": "python worker.py", "release": "migrate"})
    deployer = FakeDeployer(kv)
    statuses = RecordingStatuses()
    finished: list[Job] = []
    worker = Worker(
        kv,
        apps,
        jobs,
        builder,  # type: ignore[arg-type]
        deployer,  # type: ignore[arg-type]
        statuses=statuses,
        public_url=PUBLIC + "/",
        deploy_timeout=42,
        on_finished=finished.append,
    )
    return Pipeline(kv, apps, jobs, builder, deployer, statuses, worker, finished)


def states(job: Job) -> list[str]:
    """The job's states in order, repeats (progress lines) folded."""
    out: list[str] = []
    for step in job.steps:
        if not out or out[-1] != step.state.value:
            out.append(step.state.value)
    return out


# -- build ---------------------------------------------------------------------------------
def test_a_build_is_built_from_the_apps_repository_then_deployed_with_its_procfile(p: Pipeline) -> None:
    job = p.build(SHA2)
    p.worker.run_app("shop")
    assert [(c.app, c.repository, c.sha) for c in p.builder.calls] == [
        ("shop", f"https://github.com/{REPO}", SHA2)
    ]
    (deploy,) = p.deployer.deploys
    assert deploy.image == f"reg/shop:{SHA2}"
    assert [(x.name, x.command, x.count) for x in deploy.processes] == [
        ("web", ["sh", "-c", "python app.py"], 1),
        ("worker", ["sh", "-c", "python worker.py"], 0),
    ], "the release phase is no process type; a new web runs one instance, others none"
    assert deploy.release_command == "migrate"
    assert deploy.sha == SHA2 and deploy.cause == "push 2222222"
    assert deploy.timeout == 42
    done = p.get(job)
    assert done.state == JobState.LIVE and done.release == "v1"
    assert states(done) == ["queued", "building", "deploying", "live"]
    assert done.steps[-1].message == "v1 is live"
    assert done.attempts == 1
    assert any("rolling out" in s.message for s in done.steps), "the deployer's progress is on the job"


def test_the_release_keeps_the_runtime_its_build_chose_and_a_config_change_keeps_it_too(p: Pipeline) -> None:
    p.build(SHA2)
    p.worker.run_app("shop")
    (release,) = p.deployer.releases.list("shop")
    assert release.runtime == "python 3.14.7 (debian forky)"
    p.worker.jobs.create("shop", kind=JobKind.CONFIG)
    p.worker.run_app("shop")
    assert [r.runtime for r in p.deployer.releases.list("shop")] == ["python 3.14.7 (debian forky)"] * 2


def test_a_build_keeps_the_scale_of_the_running_release(p: Pipeline) -> None:
    p.live_release(processes=[Process(name="web", count=3), Process(name="worker", count=2)])
    p.build(SHA2)
    p.worker.run_app("shop")
    (deploy,) = p.deployer.deploys
    assert {x.name: x.count for x in deploy.processes} == {"web": 3, "worker": 2}


def test_a_build_deploys_to_the_apps_domains(p: Pipeline) -> None:
    app = p.apps.get("shop")
    app.domains = ["shop.example.com"]
    p.apps.save(app)
    p.build(SHA2)
    p.worker.run_app("shop")
    assert p.deployer.deploys[0].domains == ["shop.example.com"]


def test_a_failed_build_fails_the_job_with_the_builds_reason_and_deploys_nothing(p: Pipeline) -> None:
    p.builder.error = BuildFailed("build of shop 222222222222 failed: npm ERR! missing script: start")
    job = p.build(SHA2)
    p.worker.run_app("shop")
    done = p.get(job)
    assert done.state == JobState.FAILED
    assert done.reason == "build of shop 222222222222 failed: npm ERR! missing script: start"
    assert states(done) == ["queued", "building", "failed"]
    assert p.deployer.deploys == []
    assert p.statuses.reports[-1].state == "failure"
    assert p.statuses.reports[-1].description == done.reason


def test_a_release_that_does_not_become_healthy_fails_the_job(p: Pipeline) -> None:
    p.deployer.unhealthy = "Failed due to unhealthy allocations - rolling back to job version 0"
    job = p.build(SHA2)
    p.worker.run_app("shop")
    done = p.get(job)
    assert done.state == JobState.FAILED
    assert done.release == "v1"
    assert done.reason == (
        "v1 did not become healthy: Failed due to unhealthy allocations - rolling back to job version 0"
    )
    assert p.deployer.releases.current("shop") is None


def test_a_deploy_the_scheduler_refuses_fails_the_job(p: Pipeline) -> None:
    p.deployer.error = ServiceError("nomad", "job registration failed: no")
    job = p.build(SHA2)
    p.worker.run_app("shop")
    assert p.get(job).reason == "nomad: job registration failed: no"


# -- image ---------------------------------------------------------------------------------
def test_an_image_deploy_keeps_the_current_process_types(p: Pipeline) -> None:
    procs = [Process(name="web", count=2), Process(name="worker", count=1)]
    p.live_release(processes=procs)
    job = p.queue(JobKind.IMAGE, image="reg/shop:hotfix", note="deploy reg/shop:hotfix")
    p.worker.run_app("shop")
    (deploy,) = p.deployer.deploys
    assert deploy.image == "reg/shop:hotfix"
    assert deploy.processes == procs
    assert deploy.cause == "deploy reg/shop:hotfix"
    assert deploy.release_command is None
    assert p.builder.calls == []
    done = p.get(job)
    assert (done.state, done.release) == (JobState.LIVE, "v2")
    assert states(done) == ["queued", "deploying", "live"]


def test_an_image_deploy_of_a_new_app_runs_one_web(p: Pipeline) -> None:
    p.queue(JobKind.IMAGE, image="reg/shop:first")
    p.worker.run_app("shop")
    assert [x.name for x in p.deployer.deploys[0].processes] == ["web"]


# -- config and domains -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", [JobKind.CONFIG, JobKind.DOMAINS])
def test_config_and_domains_redeploy_the_running_release(p: Pipeline, kind: JobKind) -> None:
    running = p.live_release("reg/shop:abc", [Process(name="web", count=2)])
    app = p.apps.get("shop")
    app.domains = ["www.example.com"]
    p.apps.save(app)
    job = p.queue(kind, note=f"{kind.value}: something")
    p.worker.run_app("shop")
    (deploy,) = p.deployer.deploys
    assert (deploy.image, deploy.processes, deploy.sha) == (running.image, running.processes, running.sha)
    assert deploy.domains == ["www.example.com"]
    assert deploy.cause == f"{kind.value}: something"
    assert p.get(job).state == JobState.LIVE and p.get(job).release == "v2"


@pytest.mark.parametrize("kind", [JobKind.CONFIG, JobKind.DOMAINS])
def test_config_and_domains_of_a_never_deployed_app_are_saved_for_its_first_deploy(
    p: Pipeline, kind: JobKind
) -> None:
    job = p.queue(kind)
    p.worker.run_app("shop")
    done = p.get(job)
    assert done.state == JobState.LIVE
    assert done.steps[-1].message == "saved; it applies with the app's first deploy"
    assert done.release is None
    assert p.deployer.deploys == [] and p.deployer.releases.list("shop") == []


# -- rollback --------------------------------------------------------------------------------
def test_a_rollback_redeploys_the_release_it_names(p: Pipeline) -> None:
    first = p.live_release("reg/shop:one")
    p.live_release("reg/shop:two")
    job = p.queue(JobKind.ROLLBACK, rollback_to=1)
    p.worker.run_app("shop")
    assert p.deployer.rollbacks == [RollbackCall("shop", 1, 42)]
    done = p.get(job)
    assert (done.state, done.release) == (JobState.LIVE, "v3")
    current = p.deployer.releases.current("shop")
    assert current is not None
    assert (current.image, current.rollback_of) == (first.image, "v1")


def test_a_rollback_with_nothing_to_roll_back_to_fails(p: Pipeline) -> None:
    p.live_release()
    job = p.queue(JobKind.ROLLBACK)
    p.worker.run_app("shop")
    done = p.get(job)
    assert done.state == JobState.FAILED and "no earlier live release" in done.reason


# -- supersede, order ----------------------------------------------------------------------------
def test_of_three_queued_builds_only_the_newest_runs(p: Pipeline) -> None:
    old, older_too, newest = p.build(SHA1), p.build(SHA2), p.build(SHA3)
    p.worker.run_app("shop")
    assert [c.sha for c in p.builder.calls] == [SHA3]
    for job in (old, older_too):
        done = p.get(job)
        assert done.state == JobState.SUPERSEDED
        assert done.steps[-1].message == f"superseded by job {newest.id} (build and deploy {SHA3[:12]})"
    assert p.get(newest).state == JobState.LIVE
    superseded = [r for r in p.statuses.reports if r.state == "error"]
    assert [(r.sha, r.description) for r in superseded] == [
        (SHA1, "superseded by 3333333"),
        (SHA2, "superseded by 3333333"),
    ]


def test_config_domains_and_rollback_all_run_in_order_and_are_never_superseded(p: Pipeline) -> None:
    p.live_release("reg/shop:one")
    p.live_release("reg/shop:two")
    jobs = [
        p.queue(JobKind.CONFIG, note="config: set A"),
        p.build(SHA1),
        p.queue(JobKind.DOMAINS, note="domains: add www.example.com"),
        p.queue(JobKind.ROLLBACK, rollback_to=1),
        p.build(SHA2),
        p.queue(JobKind.CONFIG, note="config: unset A"),
    ]
    p.worker.run_app("shop")
    assert [d.cause for d in p.deployer.deploys] == [
        "config: set A",
        "domains: add www.example.com",
        "rollback to v1",
        "push 2222222",
        "config: unset A",
    ]
    final = [p.get(j).state for j in jobs]
    assert final == [
        JobState.LIVE,
        JobState.SUPERSEDED,
        JobState.LIVE,
        JobState.LIVE,
        JobState.LIVE,
        JobState.LIVE,
    ]
    assert [c.sha for c in p.builder.calls] == [SHA2]


def test_run_next_runs_one_job_and_says_whether_there_was_one(p: Pipeline) -> None:
    first, second = p.queue(JobKind.CONFIG), p.queue(JobKind.DOMAINS)
    assert p.worker.run_next("shop")
    assert p.get(first).state == JobState.LIVE and p.get(second).state == JobState.QUEUED
    assert p.worker.run_next("shop")
    assert not p.worker.run_next("shop")


# -- interrupted jobs ----------------------------------------------------------------------------
def _interrupt(p: Pipeline, job: Job, state: JobState, attempts: int) -> None:
    """As if a worker died while the job was in ``state`` on its ``attempts``-th try."""
    job.attempts = attempts
    job.move(state, f"{state.value} (attempt {attempts})")
    p.jobs.save(job)


def test_a_job_left_building_by_a_dead_worker_is_resumed_and_runs(p: Pipeline) -> None:
    job = p.build(SHA2)
    _interrupt(p, job, JobState.BUILDING, attempts=1)
    p.worker.run_app("shop")
    done = p.get(job)
    assert done.state == JobState.LIVE
    assert "resuming after an interrupted building" in [s.message for s in done.steps]
    assert done.attempts == 2
    assert [c.sha for c in p.builder.calls] == [SHA2]


def test_a_job_interrupted_at_max_attempts_is_given_up(p: Pipeline) -> None:
    job = p.build(SHA2)
    _interrupt(p, job, JobState.DEPLOYING, attempts=2)
    p.worker.run_app("shop")
    done = p.get(job)
    assert done.state == JobState.FAILED
    assert done.reason == "interrupted while deploying 2 times; giving up"
    assert p.builder.calls == [] and p.deployer.deploys == []
    assert p.statuses.reports[-1].state == "failure"


class _DyingBuilder(FakeBuilder):
    """The API is shut down while the build runs: the build is cut short."""

    worker: Worker

    def build(self, app: str, repository: str, sha: str, **_: object) -> BuildRecord:
        self.calls.append(BuildCall(app, repository, sha))
        self.worker.stop()
        raise ServiceError("docker", "the build container was killed")


def test_a_job_cut_short_by_shutdown_is_left_for_the_next_worker(p: Pipeline) -> None:
    dying = _DyingBuilder()
    first = Worker(p.kv, p.apps, p.jobs, dying, p.deployer)  # type: ignore[arg-type]
    dying.worker = first
    job = p.build(SHA2)
    first.run_app("shop")
    left = p.get(job)
    assert left.state == JobState.BUILDING, "not failed: the next worker resumes it"
    assert p.kv.holder(AppLock.key("shop")) is None, "the lock went with the stopped worker"
    p.worker.run_app("shop")
    assert p.get(job).state == JobState.LIVE


def test_a_job_for_an_app_destroyed_meanwhile_fails(p: Pipeline) -> None:
    job = p.jobs.create("ghost", SHA1)
    p.worker.run_app("ghost")
    done = p.get(job)
    assert done.state == JobState.FAILED and "no app named 'ghost'" in done.reason


# -- the app's lock -------------------------------------------------------------------------------
def test_a_worker_that_cannot_get_the_apps_lock_runs_nothing(p: Pipeline) -> None:
    other = p.kv.session_create("another API process")
    assert p.kv.kv_acquire(AppLock.key("shop"), other)
    job = p.build(SHA2)
    p.worker.run_app("shop")
    assert p.get(job).state == JobState.QUEUED
    assert p.builder.calls == []
    assert p.kv.holder(AppLock.key("shop")) == other
    p.kv.expire(other)  # that process died: its lock went with its session
    p.worker.run_app("shop")
    assert p.get(job).state == JobState.LIVE


def test_the_lock_is_released_when_the_worker_is_done(p: Pipeline) -> None:
    p.build(SHA2)
    p.worker.run_app("shop")
    assert p.kv.holder(AppLock.key("shop")) is None
    assert p.kv.live_sessions() == []


def test_a_job_that_blows_up_fails_with_a_reason_and_the_next_one_runs(p: Pipeline) -> None:
    broken = p.jobs.create("shop", SHA1, kind=JobKind.IMAGE)  # an image job without an image: a bug
    after = p.queue(JobKind.CONFIG, note="config: set A")
    p.worker.run_app("shop")
    done = p.get(broken)
    assert done.state == JobState.FAILED and "failed unexpectedly" in done.reason
    assert p.get(after).state == JobState.LIVE
    assert p.kv.live_sessions() == []


def test_a_malformed_job_record_is_skipped_and_the_others_run(p: Pipeline) -> None:
    p.kv.kv_put("billowin/pipeline/shop/jobs/00000099", b'{"id": "00000099", "kind": "nonsense"}')
    job = p.build(SHA2)
    assert p.jobs.apps_with_open_jobs() == {"shop"}
    p.worker.run_app("shop")
    assert p.get(job).state == JobState.LIVE


def test_a_procfile_process_type_nomad_cannot_take_fails_the_build_plainly(p: Pipeline) -> None:
    p.builder.processes = {"web": "python app.py", "Web Server": "nope"}
    job = p.build(SHA2)
    p.worker.run_app("shop")
    done = p.get(job)
    assert done.state == JobState.FAILED and "process type 'Web Server' is not valid" in done.reason


def test_a_stopped_worker_runs_nothing(p: Pipeline) -> None:
    job = p.build(SHA2)
    p.worker.stop()
    p.worker.run_app("shop")
    assert p.get(job).state == JobState.QUEUED


# -- commit statuses and counters -------------------------------------------------------------------
def test_a_pushed_commit_gets_pending_then_success_statuses_linking_to_the_job(p: Pipeline) -> None:
    job = p.build(SHA2)
    p.worker.run_app("shop")
    assert [(r.state, r.description) for r in p.statuses.reports] == [
        ("pending", "building"),
        ("pending", "deploying"),
        ("success", "v1 is live"),
    ]
    assert {(r.repository, r.sha) for r in p.statuses.reports} == {(REPO, SHA2)}
    assert {r.target_url for r in p.statuses.reports} == {f"{PUBLIC}/pipeline/shop/jobs/{job.id}"}


def test_an_unhealthy_release_reports_failure(p: Pipeline) -> None:
    p.deployer.unhealthy = "deadline exceeded"
    p.build(SHA2)
    p.worker.run_app("shop")
    assert p.statuses.states() == ["pending", "pending", "failure"]
    assert p.statuses.reports[-1].description == "v1 did not become healthy: deadline exceeded"


def test_jobs_without_a_repository_report_no_status(p: Pipeline) -> None:
    p.jobs.create("shop", SHA2, kind=JobKind.BUILD, source="api")
    p.queue(JobKind.IMAGE, image="reg/shop:x")
    p.worker.run_app("shop")
    assert p.statuses.reports == []


def test_a_status_that_cannot_be_posted_never_stops_a_deploy(p: Pipeline) -> None:
    p.statuses.error = ServiceError("github", "401 Bad credentials")
    job = p.build(SHA2)
    p.worker.run_app("shop")
    assert p.get(job).state == JobState.LIVE
    assert len(p.statuses.reports) == 3


def test_monitoring_hears_of_every_finished_deploy(p: Pipeline) -> None:
    p.build(SHA1)
    p.build(SHA2)
    p.worker.run_app("shop")
    p.deployer.unhealthy = "unhealthy"
    p.queue(JobKind.IMAGE, image="reg/shop:bad")
    p.worker.run_app("shop")
    assert [(j.id, j.state.value) for j in p.finished] == [
        ("00000001", "superseded"),
        ("00000002", "live"),
        ("00000003", "failed"),
    ]


def test_a_release_the_jobspec_refuses_fails_the_job_with_the_reason(p: Pipeline, tmp_path: Path) -> None:
    deployer = Deployer(
        Settings(state_dir=tmp_path, cache_dir=tmp_path, pipeline=False), FakeScheduler(), ReleaseStore(p.kv)
    )
    worker = Worker(p.kv, p.apps, p.jobs, p.builder, deployer)  # type: ignore[arg-type]
    job = p.queue(JobKind.IMAGE, image="reg/shop:1 && reboot")  # queued around the API's check
    try:
        worker.run_app("shop")
    finally:
        done = p.get(job)
        assert done.state == JobState.FAILED, f"left {done.state.value}"
        assert "cannot be rendered" in done.reason
