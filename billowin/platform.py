"""What users do to their apps, Heroku-style: the one service the HTTP API calls.

Anything that changes what runs (a deploy, config vars, domains, a rollback)
becomes a job of the deploy pipeline (``billowin.pipeline``), so every
rollout goes through the same per-app lock, release records and statuses.
Scale and restart act on Nomad directly, as on Heroku they are not releases.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from pydantic import BaseModel

from billowin.apps.store import App, AppStore
from billowin.build.builder import Builder
from billowin.config.vars import validate_key
from billowin.errors import Conflict, InvalidInput, NotFound
from billowin.names import check_domain, normalize_domain
from billowin.pipeline.jobs import Job, JobKind, JobStore
from billowin.ports import ConfigStore, KeyValueStore, Scheduler
from billowin.release.deploy import Deployer
from billowin.release.logs import AppLogs, LogLine, instance_name
from billowin.release.oneoff import RunEvent, Runner
from billowin.release.store import Release, ReleaseStore, newest_live
from billowin.settings import Settings

SHA = re.compile(r"^[0-9a-f]{40}$")
IMAGE = re.compile(r"^[A-Za-z0-9._:/@-]{1,255}$")
MAX_SCALE = 100


class InstanceStatus(BaseModel):
    """One instance (a Nomad allocation), like a line of ``heroku ps``."""

    name: str  # web.1
    process: str  # web
    alloc: str
    state: str  # pending | running | complete | failed | lost
    release: str | None
    restarts: int
    started_at: datetime | None
    age_seconds: int | None


class ProcessSummary(BaseModel):
    process: str
    desired: int
    running: int


class AppInfo(BaseModel):
    name: str
    url: str
    repository: str
    github_repo: str | None
    branch: str
    deploy_on: str
    domains: list[str]
    release: Release | None
    processes: list[ProcessSummary]


class ConfigVars(BaseModel):
    app: str
    version: int
    values: dict[str, str | None]  # None unless the caller asked to see values


def _seconds_since(nanos: int | None) -> tuple[datetime | None, int | None]:
    if not nanos:
        return None, None
    started = datetime.fromtimestamp(nanos / 1e9, UTC)
    return started, int((datetime.now(UTC) - started).total_seconds())


class Platform:
    def __init__(
        self,
        settings: Settings,
        *,
        nomad: Scheduler,
        kv: KeyValueStore,
        apps: AppStore,
        jobs: JobStore,
        releases: ReleaseStore,
        deployer: Deployer,
        config: ConfigStore,
        runner: Runner,
        logs: AppLogs,
        builder: Builder | None,
    ) -> None:
        self.settings = settings
        self.nomad = nomad
        self.kv = kv
        self.apps = apps
        self.jobs = jobs
        self.history = releases
        self.deployer = deployer
        self.config = config
        self.runner = runner
        self.logs = logs
        self.builder = builder

    # -- apps ----------------------------------------------------------------
    def url(self, app: str) -> str:
        port = self.settings.router_port
        return f"http://{app}.{self.settings.domain}" + ("" if port == 80 else f":{port}")

    def create(self, app: App) -> App:
        return self.apps.create(app)

    def info(self, name: str) -> AppInfo:
        app = self.apps.get(name)
        history = self.history.list(name)
        release = newest_live(history)
        job = self.nomad.current(name) or {}
        desired = {g["Name"]: g["Count"] for g in job.get("TaskGroups") or []}
        running: dict[str, int] = {}
        for inst in self._instances(name, history):
            if inst.state == "running":
                running[inst.process] = running.get(inst.process, 0) + 1
        return AppInfo(
            name=app.name,
            url=self.url(app.name),
            repository=app.repository,
            github_repo=app.github_repo,
            branch=app.branch,
            deploy_on=app.deploy_on.value,
            domains=app.domains,
            release=release,
            processes=[
                ProcessSummary(process=p, desired=n, running=running.get(p, 0)) for p, n in desired.items()
            ],
        )

    def destroy(self, name: str) -> None:
        """Stop the app and remove its routes, images, config, releases and jobs."""
        self.apps.get(name)
        for job in self.nomad.jobs():
            if (
                job["ID"] == name
                or job["ID"].startswith(f"{name}-run-")
                or job["ID"].startswith(f"{name}-release-")
            ):
                self.nomad.stop(job["ID"], purge=True)
        self.config.delete(name)
        if self.builder is not None:
            # Nomad stops the instances gracefully (deregister, drain, SIGTERM); images go after.
            deadline = time.monotonic() + self.settings.deploy_timeout
            label = f"billowin.app={name}"
            while self.builder.docker.running_containers(label=label) and time.monotonic() < deadline:
                time.sleep(0.5)
            self.builder.forget(name)
        self.history.delete(name)
        self.jobs.delete(name)
        self.apps.delete(name)

    # -- config vars -----------------------------------------------------------
    def config_vars(self, name: str, *, reveal: bool = False) -> ConfigVars:
        self.apps.get(name)
        version, values = self.config.latest(name)
        return ConfigVars(
            app=name,
            version=version,
            values={k: (v if reveal else None) for k, v in sorted(values.items())},
        )

    def change_config(self, name: str, set_: Mapping[str, str], unset: list[str]) -> Job | None:
        """Write a new config version and roll it out as a new release. None if nothing changed."""
        self.apps.get(name)
        for key in [*set_, *unset]:
            validate_key(key)
        _, values = self.config.latest(name)
        new = {**values, **set_}
        for key in unset:
            new.pop(key, None)
        if new == values:
            return None
        self.config.write(name, new)
        what = [f"set {', '.join(sorted(set_))}"] if set_ else []
        what += [f"unset {', '.join(sorted(unset))}"] if unset else []
        return self.jobs.create(name, kind=JobKind.CONFIG, note=f"config: {'; '.join(what)}", source="api")

    # -- domains -----------------------------------------------------------------
    def add_domain(self, name: str, domain: str) -> Job:
        domain = check_domain(normalize_domain(domain))
        for other in self.apps.all():
            if domain in other.domains:
                raise Conflict(f"{domain} already belongs to {other.name}")
        app = self.apps.get(name)
        app.domains = [*app.domains, domain]
        self.apps.save(app)
        return self.jobs.create(name, kind=JobKind.DOMAINS, note=f"domains: add {domain}", source="api")

    def remove_domain(self, name: str, domain: str) -> Job:
        app = self.apps.get(name)
        if domain not in app.domains:
            raise NotFound(
                f"{name} has no domain {domain}", hint=f"List them with `billowin domains {name}`."
            )
        app.domains = [d for d in app.domains if d != domain]
        self.apps.save(app)
        return self.jobs.create(name, kind=JobKind.DOMAINS, note=f"domains: remove {domain}", source="api")

    # -- processes -------------------------------------------------------------
    def ps(self, name: str) -> list[InstanceStatus]:
        self.apps.get(name)
        return self._instances(name, self.history.list(name))

    def _instances(self, name: str, history: list[Release]) -> list[InstanceStatus]:
        # Scaling makes new job versions too: an instance runs the newest release at or before its version.
        versions = sorted((r.job_version, r.name) for r in history if r.job_version is not None)

        def release_of(version: int) -> str | None:
            names = [n for v, n in versions if v <= version]
            return names[-1] if names else None

        out = []
        for alloc in self.nomad.allocations(name):
            if alloc.get("DesiredStatus") != "run" and alloc.get("ClientStatus") not in (
                "running",
                "pending",
            ):
                continue
            task = (alloc.get("TaskStates") or {}).get(alloc.get("TaskGroup", ""), {}) or {}
            started, age = _seconds_since(alloc.get("CreateTime"))
            out.append(
                InstanceStatus(
                    name=instance_name(alloc),
                    process=alloc.get("TaskGroup", ""),
                    alloc=alloc["ID"][:8],
                    state=alloc.get("ClientStatus", "unknown"),
                    release=release_of(int(alloc.get("JobVersion") or 0)),
                    restarts=int(task.get("Restarts") or 0),
                    started_at=started,
                    age_seconds=age,
                )
            )
        return sorted(out, key=lambda i: (i.process, i.name))

    def scale(self, name: str, counts: Mapping[str, int]) -> dict[str, int]:
        self.apps.get(name)
        job = self.nomad.current(name)
        if job is None:
            raise InvalidInput(f"{name} is not deployed yet", hint="Deploy it first: `billowin deploy`.")
        groups = {g["Name"] for g in job.get("TaskGroups") or []}
        for process, count in counts.items():
            if process not in groups:
                raise NotFound(
                    f"{name} has no process type {process!r}",
                    hint=f"Its process types: {', '.join(sorted(groups))}.",
                )
            if not 0 <= count <= MAX_SCALE:
                raise InvalidInput(f"a process type runs 0 to {MAX_SCALE} instances, not {count}")
        for process, count in counts.items():
            self.nomad.scale(name, process, count, message=f"billowin ps:scale {process}={count}")
        return dict(counts)

    def restart(self, name: str, process: str | None = None) -> int:
        self.apps.get(name)
        return self.nomad.restart(name, process)

    # -- releases, deploys ---------------------------------------------------------
    def releases(self, name: str) -> list[Release]:
        self.apps.get(name)
        return self.history.list(name)

    def rollback(self, name: str, number: int | None) -> Job:
        self.apps.get(name)
        if number is not None:
            self.history.get(name, number)  # NotFound before anything is queued
        return self.jobs.create(name, kind=JobKind.ROLLBACK, rollback_to=number, source="api")

    def deploy(self, name: str, *, sha: str | None = None, image: str | None = None) -> Job:
        app = self.apps.get(name)
        if (sha is None) == (image is None):
            raise InvalidInput("give either a commit SHA or an image to deploy")
        if sha is not None:
            if not SHA.match(sha):
                raise InvalidInput(f"{sha!r} is not a full 40-character commit SHA")
            return self.jobs.create(name, sha, kind=JobKind.BUILD, source="api", branch=app.branch)
        assert image is not None
        if not IMAGE.match(image):
            raise InvalidInput(f"{image!r} is not an image reference")
        return self.jobs.create(name, kind=JobKind.IMAGE, image=image, source="api", note=f"deploy {image}")

    def job(self, name: str, job_id: str, *, steps_seen: int = -1, wait: float = 0) -> Job:
        found = (
            self.jobs.wait(name, job_id, steps_seen=steps_seen, timeout=wait)
            if wait > 0
            else self.jobs.get(name, job_id)
        )
        if found is None:
            raise NotFound(f"{name} has no deploy {job_id}")
        return found

    # -- one-off runs, logs ------------------------------------------------------------
    def run(self, name: str, command: str, *, timeout: float = 600) -> Iterator[RunEvent]:
        self.apps.get(name)
        release = self.history.current(name)
        if release is None:
            raise InvalidInput(f"{name} has no live release to run a command in", hint="Deploy it first.")
        config_template, policies = self.deployer.config_template(name, release.config_version)
        spec = self.runner.spec(
            name,
            release.name,
            release.image,
            command,
            kind="run",
            config_template=config_template,
            vault_policies=policies,
        )
        self.runner.start(spec)
        return self.runner.follow(spec.job_id, timeout=timeout)

    def log_lines(
        self,
        name: str,
        *,
        lines: int = 100,
        follow: bool = False,
        process: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[LogLine]:
        self.apps.get(name)
        return self.logs.stream(name, lines=lines, follow=follow, process=process, stop=stop)

    def build_log(self, name: str, job_id: str) -> str:
        job = self.job(name, job_id)
        steps = "\n".join(f"{s.at:%H:%M:%S} {s.state.value:<10} {s.message}" for s in job.steps)
        path = self.builder.log_path(name, job.sha) if self.builder and job.sha else None
        build_log = path.read_text() if path and path.exists() else "(no build log yet)"
        return f"{steps}\n\n--- build log ---\n{build_log}"
