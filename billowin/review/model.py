"""Review apps' records: an app's review-app settings, and one record per pull request.

Both live in Consul KV beside the pipeline's records:

- ``billowin/review-apps/<app>/settings``: ``ReviewSettings`` (written by
  ``apps:review-apps``); the ``config`` values are secrets and no answer shows them.
- ``billowin/review-apps/<app>/pulls/<number>/record``: ``PullRequest``, written by the
  webhook (what GitHub said: the head SHA, open or closed) and by the reconciler (what it
  did: the SHA it queued, the job, the GitHub deployment), always with check-and-set.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field, SecretStr, field_serializer, field_validator

from billowin.config.vars import validate_values
from billowin.errors import InvalidInput
from billowin.names import is_app_name

PREFIX = "billowin/review-apps"
SUFFIX = "-pr-"  # <app>-pr-<number>
MAX_NAME = 63  # a DNS label
TTL = re.compile(r"([0-9]{1,6})([smhd]?)")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def now() -> datetime:
    return datetime.now(UTC)


def parse_ttl(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``90s`` or a number of seconds; 0 means never."""
    match = TTL.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidInput(
            f"{text!r:.40} is not a time to live", hint="Give a number with s, m, h or d, like 7d or 12h."
        )
    return int(match[1]) * UNITS[match[2]]


def review_app_name(parent: str, number: int) -> str:
    return f"{parent}{SUFFIX}{number}"


def check_parent_name(parent: str) -> None:
    """An app whose review apps' names (``<app>-pr-<number>``) fit a DNS label up to PR 99999."""
    longest = review_app_name(parent, 99999)
    if len(longest) > MAX_NAME:
        fits = MAX_NAME - len(longest) + len(parent)
        raise InvalidInput(
            f"{parent!r} is too long for review apps: {longest!r} would be over {MAX_NAME} characters",
            hint=f"Review apps are named <app>{SUFFIX}<number>: give an app of {fits} characters at most.",
        )


class Forks(StrEnum):
    APPROVE = "approve"  # a fork's pull request waits for `review-apps:approve`
    DENY = "deny"  # a fork's pull request never gets a review app


class ReviewSettings(BaseModel):
    enabled: bool = True
    max: int = Field(default=5, ge=1, le=100)  # live review apps; the oldest go first beyond it
    ttl_seconds: int = Field(default=7 * 86400, ge=0)  # since the last push or deploy; 0: never
    config_from: str | None = None  # an app whose config vars a review app starts with
    config: dict[str, SecretStr] = Field(default_factory=dict)  # and these, over them
    forks: Forks = Forks.APPROVE

    @field_validator("config_from")
    @classmethod
    def _config_from(cls, value: str | None) -> str | None:
        if value is not None and not is_app_name(value):
            raise ValueError("config_from must be an app name")
        return value

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, value: object) -> object:
        if isinstance(value, dict):
            plain = {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in value.items()}
            try:
                validate_values(plain)
            except InvalidInput as exc:
                raise ValueError(exc.message) from exc
        return value

    @field_serializer("config", when_used="json")
    def _dump_config(self, value: dict[str, SecretStr]) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in value.items()}  # the store keeps the values

    def plain_config(self) -> dict[str, str]:
        return {k: v.get_secret_value() for k, v in self.config.items()}


class PullState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class PullRequest(BaseModel):
    parent: str
    number: int
    sha: str  # the head commit GitHub last told of
    head_branch: str
    head_repository: str | None  # owner/name; None when a fork was deleted
    repository: str  # the base repository, owner/name
    fork: bool
    state: PullState = PullState.OPEN
    opened_at: datetime = Field(default_factory=now)
    active_at: datetime = Field(default_factory=now)  # the last push or deploy: the TTL runs from it
    approved_sha: str | None = None  # a fork's commit a deploy token approved
    queued_sha: str | None = None  # the commit the reconciler queued a build of
    job_id: str | None = None
    deployment_id: int | None = None  # the GitHub deployment of queued_sha
    reported_job: str | None = None  # the job whose outcome GitHub was told

    @property
    def app(self) -> str:
        return review_app_name(self.parent, self.number)

    def waiting_for_approval(self, forks: Forks) -> bool:
        return self.fork and (forks == Forks.DENY or self.approved_sha != self.sha)


class ReviewApp(BaseModel):
    """One pull request's review app, as ``review-apps`` and the dashboard list it."""

    number: int
    app: str
    url: str
    state: str  # awaiting approval, forks denied, queued, building, deploying, live, failed, closed
    sha: str
    fork: bool
    head_repository: str | None
    head_branch: str
    opened_at: datetime
    active_at: datetime
    age_seconds: int


class ReviewAppsView(BaseModel):
    """``GET /apps/{app}/review-apps``: the settings (config keys, never values) and the apps."""

    enabled: bool
    max: int
    ttl_seconds: int
    config_from: str | None
    config_keys: list[str]
    forks: Forks
    review_apps: list[ReviewApp]
