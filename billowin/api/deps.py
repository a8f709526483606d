"""FastAPI dependencies: settings and adapters, injected, never global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from billowin.adapters.consul import ConsulRegistry
from billowin.adapters.docker import DockerEngine, Registry
from billowin.adapters.github import GitHubStatuses
from billowin.adapters.haproxy import HAProxyRouter
from billowin.adapters.nomad import NomadScheduler
from billowin.adapters.packer import Packer
from billowin.apps.store import AppStore
from billowin.apps.tokens import TokenRecord, TokenStore
from billowin.build.builder import Builder
from billowin.config.vars import config_store
from billowin.errors import Unauthorized
from billowin.monitoring import Monitoring
from billowin.pipeline.worker import Worker
from billowin.platform import Platform
from billowin.release.deploy import Deployer
from billowin.release.oneoff import Runner
from billowin.settings import Settings
from billowin.stack.tools import Toolset


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


class Systems:
    """Every adapter and service, built once per app from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.nomad = NomadScheduler(settings)
        self.consul = ConsulRegistry(settings)
        self.docker = DockerEngine(settings)
        self.registry = Registry(settings)
        self.router = HAProxyRouter(settings.haproxy_socket)
        self.apps = AppStore(self.consul)
        self.config = config_store(settings)
        self.runner = Runner(settings, self.nomad)
        self.deployer = Deployer(settings, self.nomad, self.consul, self.config, self.runner)
        self.monitoring = Monitoring(
            settings, self.consul, registered_apps=lambda: [a.name for a in self.apps.all()]
        )
        self.builder: Builder | None = None
        self.worker: Worker | None = None
        if settings.pipeline:
            tools = Toolset.resolve(settings)
            self.builder = Builder(
                settings,
                Packer(str(tools.packer), settings.packer_dir),
                self.docker,
                self.registry,
                on_finished=self.monitoring.metrics.build_finished,
            )
            statuses = (
                GitHubStatuses(settings.github_api_url, settings.github_token)
                if settings.github_token
                else None
            )
            self.worker = Worker(
                self.consul,
                self.apps,
                self.builder,
                self.deployer,
                statuses=statuses,
                public_url=settings.public_url,
                deploy_timeout=settings.deploy_timeout,
                on_finished=self.monitoring.metrics.job_finished,
            )
        self.platform = Platform(
            settings,
            nomad=self.nomad,
            consul=self.consul,
            apps=self.apps,
            deployer=self.deployer,
            config=self.config,
            runner=self.runner,
            builder=self.builder,
        )


def get_systems(request: Request) -> Systems:
    systems: Systems = request.app.state.systems
    return systems


SystemsDep = Annotated[Systems, Depends(get_systems)]


COOKIE = "billowin_token"  # set by the dashboard's login form: HttpOnly, SameSite=Strict


def token_from(request: Request) -> str:
    """The token a request carries: ``Authorization: Bearer …``, else the dashboard's cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return request.cookies.get(COOKIE, "")


def require_token(request: Request, systems: SystemsDep) -> TokenRecord:
    """Every endpoint but ``/health`` and the webhooks needs a valid ``Authorization: Bearer`` token."""
    token = token_from(request)
    record = TokenStore(systems.consul).verify(token) if token else None
    if record is None:
        raise Unauthorized(
            "a valid API token is required",
            hint="Send `Authorization: Bearer <token>`; an admin makes one: `billowin tokens:create NAME`.",
        )
    return record


TokenDep = Annotated[TokenRecord, Depends(require_token)]
