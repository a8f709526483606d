"""What the collector reads from Nomad and Consul, through their ports (errors are the adapters').

- Nomad: the app jobs, every allocation with its task events (restarts,
  crashes, OOM kills, failed allocations), and each running allocation's
  resource usage (``/v1/client/allocation/<id>/stats``: CPU and memory).
- Consul: which instances pass their health checks (one ``/v1/health/state/any``
  call for every app), and Billowin's own records in KV: the newest finished
  release and pipeline job of each app (did its last deploy fail?) and how many
  pipeline jobs wait in each state.

Nomad keeps the last ten events of each task, with their times, so crash
counts over a window are read from Nomad itself rather than from memory:
they are right even just after an API restart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from billowin.errors import ServiceError, Unreachable
from billowin.pipeline.jobs import PREFIX as PIPELINE_PREFIX
from billowin.pipeline.jobs import Job, JobState
from billowin.ports import KeyValueStore, Scheduler, ServiceRegistry
from billowin.release.store import PREFIX as RELEASES_PREFIX
from billowin.release.store import Release, ReleaseStatus

NS = 1_000_000_000
# A task that exits right after one of these events was asked to stop: not a crash.
ASKED_TO_STOP = {"Killing", "Restart Signaled", "Signaling", "Sibling Task Failed", "Killed"}


# -- Nomad -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskEvent:
    kind: str  # "restart" | "crash" | "oom"
    at: float  # unix seconds
    ns: int  # Nomad's own timestamp, to remember which events were counted


def classify_events(events: Iterable[Mapping[str, Any]]) -> list[TaskEvent]:
    """Restarts, crashes and OOM kills among one task's events (Nomad keeps its last ten).

    ``Restarting`` is a restart in place. ``Terminated`` is a crash unless the task was
    asked to stop just before (deploys, scale-downs and restarts send ``Killing`` or
    ``Restart Signaled`` first) or was ``Killed`` right after; an OOM kill is a crash
    whose details say ``oom_killed``.
    """
    listed = list(events)
    out: list[TaskEvent] = []
    for i, event in enumerate(listed):
        kind = event.get("Type", "")
        ns = int(event.get("Time") or 0)
        if kind == "Restarting":
            out.append(TaskEvent("restart", ns / NS, ns))
        elif kind == "Terminated":
            before = listed[i - 1].get("Type") if i > 0 else None
            after = listed[i + 1].get("Type") if i + 1 < len(listed) else None
            if before in ASKED_TO_STOP or after == "Killed":
                continue
            out.append(TaskEvent("crash", ns / NS, ns))
            details = event.get("Details") or {}
            oom = str(details.get("oom_killed", "")).lower() == "true"
            if oom or "OOM" in event.get("DisplayMessage", ""):
                out.append(TaskEvent("oom", ns / NS, ns))
    return out


class NomadSource:
    def __init__(self, nomad: Scheduler) -> None:
        self._nomad = nomad
        self._is_app: dict[str, tuple[int, bool]] = {}  # job id -> (JobModifyIndex, has billowin meta)

    def app_jobs(self) -> list[str]:
        """Ids of the running (not stopped) service jobs Billowin deployed (``meta.billowin.app``)."""
        stubs = self._nomad.jobs()
        apps = []
        for stub in stubs:
            if stub.get("Type") != "service" or stub.get("Stop"):
                continue
            job_id, index = stub["ID"], int(stub.get("JobModifyIndex") or 0)
            known = self._is_app.get(job_id)
            if known is None or known[0] != index:
                try:
                    job = self._nomad.current(job_id)
                except ServiceError:
                    continue
                if job is None:
                    continue  # purged in between
                known = (index, "billowin.app" in (job.get("Meta") or {}))
                self._is_app[job_id] = known
            if known[1]:
                apps.append(job_id)
        return apps

    def allocations(self) -> list[dict[str, Any]]:
        return self._nomad.all_allocations()

    def allocation_usage(self, alloc_id: str) -> tuple[float, float] | None:
        """(CPU % of one core, memory bytes) of a running allocation; ``None`` if it just went away."""
        try:
            stats = self._nomad.allocation_stats(alloc_id)
        except ServiceError as exc:
            if isinstance(exc, Unreachable):
                raise
            return None
        usage = stats.get("ResourceUsage") or {}
        cpu = float((usage.get("CpuStats") or {}).get("Percent") or 0.0)
        memory = usage.get("MemoryStats") or {}
        measured = memory.get("Measured") or []
        rss = memory.get("RSS") if "RSS" in measured else None
        return cpu, float(rss if rss else memory.get("Usage") or 0)


# -- Consul ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeployOutcome:
    failed: bool
    summary: str
    at: float


@dataclass
class KVView:
    outcomes: dict[str, DeployOutcome] = field(default_factory=dict)  # app -> newest finished deploy
    pipeline: dict[str, int] = field(default_factory=dict)  # job state -> how many


def _ts(value: datetime | None) -> float:
    return value.timestamp() if value else 0.0


def release_outcome(release: Release) -> DeployOutcome:
    if release.status == ReleaseStatus.LIVE:
        return DeployOutcome(False, f"{release.name} is live", _ts(release.finished_at or release.created_at))
    reverted = (
        f"; Nomad rolled the app back (job version {release.reverted_to_version})"
        if release.reverted_to_version is not None
        else ""
    )
    summary = f"{release.name} failed: {release.description or 'no reason given'}{reverted}"
    return DeployOutcome(True, summary, _ts(release.finished_at or release.created_at))


def job_outcome(job: Job) -> DeployOutcome:
    at = _ts(job.steps[-1].at if job.steps else job.created_at)
    if job.state == JobState.LIVE:
        return DeployOutcome(False, f"deploy job {job.id} is live", at)
    return DeployOutcome(True, f"deploy job {job.id} failed: {job.reason or 'no reason given'}", at)


def newest(*outcomes: DeployOutcome | None) -> DeployOutcome | None:
    found = [o for o in outcomes if o is not None]
    return max(found, key=lambda o: o.at) if found else None


class ConsulSource:
    def __init__(self, kv: KeyValueStore, registry: ServiceRegistry) -> None:
        self._kv = kv
        self._registry = registry
        # Parsed records, so each collection reads and parses only what changed.
        self._jobs: dict[str, tuple[int, Job | None]] = {}  # key -> (ModifyIndex, job)
        self._finished: dict[str, Release] = {}  # key -> a release that is live or failed (never changes)

    def instance_health(self) -> dict[str, tuple[int, int]]:
        """Per service: (instances passing every check, instances registered)."""
        checks = self._registry.health_checks()
        by_instance: dict[tuple[str, str], bool] = {}
        for check in checks:
            service, instance = check.get("ServiceName") or "", check.get("ServiceID") or ""
            if not service:
                continue  # node checks
            key = (service, instance)
            by_instance[key] = by_instance.get(key, True) and check.get("Status") == "passing"
        out: dict[str, tuple[int, int]] = {}
        for (service, _), passing in by_instance.items():
            healthy, total = out.get(service, (0, 0))
            out[service] = (healthy + int(passing), total + 1)
        return out

    def kv_view(self, apps: Iterable[str]) -> KVView:
        """The newest finished deploy of each app (release or pipeline job) and the pipeline's depth."""
        wanted = set(apps)
        view = KVView()
        latest_job: dict[str, DeployOutcome] = {}
        states: Counter[str] = Counter()
        for job in self._pipeline_jobs():
            states[job.state.value] += 1
            if job.app in wanted and job.state in (JobState.LIVE, JobState.FAILED):
                found = job_outcome(job)
                latest_job[job.app] = newest(latest_job.get(job.app), found) or found
        view.pipeline = {state.value: states.get(state.value, 0) for state in JobState}
        by_app: dict[str, list[str]] = {}
        for key in self._kv.kv_keys(f"{RELEASES_PREFIX}/"):
            parts = key.split("/")
            if len(parts) == 5 and parts[3] == "releases" and parts[2] in wanted:
                by_app.setdefault(parts[2], []).append(key)
        looked_at: set[str] = set()
        for app in wanted:
            release_outcome_ = None
            for key in sorted(by_app.get(app, []), reverse=True)[:3]:  # the newest may still be deploying
                looked_at.add(key)
                release = self._release(key)
                if release is not None and release.status != ReleaseStatus.DEPLOYING:
                    release_outcome_ = release_outcome(release)
                    break
            outcome = newest(release_outcome_, latest_job.get(app))
            if outcome is not None:
                view.outcomes[app] = outcome
        self._finished = {k: r for k, r in self._finished.items() if k in looked_at}
        return view

    def _pipeline_jobs(self) -> list[Job]:
        seen: dict[str, tuple[int, Job | None]] = {}
        for entry in self._kv.kv_entries(f"{PIPELINE_PREFIX}/"):
            key, index = entry.key, entry.modify_index
            parts = key.split("/")
            if len(parts) != 5 or parts[3] != "jobs" or not entry.value:
                continue
            cached = self._jobs.get(key)
            if cached is None or cached[0] != index:
                try:
                    cached = (index, Job.model_validate_json(entry.value))
                except ValidationError:
                    cached = (index, None)
            seen[key] = cached
        self._jobs = seen
        return [job for _, job in seen.values() if job is not None]

    def _release(self, key: str) -> Release | None:
        if key in self._finished:
            return self._finished[key]
        _, raw = self._kv.kv_get(key)
        if raw is None:
            return None
        try:
            release = Release.model_validate_json(raw)
        except ValidationError:
            return None
        if release.status != ReleaseStatus.DEPLOYING:
            self._finished[key] = release
        return release
