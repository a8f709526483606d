"""Roll a release out on Nomad and follow it until it is live or rolled back.

Every deploy goes through ``Deployer.deploy``: render the jobspec, let Nomad
parse and plan it, register it with check-and-set on the job modify index,
then follow the deployment with blocking queries and record the outcome on
the release.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from billowin.errors import Conflict, InvalidInput
from billowin.ports import ConfigStore, Scheduler
from billowin.release.jobspec import AppJob, Process, render
from billowin.release.oneoff import Runner
from billowin.release.store import Release, ReleaseStatus, ReleaseStore
from billowin.settings import Settings

Progress = Callable[[str], None]
TEMPLATE = "app.nomad.hcl"


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


class Deployer:
    def __init__(
        self,
        settings: Settings,
        nomad: Scheduler,
        releases: ReleaseStore,
        config: ConfigStore | None = None,
        runner: Runner | None = None,
    ) -> None:
        self.settings = settings
        self.nomad = nomad
        self.releases = releases
        self.config = config
        self.runner = runner

    def config_template(self, app: str, version: int) -> tuple[str | None, list[str]]:
        """The Nomad template for a config version, and the Vault policies it needs (none if empty)."""
        if not version or self.config is None:
            return None, []
        if not self.config.read(app, version):
            return None, []
        return self.config.template(app, version), self.config.job_vault_policies()

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
    ) -> Release:
        """Deploy ``image`` as a new release of ``app``; returns the release with its outcome.

        ``keep_scale``: process types that already run keep their current count, as on Heroku.
        ``deadlines``: overrides of the job's update timings (``healthy_deadline``,
        ``progress_deadline``, ``min_healthy_time``, ``shutdown_delay``, ``kill_timeout``).
        ``config_version``: the config-var version to run (default: the app's latest).
        ``release_command``: the Procfile ``release`` phase, run once before the rollout;
        if it fails, nothing is rolled out.
        """
        if config_version is None:
            config_version = self.config.latest(app)[0] if self.config else 0
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
        )
        try:
            config_template, policies = self.config_template(app, config_version)
            if release_command:
                self._release_phase(release, release_command, config_template, policies, progress)
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
        else:
            after = self.nomad.current(app) or {}
            if after.get("Version", -1) > (release.job_version or 0):
                release.reverted_to_version = after.get("Version")
            self._finish(release, ReleaseStatus.FAILED, result.description or result.status)
        progress(f"{app} {release.name}: {release.status.value} ({release.description})")
        return release

    def rollback(
        self, app: str, number: int | None = None, *, timeout: float = 180, progress: Progress = _quiet
    ) -> Release:
        """Roll ``app`` back to release ``number`` (default: the last live one before the current).

        The old release's image, process types and domains are deployed again as a new
        release, like Heroku's ``releases:rollback``; the current scale is kept.
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
            domains=target.domains,
            timeout=timeout,
            progress=progress,
            rollback_of=target.name,
            config_version=target.config_version,
            cause=f"rollback to {target.name}",
            sha=target.sha,
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
            variables = AppJob(
                app=app,
                release=release.name,
                image=release.image,
                processes=processes,
                domains=release.domains,
                config_template=config_template,
                vault_policies=policies,
                **(deadlines or {}),
            )
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

    def _release_phase(
        self,
        release: Release,
        command: str,
        config_template: str | None,
        policies: list[str],
        progress: Progress,
    ) -> None:
        if self.runner is None:
            raise InvalidInput(f"{release.app} has a release command but this deployer cannot run it")
        progress(f"{release.app} {release.name}: running the release command: {command}")
        spec = self.runner.spec(
            release.app,
            release.name,
            release.image,
            command,
            kind="release",
            config_template=config_template,
            vault_policies=policies,
        )
        code = 0
        for event in self.runner.run(spec, timeout=self.settings.deploy_timeout):
            if event.exit_code is not None:
                code = event.exit_code
            else:
                progress(f"  release: {event.text}")
        if code != 0:
            raise InvalidInput(
                f"the release command failed (exit {code}); nothing was rolled out",
                hint="Fix the Procfile `release:` command (see its output above) and deploy again.",
            )

    def _finish(self, release: Release, status: ReleaseStatus, description: str) -> None:
        release.status = status
        release.description = description
        release.finished_at = datetime.now(UTC)
        self.releases.save(release)
