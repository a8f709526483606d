"""Config vars in Nomad Variables, through python-nomad: the default ``ConfigStore``.

Layout, for app ``A``:

- ``billowin/config/A/<N>``: version N; its items are the vars. Written once
  with check-and-set 0 (create only), so two writers can never both get N.
- ``billowin/config/A/latest``: ``{"version": "<N>"}``, the newest version,
  advanced with check-and-set on its modify index, so ``latest`` costs two reads.

Nomad refuses a variable without items, so an empty config is stored as one
reserved marker item that ``read`` and the template leave out (user keys can't
start with ``__billowin``: see ``billowin.config_vars.validate_key``).

Nomad's answer to a failed check-and-set holds the variable it found, values
and all: it is never put in an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nomad.api.exceptions as nomad_exc

from billowin.adapters.nomad import CONFIG_PREFIX, SYSTEM, nomad_client, translate_error
from billowin.config.vars import RESERVED_PREFIX, env_line_template, validate_app, validate_values
from billowin.errors import Conflict, NotFound, ServiceError
from billowin.ports import ComponentHealth
from billowin.settings import Settings

PREFIX = CONFIG_PREFIX
POINTER = "latest"
EMPTY_MARKER = f"{RESERVED_PREFIX}_empty"
# How many version numbers a writer tries past the pointer before giving up.
MAX_ATTEMPTS = 100


class NomadVariables:
    """The ``ConfigStore`` port on Nomad Variables."""

    backend = "nomad"

    def __init__(self, settings: Settings, *, timeout: int = 10) -> None:
        self._address = settings.nomad_addr
        self._client = nomad_client(settings, timeout=timeout)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except nomad_exc.VariableConflict:
            # The response body is the variable Nomad holds: values stay out of the error.
            raise Conflict(f"{what}: someone else wrote it first") from None
        except nomad_exc.BaseNomadException as exc:
            raise translate_error(exc, what, self._address) from exc

    @staticmethod
    def path(app: str, version: int | str) -> str:
        return f"{PREFIX}/{app}/{version}"

    # -- Probe ------------------------------------------------------------
    def health(self) -> ComponentHealth:
        name = "config (nomad variables)"
        try:
            info = self._call("agent", self._client.agent.get_agent)
        except ServiceError as exc:
            return ComponentHealth(name, False, address=self._address, error=exc.message)
        version = info.get("config", {}).get("Version", {})
        text = version.get("Version") if isinstance(version, dict) else version
        return ComponentHealth(name, True, version=str(text), address=self._address)

    # -- ConfigStore ----------------------------------------------------------
    def write(self, app: str, values: Mapping[str, str]) -> int:
        validate_app(app)
        items = validate_values(values) or {EMPTY_MARKER: "1"}
        _, latest = self._pointer(app)
        version = latest + 1
        for _ in range(MAX_ATTEMPTS):
            path = self.path(app, version)
            try:
                self._call(
                    f"config version {version} of {app}",
                    self._client.variable.create_variable,
                    path,
                    {"Path": path, "Items": items},
                    cas=0,
                )
            except Conflict:
                version += 1  # taken by another writer (or one whose pointer update was lost)
                continue
            self._advance(app, version)
            return version
        raise Conflict(f"could not find a free config version for {app} after {MAX_ATTEMPTS} tries")

    def read(self, app: str, version: int) -> dict[str, str]:
        validate_app(app)
        if version < 1:
            raise NotFound(f"app {app} has no config version {version}")
        try:
            var = self._call(
                f"config version {version} of {app}",
                self._client.variable.get_variable,
                self.path(app, version),
            )
        except NotFound:
            raise NotFound(f"app {app} has no config version {version}") from None
        items = var.get("Items") or {}
        return {k: str(v) for k, v in items.items() if k != EMPTY_MARKER}

    def latest(self, app: str) -> tuple[int, dict[str, str]]:
        validate_app(app)
        _, version = self._pointer(app)
        if version == 0:
            return 0, {}
        return version, self.read(app, version)

    def delete(self, app: str) -> None:
        validate_app(app)
        # The pointer first: a delete cut short leaves versions a later delete still finds.
        self._delete_path(app, self.path(app, POINTER))
        listed = self._call(
            f"config of {app}", self._client.variables.get_variables, prefix=f"{PREFIX}/{app}/"
        )
        for meta in listed or []:
            self._delete_path(app, str(meta["Path"]))

    def template(self, app: str, version: int) -> str:
        validate_app(app)
        line = env_line_template(".K", ".V")
        return (
            f'{{{{ with nomadVar "{self.path(app, version)}" }}}}{{{{ range .Tuples }}}}'
            f'{{{{ if ne .K "{EMPTY_MARKER}" }}}}{line}{{{{ end }}}}{{{{ end }}}}{{{{ end }}}}'
        )

    def job_vault_policies(self, app: str) -> list[str]:
        return []

    # -- the pointer -----------------------------------------------------------
    def _pointer(self, app: str) -> tuple[int, int]:
        """``(modify index, newest version)`` of the app's pointer; ``(0, 0)`` when it has none."""
        try:
            var = self._call(
                f"config pointer of {app}", self._client.variable.get_variable, self.path(app, POINTER)
            )
        except NotFound:
            return 0, 0
        try:
            return int(var["ModifyIndex"]), int(var["Items"]["version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceError(
                SYSTEM,
                f"the config pointer {self.path(app, POINTER)} is malformed",
                hint="Delete that Nomad variable; the next `config:set` writes it again.",
            ) from exc

    def _advance(self, app: str, version: int) -> None:
        """Move the pointer up to ``version`` (never down), with check-and-set."""
        path = self.path(app, POINTER)
        for _ in range(MAX_ATTEMPTS):
            index, current = self._pointer(app)
            if current >= version:
                return
            try:
                self._call(
                    f"config pointer of {app}",
                    self._client.variable.create_variable,
                    path,
                    {"Path": path, "Items": {"version": str(version)}},
                    cas=index,
                )
            except Conflict:
                continue
            return
        raise Conflict(f"could not update the config pointer of {app} after {MAX_ATTEMPTS} tries")

    def _delete_path(self, app: str, path: str) -> None:
        try:
            self._call(f"config of {app}", self._client.variable.delete_variable, path)
        except NotFound:
            return
