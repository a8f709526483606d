"""The small typed interfaces the rest of Billowin depends on.

Each real system has one adapter under ``billowin.adapters`` implementing
one of these protocols. The deploy pipeline, the API and the CLI only see
these, so a system can be swapped (or tested through its contract) without
touching them.
"""

from __future__ import annotations

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
