"""Review apps: one live copy of an app per pull request, gone when the pull request closes.

Two halves, so that no accepted webhook is lost and nothing slow runs inside its reply:

- **The webhook** (``accept``, inside ``POST /hooks/github``) only records what GitHub said.
  The delivery claim and each pull request's record (``billowin/review-apps/<app>/pulls/<n>``:
  its head SHA, open or closed) are written in one Consul transaction with check-and-set, as
  the pipeline's intake does for pushes: a replay is a duplicate, a crash leaves all or none.
- **The reconciler** (``ReviewApps.run_once``, a thread in the API, woken by each delivery and
  every ``interval`` seconds) makes the review apps match the records, one app at a time under
  a Consul lock (``billowin/review-locks/<app>``), so two API processes never act twice:

  - an open pull request whose head SHA was not queued yet gets its app ``<app>-pr-<n>``
    (created on first use, with its config: ``config_from``'s vars then the settings' own
    ``config``; never the parent's unless asked), a GitHub deployment to the environment
    ``pr-<n>``, and a ``build`` job in the pipeline like any push;
  - a fork's pull request waits until a deploy token approves its head SHA
    (``review-apps:approve``); a later push to it waits for approval again. Its app is created
    only then, and a fork never gets ``config_from``'s vars: only the settings' own ``config``;
  - when the job ends, the deployment gets its status (``success`` with the review app's URL,
    or ``failure``); the TTL runs from then, or from the last push;
  - a closed pull request, one idle past the TTL, the oldest ones beyond ``max``, and every one
    of an app that is gone or has review apps turned off are destroyed with ``apps:destroy``
    (job, routes, images, config, releases) and their deployment marked ``inactive``.

Each step is idempotent and saved with check-and-set, so a crash between two of them only
repeats work the next round (a second build job of the same SHA supersedes the first).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from billowin.apps.store import App
from billowin.errors import BillowinError, Conflict, InvalidInput, NotFound
from billowin.pipeline.intake import DELIVERIES
from billowin.pipeline.jobs import CAS_TRIES, JobKind, JobState, pause
from billowin.pipeline.lock import AppLock
from billowin.pipeline.webhooks import PullRequestEvent
from billowin.platform import Platform
from billowin.ports import Coordinator, Deployments, KVWrite
from billowin.review.model import (
    PREFIX,
    SUFFIX,
    Forks,
    PullRequest,
    PullState,
    ReviewApp,
    ReviewAppsView,
    ReviewSettings,
    check_parent_name,
    now,
)
from billowin.rounds import Rounds

log = logging.getLogger("billowin.review")

LOCKS = "billowin/review-locks"
REVIEW_NAME = re.compile(r"(?P<parent>[a-z0-9-]+)" + re.escape(SUFFIX) + r"(?P<number>[0-9]{1,9})")
TERMINAL = {JobState.LIVE, JobState.FAILED, JobState.SUPERSEDED}


class ReviewLock(AppLock):
    """One reconciler at a time per parent app, across every API process."""

    @staticmethod
    def key(app: str) -> str:
        return f"{LOCKS}/{app}"


@dataclass(frozen=True)
class Accepted:
    """What one pull_request delivery changed: the review apps it touched, or a replay."""

    touched: list[str]
    duplicate: bool = False


def settings_key(parent: str) -> str:
    return f"{PREFIX}/{parent}/settings"


def pull_key(parent: str, number: int) -> str:
    return f"{PREFIX}/{parent}/pulls/{number}/record"


class ReviewStore:
    """The records, read and written with check-and-set (``model.py`` says where they live)."""

    def __init__(self, kv: Coordinator) -> None:
        self.kv = kv

    def settings(self, parent: str) -> ReviewSettings | None:
        _, raw = self.kv.kv_get(settings_key(parent))
        if raw is None:
            return None
        try:
            return ReviewSettings.model_validate_json(raw)
        except ValidationError:
            log.warning("the review-app settings of %s do not parse; review apps are off for it", parent)
            return None

    def save_settings(self, parent: str, settings: ReviewSettings) -> None:
        self.kv.kv_put(settings_key(parent), settings.model_dump_json().encode())

    def parents(self) -> list[str]:
        """Every app that has review-app settings or records (the latter outlive the former)."""
        found = set()
        for key in self.kv.kv_keys(f"{PREFIX}/"):
            parent = key.removeprefix(f"{PREFIX}/").split("/", 1)[0]
            if parent:
                found.add(parent)
        return sorted(found)

    def pull(self, parent: str, number: int) -> tuple[int, PullRequest | None]:
        index, raw = self.kv.kv_get(pull_key(parent, number))
        return index, self._parse(raw)

    def pulls(self, parent: str) -> list[tuple[int, PullRequest]]:
        out = []
        for entry in self.kv.kv_entries(f"{PREFIX}/{parent}/pulls/"):
            if (pull := self._parse(entry.value)) is not None:
                out.append((entry.modify_index, pull))
        return sorted(out, key=lambda item: item[1].number)

    def save(self, pull: PullRequest, index: int) -> bool:
        return self.kv.kv_put(pull_key(pull.parent, pull.number), pull.model_dump_json().encode(), cas=index)

    def forget(self, parent: str, number: int) -> None:
        self.kv.kv_delete_tree(f"{PREFIX}/{parent}/pulls/{number}/")

    def forget_parent(self, parent: str) -> None:
        self.kv.kv_delete_tree(f"{PREFIX}/{parent}/")

    @staticmethod
    def _parse(raw: bytes | None) -> PullRequest | None:
        if raw is None:
            return None
        try:
            return PullRequest.model_validate_json(raw)
        except ValidationError:
            log.warning("a review-app record does not parse; it is left alone")
            return None


def merged(existing: PullRequest | None, parent: str, event: PullRequestEvent) -> PullRequest | None:
    """The record after ``event``; None when there is nothing to record (a close of a pull
    request never seen)."""
    if event.action == "closed":
        if existing is None:
            return None
        return existing.model_copy(update={"state": PullState.CLOSED})
    at = now()
    fresh = PullRequest(
        parent=parent,
        number=event.number,
        repository=event.repository,
        sha=event.sha,
        head_branch=event.head_branch,
        head_repository=event.head_repository,
        fork=event.fork,
        opened_at=at,
        active_at=at,
    )
    if existing is None or existing.state == PullState.CLOSED:
        return fresh
    keep = {"opened_at", "approved_sha", "queued_sha", "job_id", "deployment_id", "reported_job"}
    return fresh.model_copy(update={k: getattr(existing, k) for k in keep})


class ReviewApps:
    def __init__(
        self,
        platform: Platform,
        *,
        deployments: Deployments | None = None,
        interval: float = 60,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.platform = platform  # creates, configures and destroys the review apps
        self.kv = platform.kv
        self.apps = platform.apps
        self.jobs = platform.jobs
        self.store = ReviewStore(self.kv)
        self.deployments = deployments
        self.clock = clock
        self.lock = ReviewLock(self.kv)
        self.rounds = Rounds("billowin-review-apps", self.run_once, interval)

    # -- the webhook's half -----------------------------------------------------------------
    def accept(self, event: PullRequestEvent, following: list[App], only: Collection[str] | None) -> Accepted:
        """Record ``event`` for every app that follows its repository and has review apps on,
        with the delivery claim, in one transaction (``only``: the apps the signer acts for)."""
        parents = [
            a
            for a in following
            if a.github_repo == event.repository
            and (only is None or a.name in only)
            and self._parent_of(a.name) is None
        ]
        claim = f"{DELIVERIES}/{event.delivery}"
        for attempt in range(CAS_TRIES):
            writes = [KVWrite(claim, b"[]", cas=0)]  # no jobs: a replay is always a duplicate
            touched = []
            for parent in parents:
                settings = self.store.settings(parent.name)
                if settings is None or not settings.enabled:
                    continue
                index, existing = self.store.pull(parent.name, event.number)
                record = merged(existing, parent.name, event)
                if record is None:
                    continue
                writes.append(
                    KVWrite(pull_key(parent.name, event.number), record.model_dump_json().encode(), cas=index)
                )
                touched.append(record.app)
            if self.kv.kv_txn(writes):
                if touched:
                    self.wake()
                return Accepted(touched)
            _, raw = self.kv.kv_get(claim)
            if raw is not None:
                return Accepted([], duplicate=True)
            pause(attempt)  # a record changed under us (the reconciler saved it): read again
        raise Conflict(
            f"could not record pull request #{event.number}: too much contention",
            hint="Redeliver it from GitHub's webhook page; nothing was recorded.",
        )

    # -- the verbs ----------------------------------------------------------------------------
    def configure(self, parent: str, settings: ReviewSettings) -> ReviewAppsView:
        """``apps:review-apps APP --enable/--disable …``: store the settings; the reconciler acts."""
        app = self.apps.get(parent)
        if self._parent_of(app.name) is not None:
            raise InvalidInput(
                f"{parent} is itself a review app", hint="Turn review apps on for its parent app."
            )
        if settings.enabled:
            check_parent_name(parent)
            if not app.github_repo:
                raise InvalidInput(
                    f"{parent} follows no GitHub repository, so no pull request can reach it",
                    hint=f"Set it with `billowin apps:update {parent} --github-repo OWNER/NAME`.",
                )
        if settings.config_from is not None:
            self.apps.get(settings.config_from)  # NotFound when there is no such app
        self.store.save_settings(parent, settings)
        self.wake()
        return self.view(parent)

    def view(self, parent: str) -> ReviewAppsView:
        self.apps.get(parent)
        settings = self.store.settings(parent) or ReviewSettings(enabled=False)
        at = self.clock()
        listed = [
            ReviewApp(
                number=pull.number,
                app=pull.app,
                url=self.platform.url(pull.app),
                state=self._state(pull, settings),
                sha=pull.sha,
                fork=pull.fork,
                head_repository=pull.head_repository,
                head_branch=pull.head_branch,
                opened_at=pull.opened_at,
                active_at=pull.active_at,
                age_seconds=max(0, int((at - pull.opened_at).total_seconds())),
            )
            for _, pull in self.store.pulls(parent)
        ]
        return ReviewAppsView(
            enabled=settings.enabled,
            max=settings.max,
            ttl_seconds=settings.ttl_seconds,
            config_from=settings.config_from,
            config_keys=sorted(settings.config),
            forks=settings.forks,
            review_apps=listed,
        )

    def approve(self, parent: str, number: int) -> ReviewApp:
        """``review-apps:approve APP PR``: a fork's pull request's current head SHA may build."""
        self.apps.get(parent)
        settings = self.store.settings(parent)
        if settings is None or not settings.enabled:
            raise InvalidInput(
                f"{parent} has review apps off", hint=f"`billowin apps:review-apps {parent} --enable`"
            )
        for attempt in range(CAS_TRIES):
            index, pull = self.store.pull(parent, number)
            if pull is None or pull.state != PullState.OPEN:
                raise NotFound(
                    f"{parent} has no open pull request #{number}", hint=f"`billowin review-apps {parent}`"
                )
            if not pull.fork:
                raise InvalidInput(
                    f"pull request #{number} comes from {pull.repository} itself: it deploys without approval"
                )
            if settings.forks == Forks.DENY:
                raise InvalidInput(
                    f"{parent} denies review apps to forks",
                    hint=f"`billowin apps:review-apps {parent} --enable --forks approve` first.",
                )
            approved = pull.model_copy(update={"approved_sha": pull.sha, "active_at": self.clock()})
            if self.store.save(approved, index):
                self.wake()
                return next(r for r in self.view(parent).review_apps if r.number == number)
            pause(attempt)
        raise Conflict(
            f"pull request #{number} kept changing while it was approved", hint="Approve it again."
        )

    # -- the reconciler ----------------------------------------------------------------------
    def start(self) -> None:
        self.rounds.start()

    def stop(self) -> None:
        self.rounds.stop()

    def wake(self) -> None:
        self.rounds.wake()

    def run_once(self) -> None:
        for parent in self.store.parents():
            with self.lock.hold(parent, wait=0) as held:
                if held:
                    self.reconcile(parent)

    def reconcile(self, parent: str) -> None:
        app = self._find(parent)
        settings = self.store.settings(parent)
        on = app is not None and settings is not None and settings.enabled
        at = self.clock()
        pulls = self.store.pulls(parent)
        live: list[tuple[int, PullRequest]] = []
        for index, pull in pulls:
            if not on:
                self._remove(pull, "review apps are off")
            elif pull.state == PullState.CLOSED:
                self._remove(pull, "the pull request was closed")
            elif (
                settings is not None
                and settings.ttl_seconds
                and (at - pull.active_at).total_seconds() > settings.ttl_seconds
            ):
                self._remove(pull, "idle past the review apps' time to live")
            else:
                live.append((index, pull))
        if not on:
            if app is None and not self.store.pulls(parent):
                self.store.forget_parent(parent)  # the app is gone: its settings go too
            return
        assert app is not None and settings is not None
        live.sort(key=lambda item: (item[1].opened_at, item[1].number))
        over = len(live) - settings.max
        for _, pull in live[: max(0, over)]:
            self._remove(pull, f"more than {settings.max} review apps: the oldest go first")
        for index, pull in live[max(0, over) :]:
            try:
                self._advance(app, settings, pull, index)
            except BillowinError as exc:
                log.warning("review app %s: %s", pull.app, exc.message)

    def _advance(self, parent: App, settings: ReviewSettings, pull: PullRequest, index: int) -> None:
        if pull.waiting_for_approval(settings.forks):
            return
        if pull.queued_sha != pull.sha:
            self._queue(parent, settings, pull, index)
        elif pull.job_id and pull.reported_job != pull.job_id:
            self._report(pull, index)

    def _queue(self, parent: App, settings: ReviewSettings, pull: PullRequest, index: int) -> None:
        name = pull.app
        if self._find(name) is None:
            self.platform.create(
                App(
                    name=name,
                    repository=parent.repository,
                    branch=pull.head_branch,
                    repository_token=parent.repository_token,
                )
            )
            values: dict[str, str] = {}
            if settings.config_from and not pull.fork:
                try:
                    values.update(self.platform.config.latest(settings.config_from)[1])
                except NotFound:
                    log.warning(
                        "review app %s: %s is gone; its config is not copied", name, settings.config_from
                    )
            values.update(settings.plain_config())
            if values:
                self.platform.config.write(name, values)
        deployment = self._deployment(pull)
        job = self.jobs.create(
            name,
            pull.sha,
            kind=JobKind.BUILD,
            source="pull_request",
            branch=pull.head_branch,
            repository=pull.repository,
            note=f"pull request #{pull.number}",
        )
        queued = pull.model_copy(
            update={
                "queued_sha": pull.sha,
                "job_id": job.id,
                "deployment_id": deployment,
                "reported_job": None,
            }
        )
        if not self.store.save(queued, index):
            log.info("review app %s: its record changed while a build was queued; next round", name)

    def _deployment(self, pull: PullRequest) -> int | None:
        if self.deployments is None:
            return None
        try:
            deployment = self.deployments.create_deployment(
                pull.repository, pull.sha, f"pr-{pull.number}", f"review app {pull.app}"
            )
            self.deployments.deployment_status(
                pull.repository, deployment, "in_progress", "building", self.platform.url(pull.app)
            )
            return deployment
        except BillowinError as exc:
            log.warning("GitHub deployment for %s: %s", pull.app, exc.message)
            return None

    def _report(self, pull: PullRequest, index: int) -> None:
        assert pull.job_id is not None
        job = self.jobs.get(pull.app, pull.job_id)
        if job is None or job.state not in TERMINAL:
            return
        if (
            job.state != JobState.SUPERSEDED
            and pull.deployment_id is not None
            and self.deployments is not None
        ):
            live = job.state == JobState.LIVE
            try:
                self.deployments.deployment_status(
                    pull.repository,
                    pull.deployment_id,
                    "success" if live else "failure",
                    "live" if live else (job.reason or "failed")[:140],
                    self.platform.url(pull.app),
                )
            except BillowinError as exc:
                log.warning("GitHub deployment status for %s: %s", pull.app, exc.message)
        self.store.save(
            pull.model_copy(update={"reported_job": pull.job_id, "active_at": self.clock()}), index
        )

    def _remove(self, pull: PullRequest, why: str) -> None:
        name = pull.app
        if self._find(name) is not None:
            try:
                self.platform.destroy(name)
            except Conflict as exc:
                log.info("review app %s: %s; next round", name, exc.message)
                return
        if pull.deployment_id is not None and self.deployments is not None:
            try:
                self.deployments.deployment_status(
                    pull.repository, pull.deployment_id, "inactive", why[:140], None
                )
            except BillowinError as exc:
                log.warning("GitHub deployment status for %s: %s", name, exc.message)
        self.store.forget(pull.parent, pull.number)
        log.info("review app %s destroyed: %s", name, why)

    def _state(self, pull: PullRequest, settings: ReviewSettings) -> str:
        if pull.state == PullState.CLOSED:
            return "closed"
        if pull.fork and settings.forks == Forks.DENY:
            return "forks denied"
        if pull.waiting_for_approval(settings.forks):
            return "awaiting approval"
        if pull.queued_sha != pull.sha or pull.job_id is None:
            return "queued"
        job = self.jobs.get(pull.app, pull.job_id)
        return job.state.value if job is not None else "queued"

    def _find(self, name: str) -> App | None:
        try:
            return self.apps.get(name)
        except NotFound:
            return None

    def _parent_of(self, name: str) -> str | None:
        """The app whose review app ``name`` is, when a record says so."""
        match = REVIEW_NAME.fullmatch(name)
        if match is None:
            return None
        _, pull = self.store.pull(match["parent"], int(match["number"]))
        return match["parent"] if pull is not None else None


def settings_from(previous: ReviewSettings | None, change: Mapping[str, object]) -> ReviewSettings:
    """New settings: the fields ``change`` gives, over what was stored (so ``--disable`` keeps
    the rest); a ``config_from`` of "" clears it."""
    update = dict(change)
    if update.get("config_from") == "":
        update["config_from"] = None
    try:
        return ReviewSettings.model_validate({**(previous or ReviewSettings()).model_dump(), **update})
    except ValidationError as exc:
        raise InvalidInput(f"review-app settings refused: {exc.errors()[0]['msg']}") from exc
