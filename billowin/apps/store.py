"""Apps and their deploy policy, kept in Consul KV under ``billowin/apps/<name>/app``."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, Field, SecretStr, field_serializer, field_validator

from billowin.errors import Conflict, NotFound
from billowin.names import check_app_name, is_app_name
from billowin.ports import KeyValueStore

PREFIX = "billowin/apps"
# A git branch name Billowin accepts: no leading '-', no '..', only safe characters.
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}$")
GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")


class DeployOn(StrEnum):
    PUSH = "push"  # every push to the branch deploys
    CI = "ci"  # wait until CI passed for that exact SHA


class App(BaseModel):
    name: str
    repository: str  # what the builder fetches: an https:// URL or a local path
    github_repo: str | None = None  # "owner/name", as GitHub payloads say it
    branch: str = "main"
    deploy_on: DeployOn = DeployOn.PUSH
    ci_workflow: str | None = None  # only this GitHub Actions workflow counts, when set
    webhook_secret: SecretStr | None = None  # per app; else BILLOWIN_GITHUB_WEBHOOK_SECRET
    domains: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_app_name(value):
            raise ValueError("an app name must be a DNS label (lowercase letters, digits, '-')")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not BRANCH.match(value):
            raise ValueError(f"{value!r} is not a branch name Billowin accepts")
        return value

    @field_validator("github_repo")
    @classmethod
    def _github_repo(cls, value: str | None) -> str | None:
        if value is not None and not GITHUB_REPO.match(value):
            raise ValueError("github_repo must look like owner/name")
        return value

    @field_serializer("webhook_secret", when_used="json")
    def _dump_secret(self, value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value else None


class AppStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv

    @staticmethod
    def _key(name: str) -> str:
        return f"{PREFIX}/{name}/app"

    def create(self, app: App) -> App:
        if not self._kv.kv_put(self._key(app.name), app.model_dump_json().encode(), cas=0):
            raise Conflict(f"an app named {app.name!r} already exists", hint="Pick another name.")
        return app

    def save(self, app: App) -> None:
        self._kv.kv_put(self._key(app.name), app.model_dump_json().encode())

    def get(self, name: str) -> App:
        check_app_name(name)
        _, raw = self._kv.kv_get(self._key(name))
        if raw is None:
            raise NotFound(f"no app named {name!r}", hint="List apps with `billowin apps`.")
        return App.model_validate_json(raw)

    def delete(self, name: str) -> None:
        """Remove the app's record (``apps:destroy``; the caller removes the rest first)."""
        self._kv.kv_delete_tree(f"{PREFIX}/{name}/")

    def all(self) -> list[App]:
        entries = self._kv.kv_list(f"{PREFIX}/")
        return [App.model_validate_json(v) for k, v in entries if k.endswith("/app")]

    def following(self, github_repo: str, branch: str) -> list[App]:
        """Apps that deploy ``branch`` of the GitHub repository ``github_repo``."""
        return [a for a in self.all() if a.github_repo == github_repo and a.branch == branch]
