"""What each kind of job does: the table the worker looks a job's kind up in.

Every kind ends in the same call, ``Deployer.deploy`` (a rollback through
``Deployer.rollback``, which picks the old release and calls it): a kind only
decides *what* to roll out, as a ``Rollout``.

    build     build the commit, then roll out the new image with the Procfile's process types
              (and app.json's: a first deploy's formation, predeploy/postdeploy, the web check)
    image     roll out an image that is already built, with the current process types
    config    the running release again, with the app's newest config vars
    domains   the running release again, with the app's domains
    rollback  an earlier release's image, process types and config version, with today's domains

A new kind is one function here and one line in ``KINDS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from billowin.apps.store import App
from billowin.build.appjson import AppManifest
from billowin.errors import InvalidInput
from billowin.names import is_process_name
from billowin.pipeline.jobs import Job, JobKind, JobState, JobStore, Step
from billowin.pipeline.reporting import JobOutput, Reporter
from billowin.ports import AppBuilder
from billowin.release.deploy import Deployer, DeployTask
from billowin.release.jobspec import Process
from billowin.release.store import Release


@dataclass
class Context:
    """What a kind may use: the job's store (to record steps), the builder, the deployer."""

    jobs: JobStore
    builder: AppBuilder
    deployer: Deployer
    reporter: Reporter
    deploy_timeout: float
    output: JobOutput = field(default_factory=lambda: JobOutput(None))

    def move(self, job: Job, state: JobState, message: str, status: str | None = None) -> None:
        """Record a step (saved at once, so followers see it) and, if given, a commit status."""
        job.move(state, message)
        self.jobs.save(job)
        if status is not None:
            self.reporter.status(job, "pending", status)

    def progress(self, job: Job) -> Callable[[str], None]:
        def report(message: str) -> None:
            job.steps.append(Step(state=job.state, message=message))
            self.jobs.save(job)

        return report


@dataclass(frozen=True)
class Rollout:
    """One release to roll out: what ``Deployer.deploy`` takes besides the app."""

    image: str
    processes: list[Process]
    cause: str
    sha: str | None = None
    release_command: str | None = None
    runtime: str | None = None  # what the build chose (BuildRecord.runtime), kept by the release
    predeploy: tuple[DeployTask, ...] = ()  # app.json's scripts (Deployer.deploy)
    postdeploy: tuple[DeployTask, ...] = ()


def build(ctx: Context, app: App, job: Job) -> Rollout:
    ctx.move(job, JobState.BUILDING, f"building {job.sha[:12]} (attempt {job.attempts})", status="building")
    record = ctx.builder.build(app.name, app.repository, job.sha, token=app.repository_token)
    assert record.image is not None
    ctx.move(job, JobState.DEPLOYING, f"built {record.image}@{record.digest}; deploying", status="deploying")
    current = ctx.deployer.releases.current(app.name)
    manifest = record.manifest or AppManifest()
    # The running scale; app.json's formation only on a first deploy (nothing live yet).
    counts = {p.name: p.count for p in current.processes} if current else manifest.initial_scale()
    bad = [name for name in record.processes if not is_process_name(name)]
    if bad:
        raise InvalidInput(
            f"the Procfile's process type {bad[0]!r} is not valid",
            hint="Use lowercase letters, digits, '-' and '_', starting with a letter (31 at most).",
        )
    processes = [
        Process(
            name=name,
            command=["sh", "-c", cmd] if cmd else None,  # "": the image's own CMD (a Dockerfile app's)
            count=counts.get(name, 1 if name == "web" else 0),
            port=record.port if name == "web" else None,  # a Dockerfile's EXPOSE; None: Nomad's pick
            **(manifest.web_check_settings() if name == "web" else {}),
        )
        for name, cmd in record.processes.items()
        if name != "release"
    ]
    return Rollout(
        record.image,
        processes,
        cause=f"{job.source} {job.sha[:7]}",
        sha=job.sha,
        release_command=record.processes.get("release"),
        runtime=record.runtime,
        predeploy=tuple(manifest.predeploy()),
        postdeploy=tuple(manifest.postdeploy(first_deploy=current is None)),
    )


def image(ctx: Context, app: App, job: Job) -> Rollout:
    assert job.image is not None
    current = ctx.deployer.releases.current(app.name)
    processes = current.processes if current else [Process(name="web")]
    return Rollout(job.image, processes, cause=job.note or "deploy image")


def same_release(ctx: Context, app: App, job: Job) -> Rollout | None:
    """The running release again (config, domains); None when the app was never deployed."""
    current = ctx.deployer.releases.current(app.name)
    if current is None:
        return None
    return Rollout(
        current.image,
        current.processes,
        cause=job.note or job.kind.value,
        sha=current.sha,
        runtime=current.runtime,
    )


def deploying(ctx: Context, job: Job) -> None:
    ctx.move(job, JobState.DEPLOYING, f"{job.describe()} (attempt {job.attempts})")


Kind = Callable[[Context, App, Job], "Rollout | Release | None"]


def _deploying(make: Callable[[Context, App, Job], Rollout | None]) -> Kind:
    def run(ctx: Context, app: App, job: Job) -> Rollout | None:
        deploying(ctx, job)
        return make(ctx, app, job)

    return run


def rollback(ctx: Context, app: App, job: Job) -> Release:
    deploying(ctx, job)
    return ctx.deployer.rollback(
        app.name, job.rollback_to, domains=app.domains, timeout=ctx.deploy_timeout, progress=ctx.progress(job)
    )


KINDS: dict[JobKind, Kind] = {
    JobKind.BUILD: build,
    JobKind.IMAGE: _deploying(image),
    JobKind.CONFIG: _deploying(same_release),
    JobKind.DOMAINS: _deploying(same_release),
    JobKind.VOLUMES: _deploying(same_release),
    JobKind.ROLLBACK: rollback,
}


def execute(ctx: Context, app: App, job: Job) -> Release | None:
    """Carry out one job; returns the release it made (None when there was nothing to roll out)."""
    planned = KINDS[job.kind](ctx, app, job)
    if planned is None:
        ctx.move(job, JobState.LIVE, "saved; it applies with the app's first deploy")
        return None
    if isinstance(planned, Release):
        return planned
    return ctx.deployer.deploy(
        app.name,
        planned.image,
        planned.processes,
        domains=app.domains,
        timeout=ctx.deploy_timeout,
        release_command=planned.release_command,
        cause=planned.cause,
        sha=planned.sha,
        runtime=planned.runtime,
        progress=ctx.progress(job),
        output=ctx.output.writer(job),
        predeploy=planned.predeploy,
        postdeploy=planned.postdeploy,
    )
