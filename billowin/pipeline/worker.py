"""The durable deploy pipeline: queued → building → deploying → live / failed / superseded.

Accepted work is written to Consul KV before the webhook is answered, under
``billowin/pipeline/<app>/jobs/<id>``. Workers (threads in the API process)
watch that prefix with blocking queries. Work is serialized per app with a
Consul session lock, which dies with its holder: a killed API leaves no stuck
lock, only a job in ``building`` or ``deploying`` that the next holder resumes
once (builds are keyed by SHA, deploys by release) or fails cleanly.
A newer SHA supersedes older queued ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from billowin.adapters.consul import ConsulRegistry
from billowin.adapters.github import GitHubStatuses
from billowin.apps.store import App, AppStore, DeployOn
from billowin.build.builder import Builder
from billowin.errors import BillowinError
from billowin.pipeline.webhooks import CodeEvent
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import Release, ReleaseStatus

log = logging.getLogger("billowin.pipeline")
PREFIX = "billowin/pipeline"
MAX_ATTEMPTS = 2


class JobState(StrEnum):
    QUEUED = "queued"
    BUILDING = "building"
    DEPLOYING = "deploying"
    LIVE = "live"
    FAILED = "failed"
    SUPERSEDED = "superseded"


TERMINAL = {JobState.LIVE, JobState.FAILED, JobState.SUPERSEDED}


def _now() -> datetime:
    return datetime.now(UTC)


class JobKind(StrEnum):
    BUILD = "build"  # build a commit, then deploy it (webhooks, `billowin deploy --sha`)
    IMAGE = "image"  # deploy an already-built image (`billowin deploy --image`)
    CONFIG = "config"  # roll out the app's newest config vars (`config:set` / `config:unset`)
    DOMAINS = "domains"  # roll out the app's domains (`domains:add` / `domains:remove`)
    ROLLBACK = "rollback"  # redeploy an earlier release (`billowin rollback`)


# Code jobs: a newer one makes older queued ones pointless. Other kinds all run, in order.
CODE_KINDS = {JobKind.BUILD, JobKind.IMAGE}


class Step(BaseModel):
    at: datetime = Field(default_factory=_now)
    state: JobState
    message: str


class Job(BaseModel):
    id: str
    app: str
    kind: JobKind = JobKind.BUILD
    sha: str = ""
    image: str | None = None
    rollback_to: int | None = None
    note: str = ""  # what asked for it, shown in releases: "config:set GREETING"
    branch: str | None = None
    repository: str | None = None  # owner/name on GitHub, for statuses
    source: str = "push"
    delivery: str | None = None
    state: JobState = JobState.QUEUED
    reason: str = ""
    release: str | None = None
    attempts: int = 0
    steps: list[Step] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=_now)

    def describe(self) -> str:
        if self.kind == JobKind.BUILD:
            return f"build and deploy {self.sha[:12]}"
        if self.kind == JobKind.IMAGE:
            return f"deploy image {self.image}"
        if self.kind == JobKind.ROLLBACK:
            return f"roll back to v{self.rollback_to}" if self.rollback_to else "roll back"
        return self.note or f"roll out new {self.kind.value}"

    def move(self, state: JobState, message: str) -> None:
        self.state = state
        self.steps.append(Step(state=state, message=message))


class JobStore:
    def __init__(self, consul: ConsulRegistry) -> None:
        self.consul = consul

    def _key(self, app: str, job_id: str) -> str:
        return f"{PREFIX}/{app}/jobs/{job_id}"

    def create(self, app: str, sha: str = "", **fields: object) -> Job:
        seq_key = f"{PREFIX}/{app}/seq"
        for _ in range(20):
            index, raw = self.consul.kv_get(seq_key)
            number = int(raw or b"0") + 1
            if self.consul.kv_put(seq_key, str(number).encode(), cas=index):
                job = Job.model_validate({"id": f"{number:08d}", "app": app, "sha": sha, **fields})
                job.move(JobState.QUEUED, f"queued: {job.describe()} ({job.source})")
                self.save(job)
                return job
        raise BillowinError(f"could not queue a job for {app}: too much contention")

    def save(self, job: Job) -> None:
        self.consul.kv_put(self._key(job.app, job.id), job.model_dump_json().encode())

    def get(self, app: str, job_id: str) -> Job | None:
        _, raw = self.consul.kv_get(self._key(app, job_id))
        return Job.model_validate_json(raw) if raw else None

    def wait(self, app: str, job_id: str, *, steps_seen: int, timeout: float) -> Job | None:
        """The job once it has more than ``steps_seen`` steps (or is finished), or after ``timeout``."""
        deadline = time.monotonic() + timeout
        index: int | None = None
        while True:
            job = self.get(app, job_id)
            if job is None or len(job.steps) > steps_seen or job.state in TERMINAL:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return job
            index = self.consul.kv_wait(self._key(app, job_id), index, wait=f"{max(1, int(remaining))}s")

    def delete(self, app: str) -> None:
        self.consul.kv_delete_tree(f"{PREFIX}/{app}/")

    def list(self, app: str) -> list[Job]:
        entries = self.consul.kv_list(f"{PREFIX}/{app}/jobs/")
        return sorted((Job.model_validate_json(v) for _, v in entries), key=lambda j: j.id)

    def apps_with_open_jobs(self) -> set[str]:
        entries = self.consul.kv_list(f"{PREFIX}/")
        out = set()
        for key, value in entries:
            if "/jobs/" in key and value and Job.model_validate_json(value).state not in TERMINAL:
                out.add(key.split("/")[2])
        return out


class Intake:
    """Turns verified events into queued jobs, durably and quickly (this runs inside the webhook reply)."""

    def __init__(self, apps: AppStore, jobs: JobStore) -> None:
        self.apps = apps
        self.jobs = jobs

    def _delivery_key(self, delivery: str) -> str:
        return f"billowin/deliveries/{delivery}"

    def claim_delivery(self, delivery: str | None) -> bool:
        """True if this delivery id is new, or its earlier processing failed (a redelivery)."""
        if not delivery:
            return True
        key = self._delivery_key(delivery)
        consul = self.jobs.consul
        if consul.kv_put(key, b"[]", cas=0):
            return True
        index, raw = consul.kv_get(key)
        refs = (
            []
            if raw is None
            else [r.split("/") for r in raw.decode().strip("[]").replace('"', "").split(",") if r]
        )
        jobs = [self.jobs.get(app, job_id) for app, job_id in refs]
        if jobs and all(j is not None and j.state == JobState.FAILED for j in jobs):
            return consul.kv_put(key, b"[]", cas=index)  # only one concurrent redelivery wins
        return False

    def _remember(self, delivery: str | None, jobs: list[Job]) -> None:
        if delivery and jobs:  # a claimed delivery already reads "[]"
            refs = json.dumps([f"{j.app}/{j.id}" for j in jobs])
            self.jobs.consul.kv_put(self._delivery_key(delivery), refs.encode())

    def accept(self, event: CodeEvent, apps: list[App] | None = None) -> list[Job]:
        """Queue a deploy for every app this event should deploy; returns the jobs."""
        queued: list[Job] = []
        for app in self.apps.all() if apps is None else apps:
            if app.github_repo != event.repository or not self._wants(app, event):
                continue
            queued.append(
                self.jobs.create(
                    app.name,
                    event.sha,
                    branch=event.branch,
                    repository=event.repository,
                    source=event.source,
                    delivery=event.delivery,
                )
            )
        self._remember(event.delivery, queued)
        return queued

    def _wants(self, app: App, event: CodeEvent) -> bool:
        if event.kind == "push":
            return app.deploy_on == DeployOn.PUSH and event.branch == app.branch
        # A CI result: only a success deploys, and only for apps that wait for CI.
        if app.deploy_on != DeployOn.CI or not event.ci_passed:
            return False
        if app.ci_workflow and event.source == "workflow_run" and event.workflow != app.ci_workflow:
            return False
        # Fork check suites carry no branch; their SHA is then trusted only via the app's branch.
        return event.branch == app.branch


Report = Callable[[Job, str, str], None]


class Worker:
    """Runs queued jobs: one app at a time per lock, many apps in parallel."""

    def __init__(
        self,
        consul: ConsulRegistry,
        apps: AppStore,
        builder: Builder,
        deployer: Deployer,
        *,
        statuses: GitHubStatuses | None = None,
        public_url: str = "",
        deploy_timeout: float = 300,
        on_finished: Callable[[Job], None] | None = None,  # monitoring: deploys by outcome
    ) -> None:
        self.on_finished = on_finished
        self.consul = consul
        self.apps = apps
        self.jobs = JobStore(consul)
        self.builder = builder
        self.deployer = deployer
        self.statuses = statuses
        self.public_url = public_url.rstrip("/")
        self.deploy_timeout = deploy_timeout
        self._stop = threading.Event()
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self.builder.remove_stale_build_containers()
        thread = threading.Thread(target=self._watch, name="billowin-pipeline", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        index: int | None = None
        while not self._stop.is_set():
            try:
                for app in self.jobs.apps_with_open_jobs():
                    self._maybe_run(app)
                new_index = self.consul.kv_wait(f"{PREFIX}/", index, wait="5s")
                index = new_index if index is None or new_index >= index else None
            except BillowinError as exc:
                log.warning("pipeline watch: %s", exc.message)
                self._stop.wait(2)

    def _maybe_run(self, app: str) -> None:
        with self._busy_lock:
            if app in self._busy:
                return
            self._busy.add(app)
        thread = threading.Thread(target=self._run_app, args=(app,), name=f"billowin-{app}", daemon=True)
        thread.start()

    # -- one app ---------------------------------------------------------------
    def _run_app(self, app_name: str) -> None:
        session = None
        try:
            session = self.consul.session_create(f"billowin-pipeline-{app_name}")
            if not self.consul.kv_acquire(f"{PREFIX}/{app_name}/lock", session):
                return  # another worker has it; its session dies with it if it dies
            stop_renewing = threading.Event()
            renewer = threading.Thread(target=self._renew, args=(session, stop_renewing), daemon=True)
            renewer.start()
            try:
                while not self._stop.is_set() and self._run_next(app_name):
                    pass
            finally:
                stop_renewing.set()
        except BillowinError as exc:
            log.warning("pipeline %s: %s", app_name, exc.message)
        finally:
            if session:
                with contextlib.suppress(BillowinError):
                    self.consul.session_destroy(session)  # releases the lock (behavior=delete)
            with self._busy_lock:
                self._busy.discard(app_name)

    def _renew(self, session: str, stop: threading.Event) -> None:
        while not stop.wait(5):
            self.consul.session_renew(session)

    def _run_next(self, app_name: str) -> bool:
        """Run the newest queued job of the app; returns whether there was one."""
        jobs = self.jobs.list(app_name)
        for job in jobs:
            if job.state in (JobState.BUILDING, JobState.DEPLOYING):  # left behind by a dead worker
                if job.attempts >= MAX_ATTEMPTS:
                    self._fail(job, f"interrupted while {job.state.value} {job.attempts} times; giving up")
                else:
                    job.move(JobState.QUEUED, f"resuming after an interrupted {job.state.value}")
                    self.jobs.save(job)
        queued = [j for j in jobs if j.state == JobState.QUEUED]
        if not queued:
            return False
        code = [j for j in queued if j.kind in CODE_KINDS]
        for older in code[:-1]:
            older.move(JobState.SUPERSEDED, f"superseded by job {code[-1].id} ({code[-1].describe()})")
            self.jobs.save(older)
            self._finished(older)
            self._report(older, "error", f"superseded by {code[-1].sha[:7] or code[-1].id}")
        remaining = [j for j in queued if j.kind not in CODE_KINDS or j is code[-1]]
        self._process(remaining[0])
        return True

    def _process(self, job: Job) -> None:
        try:
            app = self.apps.get(job.app)
        except BillowinError as exc:
            self._fail(job, exc.message)
            return
        job.attempts += 1
        try:
            release = self._execute(app, job)
        except BillowinError as exc:
            if self._stop.is_set():  # shutting down: leave the job for the next worker to resume
                log.info("pipeline %s: stopped while %s; will resume", job.app, job.state.value)
                return
            self._fail(job, exc.message)
            return
        if release is None:
            return
        job.release = release.name
        if release.status == ReleaseStatus.LIVE:
            job.move(JobState.LIVE, f"{release.name} is live")
            self.jobs.save(job)
            self._finished(job)
            self._report(job, "success", f"{release.name} is live")
        else:
            self._fail(job, f"{release.name} did not become healthy: {release.description}")

    def _progress(self, job: Job) -> Callable[[str], None]:
        def report(message: str) -> None:
            job.steps.append(Step(state=job.state, message=message))
            self.jobs.save(job)

        return report

    def _execute(self, app: App, job: Job) -> Release | None:
        """Carry out one job; returns the release it made (None when there was nothing to roll out)."""
        deploy = self.deployer
        timeout = self.deploy_timeout
        if job.kind == JobKind.BUILD:
            job.move(JobState.BUILDING, f"building {job.sha[:12]} (attempt {job.attempts})")
            self.jobs.save(job)
            self._report(job, "pending", "building")
            record = self.builder.build(app.name, app.repository, job.sha)
            assert record.image is not None
            job.move(JobState.DEPLOYING, f"built {record.image}@{record.digest}; deploying")
            self.jobs.save(job)
            self._report(job, "pending", "deploying")
            current = deploy.releases.current(app.name)
            counts = {p.name: p.count for p in current.processes} if current else {}
            processes = [
                Process(
                    name=name,
                    command=["sh", "-c", cmd],
                    count=counts.get(name, 1 if name == "web" else 0),
                )
                for name, cmd in record.processes.items()
                if name != "release"
            ]
            return deploy.deploy(
                app.name,
                record.image,
                processes,
                domains=app.domains,
                timeout=timeout,
                release_command=record.processes.get("release"),
                cause=f"{job.source} {job.sha[:7]}",
                sha=job.sha,
                progress=self._progress(job),
            )
        job.move(JobState.DEPLOYING, f"{job.describe()} (attempt {job.attempts})")
        self.jobs.save(job)
        if job.kind == JobKind.ROLLBACK:
            return deploy.rollback(app.name, job.rollback_to, timeout=timeout, progress=self._progress(job))
        current = deploy.releases.current(app.name)
        if job.kind == JobKind.IMAGE:
            assert job.image is not None
            processes = current.processes if current else [Process(name="web")]
            return deploy.deploy(
                app.name,
                job.image,
                processes,
                domains=app.domains,
                timeout=timeout,
                cause=job.note or "deploy image",
                progress=self._progress(job),
            )
        # CONFIG / DOMAINS: the running release again, with the app's newest config and domains.
        if current is None:
            job.move(JobState.LIVE, "saved; it applies with the app's first deploy")
            self.jobs.save(job)
            return None
        return deploy.deploy(
            app.name,
            current.image,
            current.processes,
            domains=app.domains,
            timeout=timeout,
            cause=job.note or job.kind.value,
            sha=current.sha,
            progress=self._progress(job),
        )

    def _fail(self, job: Job, reason: str) -> None:
        job.reason = reason
        job.move(JobState.FAILED, reason)
        self.jobs.save(job)
        self._finished(job)
        self._report(job, "failure", reason)

    def _finished(self, job: Job) -> None:
        if self.on_finished is not None:
            self.on_finished(job)

    def _report(self, job: Job, state: str, description: str) -> None:
        if self.statuses is None or not job.repository:
            return
        target = f"{self.public_url}/pipeline/{job.app}/jobs/{job.id}" if self.public_url else None
        try:
            self.statuses.report(job.repository, job.sha, state, description, target)
        except BillowinError as exc:  # a status that cannot be posted never stops a deploy
            log.warning("GitHub status for %s %s: %s", job.app, job.sha[:12], exc.message)
