"""What the collector reads from Nomad and Consul, with errors translated at this boundary.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import consul
import nomad
import nomad.api.exceptions as nomad_exc
import requests
from pydantic import ValidationError

from billowin.adapters.consul import ConsulRegistry
from billowin.errors import ServiceError, Unreachable
from billowin.pipeline.worker import PREFIX as PIPELINE_PREFIX
from billowin.pipeline.worker import Job, JobState
from billowin.release.store import PREFIX as RELEASES_PREFIX
from billowin.release.store import Release, ReleaseStatus
from billowin.settings import Settings

T = TypeVar("T")
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


def _nomad_error(exc: nomad_exc.BaseNomadException, what: str, address: str) -> ServiceError:
    if isinstance(exc.nomad_resp, requests.RequestException):
        return Unreachable("nomad", address)
    resp = exc.nomad_resp
    detail = resp.text.strip() if isinstance(resp, requests.Response) else str(resp)
    return ServiceError("nomad", f"{what} failed: {detail}")


class NomadSource:
    def __init__(self, settings: Settings, *, timeout: int = 10) -> None:
        self._address = settings.nomad_addr
        token = settings.nomad_token.get_secret_value() if settings.nomad_token else None
        self._client = nomad.Nomad(address=self._address, token=token, timeout=timeout)
        self._is_app: dict[str, tuple[int, bool]] = {}  # job id -> (JobModifyIndex, has billowin meta)

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except nomad_exc.BaseNomadException as exc:
            raise _nomad_error(exc, what, self._address) from exc

    def app_jobs(self) -> list[str]:
        """Ids of the running (not stopped) service jobs Billowin deployed (``meta.billowin.app``)."""
        stubs: list[dict[str, Any]] = self._call("job list", self._client.jobs.get_jobs)
        apps = []
        for stub in stubs:
            if stub.get("Type") != "service" or stub.get("Stop"):
                continue
            job_id, index = stub["ID"], int(stub.get("JobModifyIndex") or 0)
            known = self._is_app.get(job_id)
            if known is None or known[0] != index:
                try:
                    job: dict[str, Any] = self._call(f"job {job_id}", self._client.job.get_job, job_id)
                except ServiceError:
                    continue  # purged in between
                known = (index, "billowin.app" in (job.get("Meta") or {}))
                self._is_app[job_id] = known
            if known[1]:
                apps.append(job_id)
        return apps

    def allocations(self) -> list[dict[str, Any]]:
        allocs: list[dict[str, Any]] = self._call("allocation list", self._client.allocations.get_allocations)
        return allocs

    def allocation_usage(self, alloc_id: str) -> tuple[float, float] | None:
        """(CPU % of one core, memory bytes) of a running allocation; ``None`` if it just went away."""
        try:
            stats: dict[str, Any] = self._call(
                f"stats of allocation {alloc_id}",
                self._client.client.allocation.read_allocation_stats,
                alloc_id,
            )
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
    def __init__(self, registry: ConsulRegistry, address: str) -> None:
        self._registry = registry
        self._address = address
        # Parsed records, so each collection reads and parses only what changed.
        self._jobs: dict[str, tuple[int, Job | None]] = {}  # key -> (ModifyIndex, job)
        self._finished: dict[str, Release] = {}  # key -> a release that is live or failed (never changes)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except requests.RequestException as exc:
            raise Unreachable("consul", self._address) from exc
        except consul.ConsulException as exc:
            raise ServiceError("consul", f"{what} failed: {exc}") from exc

    def instance_health(self) -> dict[str, tuple[int, int]]:
        """Per service: (instances passing every check, instances registered)."""
        _, checks = self._call("health checks", self._registry.client.health.state, "any")
        by_instance: dict[tuple[str, str], bool] = {}
        for check in checks or []:
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

    def _keys(self, prefix: str) -> list[str]:
        _, keys = self._call(f"keys under {prefix}", self._registry.client.kv.get, prefix, keys=True)
        return list(keys or [])

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
        for key in self._keys(f"{RELEASES_PREFIX}/"):
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
        _, entries = self._call(
            "pipeline jobs", self._registry.client.kv.get, f"{PIPELINE_PREFIX}/", recurse=True
        )
        seen: dict[str, tuple[int, Job | None]] = {}
        for entry in entries or []:
            key, index = entry["Key"], int(entry.get("ModifyIndex") or 0)
            parts = key.split("/")
            if len(parts) != 5 or parts[3] != "jobs" or not entry.get("Value"):
                continue
            cached = self._jobs.get(key)
            if cached is None or cached[0] != index:
                try:
                    cached = (index, Job.model_validate_json(entry["Value"]))
                except ValidationError:
                    cached = (index, None)
            seen[key] = cached
        self._jobs = seen
        return [job for _, job in seen.values() if job is not None]

    def _release(self, key: str) -> Release | None:
        if key in self._finished:
            return self._finished[key]
        _, raw = self._call(f"read of {key}", self._registry.kv_get, key)
        if raw is None:
            return None
        try:
            release = Release.model_validate_json(raw)
        except ValidationError:
            return None
        if release.status != ReleaseStatus.DEPLOYING:
            self._finished[key] = release
        return release
