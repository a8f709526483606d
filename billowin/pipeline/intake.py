"""Verified webhook events in, queued jobs out: what runs inside the webhook's reply.

A delivery id is claimed with check-and-set before anything is queued, so a
replay is answered "duplicate"; a redelivery of a delivery whose jobs all
failed is processed again.
"""

from __future__ import annotations

import json

from billowin.apps.store import App, AppStore, DeployOn
from billowin.pipeline.jobs import Job, JobState, JobStore
from billowin.pipeline.webhooks import CodeEvent

DELIVERIES = "billowin/deliveries"


class Intake:
    """Turns verified events into queued jobs, durably and quickly (this runs inside the webhook reply)."""

    def __init__(self, apps: AppStore, jobs: JobStore) -> None:
        self.apps = apps
        self.jobs = jobs

    def _delivery_key(self, delivery: str) -> str:
        return f"{DELIVERIES}/{delivery}"

    def claim_delivery(self, delivery: str | None) -> bool:
        """True if this delivery id is new, or its earlier processing failed (a redelivery)."""
        if not delivery:
            return True
        key = self._delivery_key(delivery)
        kv = self.jobs.kv
        if kv.kv_put(key, b"[]", cas=0):
            return True
        index, raw = kv.kv_get(key)
        refs = (
            []
            if raw is None
            else [r.split("/") for r in raw.decode().strip("[]").replace('"', "").split(",") if r]
        )
        jobs = [self.jobs.get(app, job_id) for app, job_id in refs]
        if jobs and all(j is not None and j.state == JobState.FAILED for j in jobs):
            return kv.kv_put(key, b"[]", cas=index)  # only one concurrent redelivery wins
        return False

    def _remember(self, delivery: str | None, jobs: list[Job]) -> None:
        if delivery and jobs:  # a claimed delivery already reads "[]"
            refs = json.dumps([f"{j.app}/{j.id}" for j in jobs])
            self.jobs.kv.kv_put(self._delivery_key(delivery), refs.encode())

    def accept(self, event: CodeEvent, apps: list[App] | None = None) -> list[Job]:
        """Queue a deploy for every app this event should deploy; returns the jobs."""
        queued: list[Job] = []
        for app in self.apps.all() if apps is None else apps:
            if app.github_repo != event.repository or not self._wants(app, event):
                continue
            queued.append(
                self.jobs.create(
                    app.name,
                    event.sha,
                    branch=event.branch,
                    repository=event.repository,
                    source=event.source,
                    delivery=event.delivery,
                )
            )
        self._remember(event.delivery, queued)
        return queued

    def _wants(self, app: App, event: CodeEvent) -> bool:
        if event.kind == "push":
            return app.deploy_on == DeployOn.PUSH and event.branch == app.branch
        # A CI result: only a success deploys, and only for apps that wait for CI.
        if app.deploy_on != DeployOn.CI or not event.ci_passed:
            return False
        if app.ci_workflow and event.source == "workflow_run" and event.workflow != app.ci_workflow:
            return False
        # Fork check suites carry no branch; their SHA is then trusted only via the app's branch.
        return event.branch == app.branch
