"""Telling people how a job goes: commit statuses on GitHub, and monitoring's counters.

A status that cannot be posted never stops a deploy: it is logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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
