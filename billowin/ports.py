"""The small typed interfaces the rest of Billowin depends on.

Each real system has one adapter under ``billowin.adapters`` implementing
one of these protocols. The deploy pipeline, the API and the CLI only see
these, so a system can be swapped (or tested through its contract) without
touching them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ComponentHealth:
    """What ``/health`` says about one real system."""

    name: str
    ok: bool
    version: str | None = None
    address: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Instance:
    """One healthy instance of a service, as the service registry sees it."""

    service: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    node: str = ""


@dataclass(frozen=True)
class DeployResult:
    job_id: str
    status: str  # successful | failed | cancelled | no-deployment
    description: str = ""
    deployment_id: str | None = None
    job_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Probe(Protocol):
    def health(self) -> ComponentHealth: ...


class Scheduler(Probe, Protocol):
    """Runs jobs (Nomad)."""

    def parse(self, hcl: str) -> dict[str, Any]: ...

    def current(self, job_id: str) -> dict[str, Any] | None: ...

    def plan(self, job: dict[str, Any]) -> dict[str, Any]: ...

    def submit(self, job: dict[str, Any], *, expect_modify_index: int | None = None) -> str: ...

    def wait_for_deployment(
        self, job_id: str, *, timeout: float, after_version: int | None = None
    ) -> DeployResult: ...

    def scale(self, job_id: str, group: str, count: int, *, message: str = "") -> None: ...

    def restart(self, job_id: str, group: str | None = None) -> int: ...

    def stop(self, job_id: str, *, purge: bool = True) -> None: ...


class ServiceRegistry(Probe, Protocol):
    """Knows where healthy instances are (Consul)."""

    def healthy_instances(self, service: str) -> list[Instance]: ...

    def wait_for_healthy(self, service: str, *, count: int, timeout: float) -> list[Instance]: ...


class ConfigStore(Probe, Protocol):
    """Where an app's config vars live, as immutable numbered versions (Nomad Variables or Vault KV v2).

    Every change writes a whole new version; a release pins the version it runs,
    so a rollback restores the config along with the image.
    """

    backend: str  # "nomad" | "vault"

    def write(self, app: str, values: Mapping[str, str]) -> int:
        """Store ``values`` as the app's next version; returns its number (1, 2, …)."""
        ...

    def read(self, app: str, version: int) -> dict[str, str]:
        """The values of one version; ``NotFound`` when it does not exist."""
        ...

    def latest(self, app: str) -> tuple[int, dict[str, str]]:
        """The newest version and its values; ``(0, {})`` for an app without config."""
        ...

    def delete(self, app: str) -> None:
        """Remove every version of the app's config (``apps:destroy``)."""
        ...

    def template(self, app: str, version: int) -> str:
        """A Nomad ``template`` body that renders the version as ``KEY="value"`` env-file lines."""
        ...

    def job_vault_policies(self) -> list[str]:
        """Vault policies a job needs to read its config (empty for Nomad Variables)."""
        ...
