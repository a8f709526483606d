"""Which job of an app runs next: a pure function of the app's jobs, in id order.

- A job found ``building`` or ``deploying`` was interrupted (its worker died):
  it is resumed, unless it has been tried ``max_attempts`` times already.
- Of the queued code jobs (builds and images), only the newest runs; older
  ones are superseded by it.
- Other kinds (config, domains, rollback) all run, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from billowin.pipeline.jobs import CODE_KINDS, RUNNING, Job, JobState

MAX_ATTEMPTS = 2


@dataclass
class Plan:
    resume: list[Job] = field(default_factory=list)  # interrupted: queue again
    give_up: list[Job] = field(default_factory=list)  # interrupted too often: fail
    superseded: list[Job] = field(default_factory=list)  # queued code jobs older than the newest
    newest_code: Job | None = None  # what superseded them
    next: Job | None = None  # what to run now; None when nothing is queued


def plan(jobs: list[Job], *, max_attempts: int = MAX_ATTEMPTS) -> Plan:
    out = Plan()
    queued: list[Job] = []
    for job in jobs:
        if job.state in RUNNING:
            if job.attempts >= max_attempts:
                out.give_up.append(job)
                continue
            out.resume.append(job)
            queued.append(job)
        elif job.state == JobState.QUEUED:
            queued.append(job)
    code = [j for j in queued if j.kind in CODE_KINDS]
    if code:
        out.newest_code = code[-1]
        out.superseded = code[:-1]
    remaining = [j for j in queued if j.kind not in CODE_KINDS or j is out.newest_code]
    out.next = remaining[0] if remaining else None
    return out
