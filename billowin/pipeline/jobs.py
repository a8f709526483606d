"""Pipeline jobs and where they are kept: ``billowin/pipeline/<app>/jobs/<id>`` in Consul KV.

A job is one rollout someone asked for (a push, ``deploy``, ``config:set``,
``domains:add``, ``rollback``), with every step it went through. Ids are
per-app sequence numbers allocated with check-and-set, so two API processes
never hand out the same one: the counter and the new record are written in one
transaction, and a lost race is retried after a short jittered pause.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field, ValidationError

from billowin.errors import Conflict
from billowin.ports import KeyValueStore, KVWrite

PREFIX = "billowin/pipeline"
# A lost check-and-set is retried this many times, after a pause of up to RETRY_BASE * 2**attempt
# (at most RETRY_CAP) seconds: enough for dozens of writers of one app at Consul's latency.
CAS_TRIES = 60
RETRY_BASE = 0.002
RETRY_CAP = 0.1
log = logging.getLogger("billowin.pipeline")


class JobState(StrEnum):
    QUEUED = "queued"
    BUILDING = "building"
    DEPLOYING = "deploying"
    LIVE = "live"
    FAILED = "failed"
    SUPERSEDED = "superseded"


TERMINAL = {JobState.LIVE, JobState.FAILED, JobState.SUPERSEDED}
# A job found in one of these was interrupted (its worker died); the next worker resumes it.
RUNNING = (JobState.BUILDING, JobState.DEPLOYING)


def _now() -> datetime:
    return datetime.now(UTC)


class JobKind(StrEnum):
    BUILD = "build"  # build a commit, then deploy it (webhooks, `billowin deploy --sha`)
    IMAGE = "image"  # deploy an already-built image (`billowin deploy --image`)
    CONFIG = "config"  # roll out the app's newest config vars (`config:set` / `config:unset`)
    DOMAINS = "domains"  # roll out the app's domains (`domains:add` / `domains:remove`)
    VOLUMES = "volumes"  # roll out the app's volumes (`volumes:add` / `volumes:remove`)
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
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    def _key(self, app: str, job_id: str) -> str:
        return f"{PREFIX}/{app}/jobs/{job_id}"

    def draft(self, app: str, sha: str = "", **fields: object) -> tuple[Job, list[KVWrite]]:
        """A new queued job and the writes that store it: the id counter (check-and-set on the
        value just read) and the record. Nothing is written; pass the writes to ``kv_txn``,
        alone or with others, and draft again if the transaction loses a race."""
        seq_key = f"{PREFIX}/{app}/seq"
        index, raw = self.kv.kv_get(seq_key)
        number = int(raw or b"0") + 1
        job = Job.model_validate({"id": f"{number:08d}", "app": app, "sha": sha, **fields})
        job.move(JobState.QUEUED, f"queued: {job.describe()} ({job.source})")
        record = KVWrite(self._key(app, job.id), job.model_dump_json().encode())
        return job, [KVWrite(seq_key, str(number).encode(), cas=index), record]

    def create(self, app: str, sha: str = "", **fields: object) -> Job:
        """Queue one job: the next id and its record in one transaction, retried on contention."""
        for attempt in range(CAS_TRIES):
            job, writes = self.draft(app, sha, **fields)
            if self.kv.kv_txn(writes):
                return job
            pause(attempt)
        raise Conflict(f"could not queue a job for {app}: too much contention", hint="Try again.")

    def save(self, job: Job) -> None:
        self.kv.kv_put(self._key(job.app, job.id), job.model_dump_json().encode())

    def get(self, app: str, job_id: str) -> Job | None:
        _, raw = self.kv.kv_get(self._key(app, job_id))
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
            index = self.kv.kv_wait(self._key(app, job_id), index, wait=f"{max(1, int(remaining))}s")

    def watch(self, index: int | None, wait: str = "5s") -> int:
        """Block until any job of any app changes (or ``wait`` passes); returns the new index."""
        return self.kv.kv_wait(f"{PREFIX}/", index, wait=wait)

    def delete(self, app: str) -> None:
        self.kv.kv_delete_tree(f"{PREFIX}/{app}/")

    def list(self, app: str) -> list[Job]:
        """The app's jobs in id order; a record that does not parse is logged and left out."""
        jobs = (_parse(key, value) for key, value in self.kv.kv_list(f"{PREFIX}/{app}/jobs/"))
        return sorted((j for j in jobs if j is not None), key=lambda j: j.id)

    def apps_with_open_jobs(self) -> set[str]:
        out = set()
        for key, value in self.kv.kv_list(f"{PREFIX}/"):
            parts = key.split("/")
            if len(parts) != 5 or parts[3] != "jobs" or not value:
                continue
            job = _parse(key, value)
            if job is not None and job.state not in TERMINAL:
                out.add(parts[2])
        return out


def pause(attempt: int) -> None:
    """Sleep before retry ``attempt`` (0, 1, …) of a lost check-and-set: full jitter, capped."""
    time.sleep(random.uniform(0, min(RETRY_CAP, RETRY_BASE * 2**attempt)))  # noqa: S311 - jitter, not a secret


def _parse(key: str, raw: bytes) -> Job | None:
    """One stored job, or None (logged) when the record is malformed: one bad record must
    never stop the pipeline for every app."""
    try:
        return Job.model_validate_json(raw)
    except ValidationError as exc:
        log.warning("pipeline: ignoring the malformed job record %s (%d errors)", key, exc.error_count())
        return None
