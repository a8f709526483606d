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

from billowin.adapters.consul import ConsulRegistry
from billowin.errors import InvalidInput
from billowin.jobspec import AppJob, Process, render
from billowin.ports import Scheduler
from billowin.releases import Release, ReleaseStatus, ReleaseStore
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
    def __init__(self, settings: Settings, nomad: Scheduler, consul: ConsulRegistry) -> None:
        self.settings = settings
        self.nomad = nomad
        self.releases = ReleaseStore(consul)

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
    ) -> Release:
        """Deploy ``image`` as a new release of ``app``; returns the release with its outcome.

        ``keep_scale``: process types that already run keep their current count, as on Heroku.
        ``deadlines``: overrides of the job's update timings (``healthy_deadline``,
        ``progress_deadline``, ``min_healthy_time``, ``shutdown_delay``, ``kill_timeout``).
        """
        current = self.nomad.current(app)
        if keep_scale and current:
            counts = {g["Name"]: g["Count"] for g in current.get("TaskGroups") or []}
            processes = [
                p.model_copy(update={"count": counts[p.name]}) if p.name in counts else p for p in processes
            ]
        release = self.releases.create(app, image, processes, list(domains or []), rollback_of=rollback_of)
        progress(f"{app} {release.name}: rendering and validating the job")
        variables = AppJob(
            app=app,
            release=release.name,
            image=image,
            processes=processes,
            domains=release.domains,
            **(deadlines or {}),
        )
        try:
            job = self.nomad.parse(render(self.settings.jobspecs_dir, TEMPLATE, variables))
            problem = _placement_failures(self.nomad.plan(job))
            if problem:
                raise InvalidInput(
                    f"Nomad cannot place {app} {release.name}: {problem}",
                    hint="Lower the memory/CPU of its process types, scale down, or add capacity.",
                )
            self.nomad.submit(job, expect_modify_index=int(current["JobModifyIndex"]) if current else 0)
        except Exception as exc:
            self._finish(release, ReleaseStatus.FAILED, str(exc))
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
        )

    def _finish(self, release: Release, status: ReleaseStatus, description: str) -> None:
        release.status = status
        release.description = description
        release.finished_at = datetime.now(UTC)
        self.releases.save(release)
