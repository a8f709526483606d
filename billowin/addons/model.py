"""Add-ons' records: one per Postgres or Redis service, and what each kind needs.

An add-on ``NAME`` of app ``APP`` is:

- ``billowin/addons/<NAME>/record`` in Consul KV: ``Addon`` (kind, version, image, port, the node
  that holds its volume, the apps it is attached to), always written with check-and-set;
- the Nomad service job ``addon-<NAME>`` (``jobspecs/addon.nomad.hcl``) and its Consul
  service of the same name (never tagged ``billowin.web``: the router never sees it);
- the Docker volume ``billowin-addon-<NAME>`` with its data, on the node that runs it;
- its credentials, in the config store under ``addon-<NAME>`` (as an app's config vars are):
  only the add-on's job and the apps it is attached to (in their ``DATABASE_URL`` or
  ``REDIS_URL``) ever hold them;
- its backups, under ``<state>/addon-backups/<NAME>/`` (``billowin.addons.backups``).

App names may not start with ``addon-``, so no app's job, service or config collides.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from billowin.errors import InvalidInput
from billowin.names import ADDON_PREFIX, DNS_LABEL

PREFIX = "billowin/addons"
PORT_PREFIX = "billowin/addon-ports"  # <port>: the add-on that holds it (check-and-set 0)
JOB_PREFIX = ADDON_PREFIX  # the Nomad job, the Consul service and the config store key
VOLUME_PREFIX = "billowin-addon-"
MAX_NAME = 63 - len(JOB_PREFIX)
# A config var an add-on sets: like any key, but upper case only (DATABASE_URL, HEROKU_POSTGRESQL_RED_URL…).
ATTACH_VAR = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")
VERSION = re.compile(r"^[0-9]{1,3}$")


def now() -> datetime:
    return datetime.now(UTC)


class Kind(StrEnum):
    POSTGRES = "postgres"
    REDIS = "redis"


class KindSpec(BaseModel):
    """What one kind of add-on needs; the versions come from ``billowin/versions.toml``."""

    kind: Kind
    var: str  # the config var it sets on the apps it is attached to
    scheme: str  # of that URL
    port: int  # the port it listens on inside its container
    data: str  # where its volume is mounted
    user: str  # the user its task runs as (Postgres refuses root)
    backup_suffix: str


KINDS: dict[Kind, KindSpec] = {
    Kind.POSTGRES: KindSpec(
        kind=Kind.POSTGRES,
        var="DATABASE_URL",
        scheme="postgres",
        port=5432,
        data="/var/lib/postgresql",
        user="postgres",
        backup_suffix=".dump",
    ),
    Kind.REDIS: KindSpec(
        kind=Kind.REDIS,
        var="REDIS_URL",
        scheme="redis",
        port=6379,
        data="/var/lib/redis",
        user="redis",
        backup_suffix=".rdb",
    ),
}


def kind_version(value: str) -> str | None:
    """The version in ``postgres:17``, as Heroku users write add-on plans; None without one."""
    _, sep, version = value.strip().partition(":")
    if not sep:
        return None
    if not VERSION.fullmatch(version):
        raise InvalidInput(
            f"{version[:20]!r} is not a version", hint="Give a major version: postgres:17, redis:7."
        )
    return version


def parse_kind(value: str) -> Kind:
    aliases = {"postgresql": Kind.POSTGRES, "heroku-postgresql": Kind.POSTGRES, "heroku-redis": Kind.REDIS}
    text = value.strip().lower().split(":", 1)[0]
    try:
        return aliases.get(text) or Kind(text)
    except ValueError:
        raise InvalidInput(
            f"{value[:40]!r} is not an add-on Billowin offers", hint="Give postgres or redis."
        ) from None


def check_addon_name(value: object) -> str:
    if not isinstance(value, str) or not DNS_LABEL.fullmatch(value) or len(value) > MAX_NAME:
        raise InvalidInput(
            f"{str(value)[:80]!r} is not a valid add-on name: lowercase letters, digits and '-',"
            f" starting with a letter, at most {MAX_NAME} characters"
        )
    return value


def check_attach_var(value: str) -> str:
    if not ATTACH_VAR.fullmatch(value):
        raise InvalidInput(
            f"{value[:70]!r} is not a config var an add-on can set",
            hint="Give upper-case letters, digits and '_', starting with a letter, like DATABASE_URL.",
        )
    return value


def job_id(name: str) -> str:
    return f"{JOB_PREFIX}{name}"


def volume_name(name: str) -> str:
    return f"{VOLUME_PREFIX}{name}"


def new_password() -> str:
    return secrets.token_urlsafe(24)  # URL-safe: it goes into DATABASE_URL as it is


class State(StrEnum):
    PROVISIONING = "provisioning"  # accepted; the worker builds the image, starts the job, links
    READY = "ready"  # up (attachments not linked yet are linked on the worker's next round)
    FAILED = "failed"  # never came up; the reason says why; `addons:create` again retries


class Attachment(BaseModel):
    app: str
    var: str
    linked: bool = False  # the config var is set (the app's config job is queued)
    job: str = ""  # that job (`billowin deploy:status APP JOB` follows it)


class Addon(BaseModel):
    name: str
    kind: Kind
    version: str
    app: str  # the app that created it (its "billing app", as Heroku says)
    port: int  # the node's port it is published on (static, so its URL never changes)
    attachments: list[Attachment] = Field(default_factory=list)
    state: State = State.PROVISIONING
    reason: str = ""
    image: str = ""
    node: str | None = None  # the Nomad node that holds its volume; it never runs elsewhere
    address: str = ""  # where linked apps reach it (the node's address on the apps' network)
    created_at: datetime = Field(default_factory=now)

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]

    @property
    def job(self) -> str:
        return job_id(self.name)

    @property
    def volume(self) -> str:
        return volume_name(self.name)

    def attached(self, app: str) -> Attachment | None:
        return next((a for a in self.attachments if a.app == app), None)

    def database(self) -> str:
        return self.name.replace("-", "_")

    def url(self, password: str) -> str:
        """The URL the attached apps get, credentials and all (never logged, never listed)."""
        if self.kind == Kind.POSTGRES:
            return f"postgres://{self.database()}:{password}@{self.address}:{self.port}/{self.database()}"
        return f"redis://default:{password}@{self.address}:{self.port}/0"

    def shown_url(self) -> str:
        """The URL without its password: what listings show."""
        return self.url("********") if self.address else ""


class AddonView(BaseModel):
    """What ``addons`` and ``addons:info`` show: never a credential."""

    name: str
    kind: Kind
    version: str
    app: str
    state: State
    reason: str
    attachments: list[Attachment]
    node: str | None
    url: str
    job: str
    volume: str
    created_at: datetime
    status: str = ""  # the job's health, from Consul: passing, critical…
    backups: list[Any] = Field(default_factory=list)


def view(addon: Addon, status: str = "", backups: list[Any] | None = None) -> AddonView:
    return AddonView(
        name=addon.name,
        kind=addon.kind,
        version=addon.version,
        app=addon.app,
        state=addon.state,
        reason=addon.reason,
        attachments=addon.attachments,
        node=addon.node,
        url=addon.shown_url(),
        job=addon.job,
        volume=addon.volume,
        created_at=addon.created_at,
        status=status,
        backups=backups or [],
    )
