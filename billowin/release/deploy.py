"""Roll a release out on Nomad and follow it until it is live or rolled back.

Every deploy goes through ``Deployer.deploy``: render the jobspec, let Nomad
parse and plan it, register it with check-and-set on the job modify index,
then follow the deployment with blocking queries and record the outcome on
the release.

A deploy may run commands in one-offs of the new release (its image and config vars),
``DeployTask``s: before the rollout, app.json's ``scripts.dokku.predeploy`` then the
Procfile ``release`` phase (Dokku's order), where a failure rolls nothing out; once the
release is live, app.json's postdeploy scripts, where a failure fails the deploy but rolls
nothing back (the release stays live, as on Dokku).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from billowin.errors import Conflict, InvalidInput, NotFound
from billowin.ports import ConfigStore, Scheduler
from billowin.release.jobspec import AppJob, Mount, Process, render
from billowin.release.oneoff import Runner
from billowin.release.store import Release, ReleaseStatus, ReleaseStore
from billowin.settings import Settings

if TYPE_CHECKING:
    from billowin.apps.store import AppVolume

Progress = Callable[[str], None]
TEMPLATE = "app.nomad.hcl"
LOST_CONFIG_HINT = (
    "Restore the config store (Nomad's or Vault's data) from a backup before deploying {app} again."
)


def _quiet(_msg: str) -> None:
    return None


def _placement_failures(plan: dict[str, Any]) -> str:
    failed = plan.get("FailedTGAllocs") or {}
    reasons = []
    for group, metric in failed.items():
        exhausted = metric.get("DimensionExhausted") or {}
        constraint = metric.get("ConstraintFiltered") or {}
        why = ", ".join(f"{k} ({v} nodes)" for k, v in {**exhausted, **constraint}.items())
        reasons.append(f"{group}: {why or 'no node can run it'}")
    return "; ".join(reasons)


RELEASE_PROGRESS_LINES = 500  # release-phase lines shown as job steps; the rest only in the log
RELEASE_BATCH_SECONDS = 1.0
TAIL_LINES = 3  # a failed postdeploy's last lines, in the job's reason
TAIL_CHARS = 200


@dataclass(frozen=True)
class DeployTask:
    """A command a deploy runs in a one-off of the new release: app.json scripts, the Procfile release."""

    name: str  # what the job's steps call it: predeploy, release, postdeploy
    command: str
    source: str  # where the user wrote it, for the hint: "app.json scripts.dokku.predeploy"
    again: str = "deploy again"  # how it runs again once fixed, for the hint


RELEASE_SOURCE = "the Procfile `release:` command"


class ReleasePhase:
    """A deploy task's output on its way to the job: every line to ``output``, batches to ``progress``.

    Each progress call rewrites the job record, so one call per line would make a chatty
    migration quadratic (and could outgrow Consul's value limit): lines are sent at most once
    a second, and only the first ``RELEASE_PROGRESS_LINES`` of them. The last few are kept
    (``tail``) for a failure's reason.
    """

    def __init__(
        self, release: Release, command: str, progress: Progress, output: Progress, name: str = "release"
    ) -> None:
        self.release = release
        self.command = command
        self.progress = progress
        self.output = output
        self.name = name
        self.batch: list[str] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.shown = self.total = 0
        self.last = time.monotonic()

    def line(self, text: str) -> None:
        self.total += 1
        self.output(text)
        self.tail.append(text[:TAIL_CHARS])
        if self.shown + len(self.batch) < RELEASE_PROGRESS_LINES:
            self.batch.append(f"  {self.name}: {text}")
        if time.monotonic() - self.last >= RELEASE_BATCH_SECONDS:
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        if self.batch:
            self.progress("\n".join(self.batch))
            self.shown += len(self.batch)
            self.batch = []
        self.last = time.monotonic()
        if final and self.total > self.shown:
            self.progress(f"  {self.name}: … {self.total - self.shown} more lines in the deploy's log")


class Deployer:
    def __init__(
        self,
        settings: Settings,
        nomad: Scheduler,
        releases: ReleaseStore,
        config: ConfigStore | None = None,
        runner: Runner | None = None,
        volumes: Callable[[str], list[AppVolume]] = lambda _app: [],
        pin: Callable[[str, str, str], None] = lambda _app, _process, _node: None,
    ) -> None:
        self.settings = settings
        self.nomad = nomad
        self.releases = releases
        self.config = config
        self.runner = runner
        self.volumes = volumes  # the app's volumes (volumes:add), read at each rollout
        self.pin = pin  # records the node a process type's volumes landed on

    def _mounts(self, app: str) -> tuple[dict[str, list[Mount]], dict[str, str]]:
        mounts: dict[str, list[Mount]] = {}
        pinned: dict[str, str] = {}
        for volume in self.volumes(app):
            mounts.setdefault(volume.process, []).append(
                Mount(volume=volume.docker_volume(app), path=volume.path)
            )
            if volume.node:
                pinned[volume.process] = volume.node
        return mounts, pinned

    def _pin_volumes(self, app: str, job_version: int | None) -> None:
        """After a live rollout: the node each process type with unpinned volumes now runs on."""
        unpinned = {v.process for v in self.volumes(app) if not v.node}
        for alloc in self.nomad.allocations(app) if unpinned else []:
            group = alloc.get("TaskGroup")
            current = job_version is None or alloc.get("JobVersion") == job_version
            running = alloc.get("ClientStatus") == "running" and alloc.get("NodeID")
            if group in unpinned and current and running:
                self.pin(app, str(group), str(alloc["NodeID"]))
                unpinned.discard(group)

    def config_template(self, app: str, version: int) -> tuple[str | None, list[str]]:
        """The Nomad template for a config version, and the Vault policies it needs (none if empty).

        A version the store no longer has is an error, never "no config": the release
        would otherwise start with an empty environment.
        """
        if not version or self.config is None:
            return None, []
        try:
            values = self.config.read(app, version)
        except NotFound as exc:
            raise InvalidInput(
                f"{app} needs config version {version}, which the config store no longer has; "
                "nothing was rolled out",
                hint=LOST_CONFIG_HINT.format(app=app),
            ) from exc
        if not values:
            return None, []
        return self.config.template(app, version), self.config.job_vault_policies(app)

    def _latest_config(self, app: str) -> int:
        """The app's newest config version, refusing one older than a release already ran with."""
        if self.config is None:
            return 0
        latest = self.config.latest(app)[0]
        pinned = max((r.config_version for r in self.releases.list(app)), default=0)
        if latest < pinned:  # versions only grow: the store lost them (a wiped Nomad or Vault)
            raise InvalidInput(
                f"the config store has version {latest or 'none'} of {app}'s config vars, but a release "
                f"already ran with version {pinned}: they were lost; nothing was rolled out",
                hint=LOST_CONFIG_HINT.format(app=app),
            )
        return latest

    def deploy(
        self,
        app: str,
        image: str,
        processes: list[Process],
        *,
        domains: list[str] | None = None,
        keep_scale: bool = True,
        deadlines: dict[str, str] | None = None,
        timeout: float = 180,
        progress: Progress = _quiet,
        rollback_of: str | None = None,
        config_version: int | None = None,
        release_command: str | None = None,
        cause: str = "",
        sha: str | None = None,
        runtime: str | None = None,
        output: Progress = _quiet,
        predeploy: Sequence[DeployTask] = (),
        postdeploy: Sequence[DeployTask] = (),
    ) -> Release:
        """Deploy ``image`` as a new release of ``app``; returns the release with its outcome.

        ``keep_scale``: process types that already run keep their current count, as on Heroku.
        ``deadlines``: overrides of the job's update timings (``healthy_deadline``,
        ``progress_deadline``, ``min_healthy_time``, ``shutdown_delay``, ``kill_timeout``).
        ``config_version``: the config-var version to run (default: the app's latest).
        ``release_command``: the Procfile ``release`` phase, run once before the rollout;
        if it fails, nothing is rolled out. Its every line goes to ``output``; ``progress``
        gets them in batches, and only the first ``RELEASE_PROGRESS_LINES``.
        ``predeploy``: deploy tasks run, in order, ahead of the release command (app.json's
        ``scripts.dokku.predeploy``); the same rules. ``postdeploy``: deploy tasks run, in order,
        once the release is live (app.json's postdeploy scripts); the first that fails raises
        ``InvalidInput`` with its last lines, and the release stays live.
        """
        if config_version is None:
            config_version = self._latest_config(app)
        if keep_scale:
            processes = self._keep_scale(app, processes)
        release = self.releases.create(
            app,
            image,
            processes,
            list(domains or []),
            rollback_of=rollback_of,
            config_version=config_version,
            cause=cause,
            sha=sha,
            runtime=runtime,
        )
        try:
            config_template, policies = self.config_template(app, config_version)
            tasks = [
                *predeploy,
                *([DeployTask("release", release_command, RELEASE_SOURCE)] if release_command else []),
            ]
            for task in tasks:
                code, _ = self._run_task(task, release, progress, output, config_template, policies)
                if code != 0:
                    raise InvalidInput(
                        f"the {task.name} command failed (exit {code}); nothing was rolled out",
                        hint=f"Fix {task.source} (see its output above) and deploy again.",
                    )
            progress(f"{app} {release.name}: rendering and validating the job")
            self._register(release, processes, config_template, policies, keep_scale, deadlines)
        except Exception as exc:
            self._finish(release, ReleaseStatus.FAILED, getattr(exc, "message", None) or str(exc))
            raise
        registered = self.nomad.current(app) or {}
        release.job_version = registered.get("Version")
        self.releases.save(release)
        progress(f"{app} {release.name}: registered as job version {release.job_version}; rolling out")
        result = self.nomad.wait_for_deployment(app, timeout=timeout, after_version=release.job_version)
        if result.status == "successful":
            self._finish(
                release, ReleaseStatus.LIVE, f"rollback to {rollback_of}" if rollback_of else "deployed"
            )
            self._pin_volumes(app, release.job_version)
        else:
            after = self.nomad.current(app) or {}
            if after.get("Version", -1) > (release.job_version or 0):
                release.reverted_to_version = after.get("Version")
            self._finish(release, ReleaseStatus.FAILED, result.description or result.status)
        progress(f"{app} {release.name}: {release.status.value} ({release.description})")
        if release.status == ReleaseStatus.LIVE:
            for task in postdeploy:
                code, tail = self._run_task(task, release, progress, output, config_template, policies)
                if code != 0:
                    said = f": {' / '.join(tail)}" if tail else ""
                    raise InvalidInput(
                        f"{release.name} is live, but its {task.name} command failed (exit {code}){said}",
                        hint=f"Fix {task.source} and {task.again}; {release.name} keeps running "
                        "(a failed postdeploy rolls nothing back).",
                    )
        return release

    def rollback(
        self,
        app: str,
        number: int | None = None,
        *,
        domains: list[str] | None = None,
        timeout: float = 180,
        progress: Progress = _quiet,
    ) -> Release:
        """Roll ``app`` back to release ``number`` (default: the last live one before the current).

        The old release's image, process types and config version are deployed again as a
        new release, like Heroku's ``releases:rollback``; the current scale is kept, and so
        are ``domains`` (the app's current ones: a domain given up since, perhaps to another
        app, never comes back with an old release).
        """
        history = self.releases.list(app)
        if number is None:
            live = [r for r in history if r.status == ReleaseStatus.LIVE]
            if len(live) < 2:
                raise InvalidInput(
                    f"{app} has no earlier live release to roll back to",
                    hint=f"List releases with `billowin releases {app}`.",
                )
            target = live[-2]
        else:
            target = self.releases.get(app, number)
        progress(f"{app}: rolling back to {target.name} ({target.image})")
        return self.deploy(
            app,
            target.image,
            target.processes,
            domains=target.domains if domains is None else domains,
            timeout=timeout,
            progress=progress,
            rollback_of=target.name,
            config_version=target.config_version,
            cause=f"rollback to {target.name}",
            sha=target.sha,
            runtime=target.runtime,
        )

    def _register(
        self,
        release: Release,
        processes: list[Process],
        config_template: str | None,
        policies: list[str],
        keep_scale: bool,
        deadlines: dict[str, str] | None,
        attempts: int = 3,
    ) -> None:
        """Parse, plan and register the job; a job changed meanwhile (a scale) is re-read and retried."""
        app = release.app
        for attempt in range(attempts):
            current = self.nomad.current(app)
            if keep_scale and attempt > 0:  # scaled meanwhile: keep the new counts
                processes = self._keep_scale(app, processes, current)
                release.processes = processes
                self.releases.save(release)
            try:
                mounts, pinned = self._mounts(app)
                variables = AppJob.model_validate(
                    {
                        "mounts": mounts,
                        "pinned": pinned,
                        "app": app,
                        "release": release.name,
                        "image": release.image,
                        "processes": processes,
                        "domains": release.domains,
                        "config_template": config_template,
                        "vault_policies": policies,
                        "network_mode": self.settings.app_network,
                        **(deadlines or {}),
                    }
                )
            except ValidationError as exc:
                problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                raise InvalidInput(f"{app} {release.name} cannot be rendered: {problems}") from exc
            job = self.nomad.parse(render(self.settings.jobspecs_dir, TEMPLATE, variables))
            problem = _placement_failures(self.nomad.plan(job))
            if problem:
                raise InvalidInput(
                    f"Nomad cannot place {app} {release.name}: {problem}",
                    hint="Lower the memory/CPU of its process types, scale down, or add capacity.",
                )
            try:
                self.nomad.submit(job, expect_modify_index=int(current["JobModifyIndex"]) if current else 0)
                return
            except Conflict:
                if attempt == attempts - 1:
                    raise

    def _keep_scale(
        self, app: str, processes: list[Process], current: dict[str, Any] | None = None
    ) -> list[Process]:
        """Process types that already run keep their current count, as on Heroku."""
        current = current if current is not None else self.nomad.current(app)
        counts = {g["Name"]: g["Count"] for g in (current or {}).get("TaskGroups") or []}
        return [p.model_copy(update={"count": counts[p.name]}) if p.name in counts else p for p in processes]

    def _run_task(
        self,
        task: DeployTask,
        release: Release,
        progress: Progress,
        output: Progress,
        config_template: str | None,
        policies: list[str],
    ) -> tuple[int, list[str]]:
        """Run one deploy task in a one-off of ``release``; its exit code and last lines."""
        if self.runner is None:
            raise InvalidInput(f"{release.app} has a {task.name} command but this deployer cannot run it")
        progress(f"{release.app} {release.name}: running the {task.name} command: {task.command}")
        output(f"-----> {task.name} ({task.source}): {task.command}")
        phase = ReleasePhase(release, task.command, progress, output, name=task.name)
        spec = self.runner.spec(
            release.app,
            release.name,
            release.image,
            task.command,
            kind="release",
            config_template=config_template,
            vault_policies=policies,
        )
        code = 0
        for event in self.runner.run(spec, timeout=self.settings.deploy_timeout):
            if event.exit_code is not None:
                code = event.exit_code
            else:
                phase.line(event.text)
        phase.flush(final=True)
        return code, list(phase.tail)

    def _finish(self, release: Release, status: ReleaseStatus, description: str) -> None:
        release.status = status
        release.description = description
        release.finished_at = datetime.now(UTC)
        self.releases.save(release)
