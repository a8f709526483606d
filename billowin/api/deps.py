"""FastAPI dependencies: settings and adapters, injected, never global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from billowin.adapters.consul import ConsulRegistry
from billowin.adapters.docker import DockerEngine, Registry
from billowin.adapters.haproxy import HAProxyRouter
from billowin.adapters.nomad import NomadScheduler
from billowin.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


class Systems:
    """Every adapter, built once per app from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.nomad = NomadScheduler(settings)
        self.consul = ConsulRegistry(settings)
        self.docker = DockerEngine(settings)
        self.registry = Registry(settings)
        self.router = HAProxyRouter(settings.haproxy_socket)


def get_systems(request: Request) -> Systems:
    systems: Systems = request.app.state.systems
    return systems


SystemsDep = Annotated[Systems, Depends(get_systems)]
