"""Apps and their deploy policy, kept in Consul KV under ``billowin/apps/<name>/app``."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_serializer, field_validator

from billowin.errors import Conflict, NotFound
from billowin.names import check_app_name, is_app_name, is_domain, normalize_domain
from billowin.ports import KeyValueStore

PREFIX = "billowin/apps"
DOMAINS = "billowin/domains"  # <domain> -> the app that owns it
log = logging.getLogger("billowin.apps")
# A git branch name Billowin accepts: no leading '-', no '..', only safe characters.
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}$")
# owner/name as GitHub spells it; neither part may be "." or "..".
GITHUB_REPO = re.compile(r"^(?!\.\.?/)[A-Za-z0-9_.-]{1,100}/(?!\.\.?$)[A-Za-z0-9_.-]{1,100}$")


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
    # A deploy token for a private https repository, sent to git as a header (never in the
    # URL, argv or a log) by the builder; write-only: no API answer includes it.
    repository_token: SecretStr | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_app_name(value):
            raise ValueError("an app name must be a DNS label (lowercase letters, digits, '-')")
        return value

    @field_validator("domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            domain = normalize_domain(value)
            if not is_domain(domain):
                raise ValueError(f"{value!r} is not a valid domain name (like www.example.com)")
            if domain not in out:
                out.append(domain)
        return out

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not BRANCH.fullmatch(value):
            raise ValueError(f"{value!r} is not a branch name Billowin accepts")
        return value

    @field_validator("github_repo")
    @classmethod
    def _github_repo(cls, value: str | None) -> str | None:
        if value is not None and not GITHUB_REPO.fullmatch(value):
            raise ValueError("github_repo must look like owner/name")
        return value

    @field_serializer("webhook_secret", when_used="json")
    def _dump_secret(self, value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value else None

    @field_serializer("repository_token", when_used="json")
    def _dump_repository_token(self, value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value else None  # JSON is what the store keeps


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
        """Write the record as it is (unconditionally); ``update`` is the safe read-modify-write."""
        self._kv.kv_put(self._key(app.name), app.model_dump_json().encode())

    def get(self, name: str) -> App:
        return self._read(name)[1]

    def _read(self, name: str) -> tuple[int, App]:
        check_app_name(name)
        index, raw = self._kv.kv_get(self._key(name))
        if raw is None:
            raise NotFound(f"no app named {name!r}", hint="List apps with `billowin apps`.")
        return index, App.model_validate_json(raw)

    def update(self, name: str, change: Callable[[App], None], *, attempts: int = 20) -> App:
        """Apply ``change`` to the stored app with check-and-set, re-reading on a conflict."""
        for _ in range(attempts):
            index, app = self._read(name)
            change(app)
            if self._kv.kv_put(self._key(name), app.model_dump_json().encode(), cas=index):
                return app
        raise Conflict(f"{name} kept changing while this change was saved")

    # -- custom domains: one owner each, claimed with check-and-set ------------------------------
    @staticmethod
    def _domain_key(domain: str) -> str:
        return f"{DOMAINS}/{domain}"

    def claim_domain(self, domain: str, app: str) -> str:
        """Make ``app`` the owner of ``domain`` unless another app owns it; returns the owner."""
        key = self._domain_key(domain)
        if self._kv.kv_put(key, app.encode(), cas=0):
            return app
        _, owner = self._kv.kv_get(key)
        return owner.decode() if owner else self.claim_domain(domain, app)

    def release_domain(self, domain: str, app: str) -> None:
        """Give up ``domain`` if ``app`` owns it."""
        key = self._domain_key(domain)
        _, owner = self._kv.kv_get(key)
        if owner is not None and owner.decode() == app:
            self._kv.kv_delete_tree(key)

    def delete(self, name: str) -> None:
        """Remove the app's record (``apps:destroy``; the caller removes the rest first)."""
        self._kv.kv_delete_tree(f"{PREFIX}/{name}/")

    def all(self) -> list[App]:
        """Every app; a record that does not parse is logged and left out (one bad record
        must not take down every listing and webhook)."""
        apps = []
        for key, value in self._kv.kv_list(f"{PREFIX}/"):
            if not key.endswith("/app"):
                continue
            try:
                apps.append(App.model_validate_json(value))
            except ValidationError as exc:
                log.warning("ignoring the malformed app record %s (%d errors)", key, exc.error_count())
        return apps

    def following(self, github_repo: str, branch: str) -> list[App]:
        """Apps that deploy ``branch`` of the GitHub repository ``github_repo``."""
        return [a for a in self.all() if a.github_repo == github_repo and a.branch == branch]
