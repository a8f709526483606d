"""Verified webhook events in, queued jobs out: what runs inside the webhook's reply.

``Intake.deliver`` claims a delivery and queues its jobs in ONE Consul
transaction: the delivery record ``billowin/deliveries/<id>`` (a JSON list of
the ``app/job`` ids it queued), every job record, every per-app id counter and
every "last pushed" record are written together or not at all. So a replay is
answered "duplicate", a crash or a Consul error before the transaction leaves
nothing behind (GitHub's redelivery is processed), and two concurrent
deliveries of one id queue its jobs once: the loser's check-and-set fails, it
reads again and finds a duplicate. A redelivery of a delivery whose jobs all
failed is processed again.

The claim is optimistic: a delivery is nearly always new, so the first
transaction writes its record with check-and-set index 0 ("only if absent")
without reading it first, one round trip in all. Only a transaction that
loses reads the record: there, a replay is a duplicate, a redelivery of failed
jobs is tried again with check-and-set on the index just read, and an absent
record means another job of one of these apps took an id first (retried after
a pause).

Which apps: those that follow the event's repository and branch, that the
delivery's signer may act for (``only``: the apps whose own webhook secret
signed it; ``None`` for the global secret and Travis), and whose deploy policy
wants it. A ``check_suite`` names no head repository, so it deploys only the
SHA the app's branch was last pushed to (``billowin/pipeline/<app>/pushed``,
recorded by every verified push, whatever the app's policy).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field

from billowin.apps.store import App, AppListing, DeployOn
from billowin.errors import Conflict, InvalidInput
from billowin.pipeline.jobs import CAS_TRIES, PREFIX, Job, JobState, JobStore, pause
from billowin.pipeline.webhooks import CodeEvent
from billowin.ports import KVWrite

DELIVERIES = "billowin/deliveries"


@dataclass(frozen=True)
class Delivery:
    """What one delivery did: the jobs it queued, or nothing because it was a replay."""

    jobs: list[Job] = field(default_factory=list)
    duplicate: bool = False


class Intake:
    """Turns verified events into queued jobs, durably and quickly (this runs inside the webhook reply)."""

    def __init__(self, apps: AppListing, jobs: JobStore) -> None:
        self.apps = apps  # only ``all()`` is used: the store, or the API's cache of it
        self.jobs = jobs

    @staticmethod
    def delivery_key(delivery: str) -> str:
        return f"{DELIVERIES}/{delivery}"

    @staticmethod
    def pushed_key(app: str) -> str:
        return f"{PREFIX}/{app}/pushed"

    def pushed(self, app: str) -> tuple[str, str] | None:
        """``(branch, sha)`` of the last verified push to the app's branch, if any."""
        _, raw = self.jobs.kv.kv_get(self.pushed_key(app))
        try:
            record = json.loads(raw) if raw else None
            return (str(record["branch"]), str(record["sha"])) if record else None
        except (ValueError, KeyError, TypeError):
            return None

    def deliver(
        self, event: CodeEvent, apps: list[App] | None = None, *, only: Collection[str] | None = None
    ) -> Delivery:
        """Claim ``event.delivery`` and queue a job for every app the event should deploy, atomically.

        ``apps``: the apps already read (else all of them); ``only``: the names of the apps the
        delivery may act for (``None``: every app). An event without a delivery id is not deduplicated.
        """
        candidates = [
            a
            for a in (self.apps.all() if apps is None else apps)
            if a.github_repo == event.repository and (only is None or a.name in only)
        ]
        kv = self.jobs.kv
        index = 0  # the delivery record's modify index as last read: 0 while it does not exist
        for attempt in range(CAS_TRIES):
            writes: list[KVWrite] = []
            jobs: list[Job] = []
            for app in candidates:
                if event.kind == "push" and event.branch is not None and event.branch == app.branch:
                    record = json.dumps({"branch": event.branch, "sha": event.sha}).encode()
                    writes.append(KVWrite(self.pushed_key(app.name), record))
                if not self._wants(app, event):
                    continue
                job, job_writes = self.jobs.draft(
                    app.name,
                    event.sha,
                    branch=event.branch,
                    repository=event.repository,
                    source=event.source,
                    delivery=event.delivery,
                )
                jobs.append(job)
                writes += job_writes
            if event.delivery:
                refs = json.dumps([f"{j.app}/{j.id}" for j in jobs]).encode()
                writes.insert(0, KVWrite(self.delivery_key(event.delivery), refs, cas=index))
            if kv.kv_txn(writes):
                return Delivery(jobs)
            if event.delivery:
                # Lost: the record exists (a replay, a concurrent delivery of this id, a
                # redelivery) or changed since it was read, or a job id was taken meanwhile.
                tried = index
                index, raw = kv.kv_get(self.delivery_key(event.delivery))
                if raw is not None and not self._redeliverable(raw):
                    return Delivery(duplicate=True)
                if index != tried:
                    continue  # the claim itself was stale: try again on the index just read
            pause(attempt)  # another job of one of these apps took an id first
        raise Conflict(
            f"could not queue {event.repository} {event.sha[:12]}: too much contention",
            hint="Redeliver it from GitHub's webhook page; nothing was queued.",
        )

    def _redeliverable(self, raw: bytes) -> bool:
        """Whether a stored delivery queued jobs and every one of them failed (then it runs again)."""
        try:
            refs = json.loads(raw)
            pairs = [ref.split("/", 1) for ref in refs]
            found = [self.jobs.get(app, job_id) for app, job_id in pairs]
        except (ValueError, TypeError, AttributeError, InvalidInput):
            return False  # not a record this code wrote: never act on it twice
        return bool(found) and all(j is not None and j.state == JobState.FAILED for j in found)

    def _wants(self, app: App, event: CodeEvent) -> bool:
        if event.branch is None or event.branch != app.branch:
            return False
        if event.kind == "push":
            return app.deploy_on == DeployOn.PUSH
        # A CI result: only a success deploys, and only for apps that wait for CI.
        if app.deploy_on != DeployOn.CI or not event.ci_passed:
            return False
        if app.ci_workflow and event.source == "workflow_run" and event.workflow != app.ci_workflow:
            return False
        if event.source == "check_suite":
            # No head repository to check: trust only the SHA this branch was last pushed to.
            return self.pushed(app.name) == (app.branch, event.sha)
        return True
