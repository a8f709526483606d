"""Vault's KV v2 secrets engine, through hvac: config vars (``VaultKV``), and certificate keys
and the ACME account (``VaultSecrets``, at the end).

App ``A``'s config is the secret ``<mount>/billowin/A``; its versions are KV v2's
own (Vault numbers them 1, 2, … under a per-secret lock, so two writers never
share one), and it keeps the last ``KEEP_VERSIONS`` of them, not KV v2's 10.
A job reads its pinned version through a Nomad template
``secret "<mount>/data/billowin/A?version=N"`` with its app's own policy,
``billowin-app-A``, which can read ``<mount>/data/billowin/A`` and nothing
else: one app's job token cannot read another app's config. Every write
makes sure the app's policy exists; ``delete`` removes it.

Error messages name apps, versions and keys, never values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import hvac
import hvac.exceptions as hvac_exc
import requests

from billowin.config.vars import env_line_template, validate_app, validate_values
from billowin.errors import ConfigError, InvalidInput, NotFound, ServiceError, Unreachable
from billowin.names import KEY_PART
from billowin.ports import ComponentHealth
from billowin.settings import Settings

SYSTEM = "vault"
POLICY_PREFIX = "billowin-app-"
# Versions KV v2 keeps per app (its default is 10): releases pin versions, and a
# rollback must still find the version its release ran with.
KEEP_VERSIONS = 1000
PERMISSION_HINT = (
    "Check BILLOWIN_VAULT_TOKEN (or VAULT_TOKEN): it must be a valid Vault token "
    "allowed to read and write {mount}/data/billowin/* and {mount}/metadata/billowin/*, "
    "and to write and delete the policies sys/policy/billowin-app-* (one per app)."
)


def policy_name(app: str) -> str:
    """The Vault policy of one app's jobs."""
    return f"{POLICY_PREFIX}{app}"


def _errors(exc: hvac_exc.VaultError) -> str:
    errors = exc.errors
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    return str(exc.args[0]) if exc.args and exc.args[0] else type(exc).__name__


class VaultClient:
    """hvac against ``BILLOWIN_VAULT_ADDR`` with ``BILLOWIN_VAULT_TOKEN``; every Vault error is
    translated once, in ``_call``."""

    permission_hint = PERMISSION_HINT

    def __init__(self, settings: Settings, *, timeout: int = 10) -> None:
        if not settings.vault_addr:
            raise ConfigError(
                "no Vault address is set",
                hint="Set BILLOWIN_VAULT_ADDR (or VAULT_ADDR), e.g. http://127.0.0.1:8200.",
            )
        self._address = settings.vault_addr
        self.mount = settings.vault_kv_mount.strip("/")
        token = settings.vault_token.get_secret_value() if settings.vault_token else None
        self._client = hvac.Client(url=self._address, token=token, timeout=timeout)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except hvac_exc.InvalidPath as exc:
            raise NotFound(f"Vault has no {what}") from exc
        except (hvac_exc.Forbidden, hvac_exc.Unauthorized) as exc:
            raise ServiceError(
                SYSTEM,
                f"{what}: permission denied ({_errors(exc)})",
                hint=self.permission_hint.format(mount=self.mount),
            ) from exc
        except hvac_exc.InvalidRequest as exc:
            raise InvalidInput(f"Vault refused the {what}: {_errors(exc)}") from exc
        except hvac_exc.VaultDown as exc:
            raise ServiceError(
                SYSTEM,
                f"{what} failed: Vault is sealed or down",
                hint="Unseal Vault (`vault operator unseal`).",
            ) from exc
        except hvac_exc.VaultError as exc:
            raise ServiceError(SYSTEM, f"{what} failed: {_errors(exc)}") from exc
        except requests.RequestException as exc:
            raise Unreachable(
                SYSTEM, self._address, hint="Is Vault running? Check BILLOWIN_VAULT_ADDR (or VAULT_ADDR)."
            ) from exc

    # -- Probe ------------------------------------------------------------
    def health(self) -> ComponentHealth:
        try:
            resp = self._call("health", self._client.sys.read_health_status, method="GET")
        except ServiceError as exc:
            return ComponentHealth(SYSTEM, False, address=self._address, error=exc.message)
        body: dict[str, Any] = resp.json() if isinstance(resp, requests.Response) else dict(resp or {})
        version = str(body.get("version")) if body.get("version") else None
        if not body.get("initialized", False):
            return ComponentHealth(SYSTEM, False, version, self._address, error="Vault is not initialized")
        if body.get("sealed", True):
            return ComponentHealth(SYSTEM, False, version, self._address, error="Vault is sealed")
        return ComponentHealth(SYSTEM, True, version, self._address)


class VaultKV(VaultClient):
    """The ``ConfigStore`` port on a real Vault's KV v2 engine."""

    backend = "vault"

    def path(self, app: str) -> str:
        return f"billowin/{app}"

    # -- ConfigStore ----------------------------------------------------------
    def write(self, app: str, values: Mapping[str, str]) -> int:
        validate_app(app)
        data = validate_values(values)
        resp = self._call(
            f"config of {app}",
            self._client.secrets.kv.v2.create_or_update_secret,
            path=self.path(app),
            secret=data,
            mount_point=self.mount,
        )
        version = int(resp["data"]["version"])
        self.ensure_policy(app)
        if version == 1:  # a new secret: keep more than KV v2's default of 10 versions
            self._call(
                f"config of {app}",
                self._client.secrets.kv.v2.update_metadata,
                path=self.path(app),
                max_versions=KEEP_VERSIONS,
                mount_point=self.mount,
            )
        return version

    def read(self, app: str, version: int) -> dict[str, str]:
        validate_app(app)
        missing = f"app {app} has no config version {version}"
        if version < 1:  # KV v2 reads version 0 as "the newest"
            raise NotFound(missing)
        try:
            resp = self._call(
                f"config version {version} of {app}",
                self._client.secrets.kv.v2.read_secret_version,
                path=self.path(app),
                version=version,
                mount_point=self.mount,
                raise_on_deleted_version=True,
            )
        except NotFound:
            raise NotFound(missing) from None
        return self._values(resp, missing)

    def latest(self, app: str) -> tuple[int, dict[str, str]]:
        validate_app(app)
        try:
            resp = self._call(
                f"config of {app}",
                self._client.secrets.kv.v2.read_secret_version,
                path=self.path(app),
                mount_point=self.mount,
                raise_on_deleted_version=True,
            )
        except NotFound as exc:
            # A newest version that was deleted answers 404 too, with its metadata.
            body = getattr(exc.__cause__, "json", None) or {}
            meta = (body.get("data") or {}).get("metadata") if isinstance(body, dict) else None
            if meta:
                raise NotFound(f"the newest config version of {app} was deleted") from None
            return 0, {}
        version = int(resp["data"]["metadata"]["version"])
        return version, self._values(resp, f"app {app} has no config version {version}")

    def delete(self, app: str) -> None:
        validate_app(app)
        with contextlib.suppress(NotFound):
            self._call(
                f"config of {app}",
                self._client.secrets.kv.v2.delete_metadata_and_all_versions,
                path=self.path(app),
                mount_point=self.mount,
            )
        self._call(f"policy {policy_name(app)}", self._client.sys.delete_policy, name=policy_name(app))

    def template(self, app: str, version: int) -> str:
        validate_app(app)
        line = env_line_template("$k", "$v")
        return (
            f'{{{{ with secret "{self.mount}/data/{self.path(app)}?version={version}" }}}}'
            f"{{{{ range $k, $v := .Data.data }}}}{line}{{{{ end }}}}{{{{ end }}}}"
        )

    def job_vault_policies(self, app: str) -> list[str]:
        return [policy_name(validate_app(app))]

    def ensure_policy(self, app: str) -> None:
        """Write the policy ``app``'s jobs read their config with: its own path, read only (idempotent)."""
        name = policy_name(validate_app(app))
        rules = f'path "{self.mount}/data/{self.path(app)}" {{\n  capabilities = ["read"]\n}}\n'
        self._call(f"policy {name}", self._client.sys.create_or_update_policy, name=name, policy=rules)

    # -- helpers -------------------------------------------------------------
    @staticmethod
    def _values(resp: Any, missing: str) -> dict[str, str]:
        data = ((resp or {}).get("data") or {}).get("data")
        if data is None:  # a destroyed version has metadata but no data
            raise NotFound(missing)
        return {str(k): str(v) for k, v in data.items()}


CERT_SECRETS = "billowin-certs"
CERT_PERMISSION_HINT = (
    "Check BILLOWIN_VAULT_TOKEN (or VAULT_TOKEN): the API's token must be allowed to read, write and "
    "delete {mount}/data/billowin-certs/* and {mount}/metadata/billowin-certs/*; each router's to "
    "read {mount}/data/billowin-certs/*."
)


class VaultSecrets(VaultClient):
    """The ``SecretStore`` port: certificate keys and the ACME account, one KV v2 secret each under
    ``<mount>/billowin-certs/<name>``. Each write is a new version, so a reader holding an older
    version number (the one stored beside a chain) still reads the key that belongs to it."""

    permission_hint = CERT_PERMISSION_HINT

    def _path(self, name: str) -> str:
        if not isinstance(name, str) or not KEY_PART.fullmatch(name) or name in (".", ".."):
            raise InvalidInput(f"{str(name)[:80]!r} is not a secret name")
        return f"{CERT_SECRETS}/{name}"

    def put(self, name: str, data: Mapping[str, str]) -> int:
        resp = self._call(
            f"secret {name}",
            self._client.secrets.kv.v2.create_or_update_secret,
            path=self._path(name),
            secret=dict(data),
            mount_point=self.mount,
        )
        return int(resp["data"]["version"])

    def get(self, name: str, version: int | None = None) -> dict[str, str] | None:
        try:
            resp = self._call(
                f"secret {name}",
                self._client.secrets.kv.v2.read_secret_version,
                path=self._path(name),
                version=version,
                mount_point=self.mount,
                raise_on_deleted_version=True,
            )
        except NotFound:
            return None
        data = ((resp or {}).get("data") or {}).get("data")
        return {str(k): str(v) for k, v in data.items()} if data is not None else None

    def delete(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            self._call(
                f"secret {name}",
                self._client.secrets.kv.v2.delete_metadata_and_all_versions,
                path=self._path(name),
                mount_point=self.mount,
            )
