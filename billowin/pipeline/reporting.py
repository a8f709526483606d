"""Telling people how a job goes: commit statuses on GitHub, monitoring's counters, and the
output a job's commands print (the Procfile release phase), kept in a file per job.

A status that cannot be posted never stops a deploy: it is logged and dropped.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from billowin.errors import BillowinError
from billowin.pipeline.jobs import Job
from billowin.ports import CommitStatuses

log = logging.getLogger("billowin.pipeline")


class Reporter:
    def __init__(
        self,
        statuses: CommitStatuses | None = None,
        *,
        public_url: str = "",
        on_finished: Callable[[Job], None] | None = None,  # monitoring: deploys by outcome
    ) -> None:
        self.statuses = statuses
        self.public_url = public_url.rstrip("/")
        self.on_finished = on_finished

    def status(self, job: Job, state: str, description: str) -> None:
        """A commit status (``pending``, ``success``, ``failure``, ``error``) for the job's SHA."""
        if self.statuses is None or not job.repository:
            return
        target = f"{self.public_url}/pipeline/{job.app}/jobs/{job.id}" if self.public_url else None
        try:
            self.statuses.report(job.repository, job.sha, state, description, target)
        except BillowinError as exc:
            log.warning("GitHub status for %s %s: %s", job.app, job.sha[:12], exc.message)

    def finished(self, job: Job) -> None:
        if self.on_finished is not None:
            self.on_finished(job)


MAX_OUTPUT_BYTES = 10 * 1024 * 1024  # per job; what comes after is counted, not kept


class JobOutput:
    """``<state>/pipeline/<app>/<job id>.log``: everything a job's commands printed."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def path(self, app: str, job_id: str) -> Path | None:
        return self.root / app / f"{job_id}.log" if self.root is not None else None

    def writer(self, job: Job) -> Callable[[str], None]:
        path = self.path(job.app, job.id)
        written = 0

        def write(line: str) -> None:
            nonlocal written
            if path is None or written > MAX_OUTPUT_BYTES:
                return
            data = (line + "\n").encode("utf-8", "replace")
            written += len(data)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as fh:
                fh.write(data if written <= MAX_OUTPUT_BYTES else b"[billowin] output cut at 10 MiB\n")

        return write

    def read(self, app: str, job_id: str) -> str | None:
        path = self.path(app, job_id)
        return path.read_text(errors="replace") if path is not None and path.exists() else None

    def forget(self, app: str) -> None:
        if self.root is not None:
            shutil.rmtree(self.root / app, ignore_errors=True)
