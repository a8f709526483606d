"""The durable deploy pipeline's worker: queued → building → deploying → live / failed / superseded.

Accepted work is written to Consul KV before the webhook is answered (see
``billowin.pipeline.intake``). Workers (threads in the API process) watch the
pipeline prefix with blocking queries and run each app's jobs one at a time
under that app's lock (``lock.AppLock``), many apps in parallel. Which job runs
next is ``planner.plan``; what a job does is looked up in ``kinds.KINDS``;
statuses and counters go through ``reporting.Reporter``.

A killed API leaves no stuck lock, only a job in ``building`` or
``deploying`` that the next holder resumes once (builds are keyed by SHA,
deploys by release) or fails cleanly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from billowin.apps.store import AppStore
from billowin.errors import BillowinError
from billowin.pipeline import kinds, planner
from billowin.pipeline.jobs import Job, JobState, JobStore
from billowin.pipeline.lock import AppLock
from billowin.pipeline.reporting import JobOutput, Reporter
from billowin.ports import AppBuilder, CommitStatuses, Coordinator
from billowin.release.deploy import Deployer
from billowin.release.store import ReleaseStatus

log = logging.getLogger("billowin.pipeline")


class Worker:
    """Runs queued jobs: one app at a time per lock, many apps in parallel."""

    def __init__(
        self,
        sessions: Coordinator,
        apps: AppStore,
        jobs: JobStore,
        builder: AppBuilder,
        deployer: Deployer,
        *,
        statuses: CommitStatuses | None = None,
        public_url: str = "",
        deploy_timeout: float = 300,
        on_finished: Callable[[Job], None] | None = None,  # monitoring: deploys by outcome
        output: JobOutput | None = None,  # where jobs' command output goes (none: dropped)
    ) -> None:
        self.apps = apps
        self.jobs = jobs
        self.builder = builder
        self.lock = AppLock(sessions)
        self.reporter = Reporter(statuses, public_url=public_url, on_finished=on_finished)
        self.context = kinds.Context(
            jobs, builder, deployer, self.reporter, deploy_timeout, output or JobOutput(None)
        )
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
                new_index = self.jobs.watch(index, wait="5s")
                index = new_index if index is None or new_index >= index else None
            except BillowinError as exc:
                log.warning("pipeline watch: %s", exc.message)
                self._stop.wait(2)
            except Exception:  # a bug must not stop deploys for every app for good
                log.exception("pipeline watch failed; retrying")
                self._stop.wait(2)

    def _maybe_run(self, app: str) -> None:
        with self._busy_lock:
            if app in self._busy:
                return
            self._busy.add(app)
        thread = threading.Thread(target=self.run_app, args=(app,), name=f"billowin-{app}", daemon=True)
        thread.start()

    # -- one app ---------------------------------------------------------------
    def run_app(self, app_name: str) -> None:
        """Run the app's queued jobs until none is left (if this process gets the app's lock)."""
        try:
            with self.lock.hold(app_name) as held:
                while held and not self._stop.is_set() and self.run_next(app_name):
                    pass
        except BillowinError as exc:
            log.warning("pipeline %s: %s", app_name, exc.message)
        except Exception:  # contained to this app; the watch starts it again on the next change
            log.exception("pipeline %s failed", app_name)
        finally:
            with self._busy_lock:
                self._busy.discard(app_name)

    def run_next(self, app_name: str) -> bool:
        """Run the next job of the app (the caller holds its lock); returns whether there was one."""
        plan = planner.plan(self.jobs.list(app_name))
        for job in plan.give_up:
            self._fail(job, f"interrupted while {job.state.value} {job.attempts} times; giving up")
        for job in plan.resume:
            job.move(JobState.QUEUED, f"resuming after an interrupted {job.state.value}")
            self.jobs.save(job)
        newest = plan.newest_code
        for older in plan.superseded:
            assert newest is not None
            older.move(JobState.SUPERSEDED, f"superseded by job {newest.id} ({newest.describe()})")
            self.jobs.save(older)
            self.reporter.finished(older)
            self.reporter.status(older, "error", f"superseded by {newest.sha[:7] or newest.id}")
        if plan.next is None:
            return False
        self._process(plan.next)
        return True

    def _process(self, job: Job) -> None:
        try:
            app = self.apps.get(job.app)
        except BillowinError as exc:
            self._fail(job, exc.message)
            return
        job.attempts += 1
        try:
            release = kinds.execute(self.context, app, job)
        except BillowinError as exc:
            if self._stop.is_set():  # shutting down: leave the job for the next worker to resume
                log.info("pipeline %s: stopped while %s; will resume", job.app, job.state.value)
                return
            self._fail(job, exc.message)
            return
        except Exception as exc:  # a bug fails this job with a reason, and the next job still runs
            log.exception("pipeline %s job %s", job.app, job.id)
            self._fail(job, f"Billowin failed unexpectedly ({type(exc).__name__}); see the API's log")
            return
        if release is None:
            return
        job.release = release.name
        if release.status == ReleaseStatus.LIVE:
            job.move(JobState.LIVE, f"{release.name} is live")
            self.jobs.save(job)
            self.reporter.finished(job)
            self.reporter.status(job, "success", f"{release.name} is live")
        else:
            self._fail(job, f"{release.name} did not become healthy: {release.description}")

    def _fail(self, job: Job, reason: str) -> None:
        job.reason = reason
        job.move(JobState.FAILED, reason)
        self.jobs.save(job)
        self.reporter.finished(job)
        self.reporter.status(job, "failure", reason)
