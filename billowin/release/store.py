"""Release records, kept in Consul KV.

Records live under ``billowin/releases/<app>/`` (apart from the app records,
so listing apps stays cheap however long an app's history grows).

A release is what ran: the image, the process formation and the domains,
plus the outcome of rolling it out. Numbers only go up (v1, v2, …), like
Heroku's, and are allocated with check-and-set so two deploys never share one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from billowin.errors import Conflict, NotFound
from billowin.ports import KeyValueStore
from billowin.release.jobspec import Process

PREFIX = "billowin/releases"


class ReleaseStatus(StrEnum):
    DEPLOYING = "deploying"
    LIVE = "live"
    FAILED = "failed"


def _now() -> datetime:
    return datetime.now(UTC)


class Release(BaseModel):
    app: str
    number: int
    image: str
    processes: list[Process]
    domains: list[str] = Field(default_factory=list)
    config_version: int = 0  # the app's config-var version this release runs (0: none)
    sha: str | None = None  # the commit it was built from, when built by Billowin
    runtime: str | None = None  # "python 3.14.7 (debian forky)", when Billowin built it with Packer
    cause: str = ""  # what made it: "push abc1234", "config:set GREETING", "rollback to v2"…
    status: ReleaseStatus = ReleaseStatus.DEPLOYING
    description: str = ""
    job_version: int | None = None
    reverted_to_version: int | None = None
    rollback_of: str | None = None  # the release this one restored
    created_at: datetime = Field(default_factory=_now)
    finished_at: datetime | None = None

    @property
    def name(self) -> str:
        return f"v{self.number}"


def newest_live(history: list[Release]) -> Release | None:
    """The newest live release of a history in release order."""
    live = [r for r in history if r.status == ReleaseStatus.LIVE]
    return live[-1] if live else None


class ReleaseStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    @staticmethod
    def _key(app: str, number: int) -> str:
        return f"{PREFIX}/{app}/releases/{number:08d}"

    def _next_number(self, app: str, attempts: int = 20) -> int:
        key = f"{PREFIX}/{app}/release-seq"
        for _ in range(attempts):
            index, raw = self._kv.kv_get(key)
            number = int(raw or b"0") + 1
            if self._kv.kv_put(key, str(number).encode(), cas=index):
                return number
        raise Conflict(f"could not allocate a release number for {app}")

    def create(
        self,
        app: str,
        image: str,
        processes: list[Process],
        domains: list[str],
        rollback_of: str | None = None,
        **fields: object,
    ) -> Release:
        release = Release.model_validate(
            {
                "app": app,
                "number": self._next_number(app),
                "image": image,
                "processes": processes,
                "domains": domains,
                "rollback_of": rollback_of,
                **fields,
            }
        )
        self.save(release)
        return release

    def save(self, release: Release) -> None:
        self._kv.kv_put(self._key(release.app, release.number), release.model_dump_json().encode())

    def get(self, app: str, number: int) -> Release:
        _, raw = self._kv.kv_get(self._key(app, number))
        if raw is None:
            raise NotFound(
                f"{app} has no release v{number}", hint=f"List them with `billowin releases {app}`."
            )
        return Release.model_validate_json(raw)

    def current(self, app: str) -> Release | None:
        """The newest live release: what the app runs now (failed releases were reverted)."""
        return newest_live(self.list(app))

    def delete(self, app: str) -> None:
        self._kv.kv_delete_tree(f"{PREFIX}/{app}/")

    def list(self, app: str) -> list[Release]:
        entries = self._kv.kv_list(f"{PREFIX}/{app}/releases/")
        return sorted((Release.model_validate_json(v) for _, v in entries), key=lambda r: r.number)
