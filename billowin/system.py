"""The composition root: every adapter, store and service, built once from ``Settings``.

This is the one module outside ``billowin.adapters`` that names the concrete
adapters. The API (``create_app``), the CLI, the router's reload hook, the
stack, the bench and the integration tests all take what they need from a
``System``; everything else is typed on the ports in ``billowin.ports``.

Each part is built on first use (``cached_property``), so a caller that only
needs Nomad (the router hook) or only the token store (``tokens:create``)
connects to nothing else. Build a ``System`` once per process and pass it
down; ``System(settings, **overrides)`` swaps any part, which is how unit
tests run the real stores and pipeline on in-memory fakes.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from billowin.addons.backups import Backups
from billowin.addons.images import AddonImages
from billowin.addons.service import Addons
from billowin.addons.store import AddonStore
from billowin.api.streams import StreamLimiter
from billowin.apps.access import Access
from billowin.apps.audit import FILE_NAME as AUDIT_FILE
from billowin.apps.audit import AuditLog
from billowin.apps.sessions import SessionStore
from billowin.apps.store import AppCache, AppStore
from billowin.apps.tokens import TokenStore
from billowin.build.builder import Builder
from billowin.build.dockerfile import DockerfileImages
from billowin.build.hygiene import protected_images
from billowin.build.isolated import ProcessBuilder
from billowin.build.on_nomad import NomadBuilder
from billowin.certs.http01 import Http01Responder
from billowin.certs.manager import CertificateManager, failing_certificates
from billowin.certs.service import Certificates
from billowin.errors import ConfigError
from billowin.monitoring import Monitoring
from billowin.monitoring.metrics import BillowinMetrics
from billowin.nodes import Nodes
from billowin.pipeline.intake import Intake
from billowin.pipeline.jobs import Job, JobStore
from billowin.pipeline.reporting import JobOutput
from billowin.pipeline.worker import Worker
from billowin.platform import Platform
from billowin.ports import (
    AppBuilder,
    CertificateAuthority,
    CertificateStore,
    ChallengeSolver,
    ClusterMembers,
    CommitStatuses,
    ConfigStore,
    ContainerEngine,
    Coordinator,
    ImageBuildTool,
    ImageRegistry,
    Probe,
    Router,
    Scheduler,
    ServiceRegistry,
    TaskExec,
)
from billowin.release.deploy import Deployer
from billowin.release.logs import APP_LABEL, AppLogs
from billowin.release.oneoff import Runner
from billowin.release.shell import Shells
from billowin.release.store import ReleaseStore
from billowin.review.apps import ReviewApps
from billowin.settings import Settings

if TYPE_CHECKING:
    from billowin.adapters.consul import ConsulRegistry
    from billowin.adapters.github import GitHub
    from billowin.stack.backup import BackupSchedule


class System:
    """Billowin, wired: adapters from settings, stores and services on top of them."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings or Settings()
        for name, value in overrides.items():
            if not isinstance(getattr(type(self), name, None), cached_property):
                raise TypeError(f"System has no part named {name!r}")
            self.__dict__[name] = value  # what cached_property would have stored

    # -- adapters: the only place they are constructed ----------------------------------------
    @cached_property
    def _consul(self) -> ConsulRegistry:
        from billowin.adapters.consul import ConsulRegistry

        return ConsulRegistry(self.settings)

    @cached_property
    def kv(self) -> Coordinator:
        """Consul KV and sessions: apps, releases, tokens, the pipeline."""
        kv: Coordinator = self._consul
        return kv

    @cached_property
    def catalog(self) -> ServiceRegistry:
        """Consul's catalog and health checks: where healthy instances are."""
        catalog: ServiceRegistry = self._consul
        return catalog

    @cached_property
    def members(self) -> ClusterMembers:
        """Consul's gossip pool: a node taken out of the cluster is forced to leave it."""
        members: ClusterMembers = self._consul
        return members

    @cached_property
    def nomad(self) -> Scheduler:
        from billowin.adapters.nomad import NomadScheduler

        return NomadScheduler(self.settings)

    @cached_property
    def docker(self) -> ContainerEngine:
        from billowin.adapters.docker import DockerEngine

        return DockerEngine(self.settings)

    @cached_property
    def image_registry(self) -> ImageRegistry:
        from billowin.adapters.docker import Registry

        return Registry(self.settings)

    @cached_property
    def router(self) -> Router:
        from billowin.adapters.haproxy import HAProxyRouter

        return HAProxyRouter(self.settings.haproxy_socket, self.settings.haproxy_bin)

    @cached_property
    def packer(self) -> ImageBuildTool:
        from billowin.adapters.packer import Packer
        from billowin.stack.tools import Toolset

        return Packer(str(Toolset.resolve(self.settings).packer), self.settings.packer_dir)

    @cached_property
    def config(self) -> ConfigStore:
        """Where config vars live, as ``BILLOWIN_CONFIG_BACKEND`` says."""
        if self.settings.config_backend == "vault":
            if not self.settings.vault_addr:
                raise ConfigError(
                    "config vars are to be kept in Vault (BILLOWIN_CONFIG_BACKEND=vault), "
                    "but no Vault address is set",
                    hint="Set BILLOWIN_VAULT_ADDR (or VAULT_ADDR) and BILLOWIN_VAULT_TOKEN (or VAULT_TOKEN), "
                    "or unset BILLOWIN_CONFIG_BACKEND to keep config vars in Nomad Variables.",
                )
            from billowin.adapters.vault import VaultKV

            return VaultKV(self.settings)
        from billowin.adapters.nomad_vars import NomadVariables

        return NomadVariables(self.settings)

    @cached_property
    def github(self) -> GitHub | None:
        """GitHub's REST API (commit statuses, deployments), when ``BILLOWIN_GITHUB_TOKEN`` is set."""
        if not self.settings.github_token:
            return None
        from billowin.adapters.github import GitHub

        return GitHub(self.settings.github_api_url, self.settings.github_token)

    @cached_property
    def statuses(self) -> CommitStatuses | None:
        """GitHub commit statuses, when ``BILLOWIN_GITHUB_TOKEN`` is set."""
        return self.github

    @cached_property
    def acme(self) -> CertificateAuthority:
        """The ACME CA at ``BILLOWIN_ACME_DIRECTORY_URL`` (Let's Encrypt unless told otherwise)."""
        from billowin.adapters.acme import AcmeIssuer

        s = self.settings
        return AcmeIssuer(s.acme_directory_url, ca_bundle=s.acme_ca_bundle, timeout=s.acme_timeout)

    @cached_property
    def dns01(self) -> ChallengeSolver | None:
        """DNS-01 by RFC 2136 updates, when ``BILLOWIN_ACME_DNS_SERVER`` is set (wildcards need it)."""
        s = self.settings
        if not s.acme_dns_server:
            return None
        if not (s.acme_dns_zone and s.acme_dns_tsig_key and s.acme_dns_tsig_secret):
            raise ConfigError(
                "BILLOWIN_ACME_DNS_SERVER is set, but not the zone and TSIG key to update it with",
                hint="Set BILLOWIN_ACME_DNS_ZONE, BILLOWIN_ACME_DNS_TSIG_KEY and "
                "BILLOWIN_ACME_DNS_TSIG_SECRET too, or unset BILLOWIN_ACME_DNS_SERVER.",
            )
        from billowin.adapters.rfc2136 import Rfc2136Solver

        return Rfc2136Solver(
            s.acme_dns_server,
            s.acme_dns_zone,
            key_name=s.acme_dns_tsig_key,
            secret=s.acme_dns_tsig_secret,
            algorithm=s.acme_dns_tsig_algorithm,
            ttl=s.acme_dns_ttl,
            timeout=s.acme_dns_timeout,
        )

    def probes(self) -> list[Probe]:
        """Every real system ``/health`` reports on."""
        return [self.nomad, self.catalog, self.docker, self.image_registry, self.router]

    # -- stores -----------------------------------------------------------------------------
    @cached_property
    def apps(self) -> AppStore:
        return AppStore(self.kv)

    @cached_property
    def app_cache(self) -> AppCache:
        """The app list the webhooks read, from memory while a Consul blocking query keeps it
        current (the API starts and stops the watcher); a direct read otherwise."""
        return AppCache(self.apps, self.kv)

    @cached_property
    def tokens(self) -> TokenStore:
        return TokenStore(self.kv)

    @cached_property
    def sessions(self) -> SessionStore:
        """The dashboard's server-side sessions (Consul KV)."""
        return SessionStore(self.kv, self.settings.session_ttl)

    @cached_property
    def access(self) -> Access:
        """Tokens and sessions checked, issued and revoked; the roles are ``billowin.apps.access``."""
        return Access(self.tokens, self.sessions, self.apps)

    @cached_property
    def audit(self) -> AuditLog:
        """The append-only audit log (a JSON-lines file under the state directory)."""
        return AuditLog(self.settings.audit_file or self.settings.state_dir / AUDIT_FILE)

    @cached_property
    def cert_store(self) -> CertificateStore:
        """Certificates, their keys and the ACME account: in Consul KV, or with every secret in
        Vault (``BILLOWIN_CERT_BACKEND``, by default where the config vars are)."""
        from billowin.certs.store import ConsulCertificateStore, VaultCertificateStore

        backend = self.settings.cert_backend or (
            "vault" if self.settings.config_backend == "vault" else "consul"
        )
        if backend == "vault":
            from billowin.adapters.vault import VaultSecrets

            return VaultCertificateStore(self.kv, VaultSecrets(self.settings))
        return ConsulCertificateStore(self.kv)

    @cached_property
    def acme_challenges(self) -> Http01Responder:
        """HTTP-01 answers in Consul KV, served by ``GET /.well-known/acme-challenge/{token}``."""
        return Http01Responder(self.kv)

    @cached_property
    def releases(self) -> ReleaseStore:
        return ReleaseStore(self.kv)

    @cached_property
    def job_output(self) -> JobOutput:
        """What jobs' commands printed, one file per job under the state directory."""
        return JobOutput(self.settings.state_dir / "pipeline")

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.kv)

    # -- services -----------------------------------------------------------------------------
    @cached_property
    def intake(self) -> Intake:
        return Intake(self.app_cache, self.jobs)

    @cached_property
    def runner(self) -> Runner:
        return Runner(self.settings, self.nomad, self.docker)

    @cached_property
    def deployer(self) -> Deployer:
        return Deployer(
            self.settings,
            self.nomad,
            self.releases,
            self.config,
            self.runner,
            volumes=self.apps.volumes_of,
            pin=self.apps.pin_volumes,
        )

    @cached_property
    def logs(self) -> AppLogs:
        return AppLogs(self.nomad, self.docker)

    @cached_property
    def streams(self) -> StreamLimiter:
        """How many log tails, runs and long-polls are open, against ``BILLOWIN_MAX_STREAMS``."""
        return StreamLimiter(self.settings.max_streams)

    @cached_property
    def metrics(self) -> BillowinMetrics:
        """Billowin's own Prometheus metrics (in memory; the API serves them at /metrics)."""
        return BillowinMetrics()

    @cached_property
    def monitoring(self) -> Monitoring:
        return Monitoring(
            self.settings,
            nomad=self.nomad,
            kv=self.kv,
            registry=self.catalog,
            registered_apps=lambda: [a.name for a in self.apps.all()],
            failing_certificates=lambda: failing_certificates(
                self.cert_store, self.apps, self.settings.domain
            ),
            housekeeping=self.remove_stopped_containers,
            metrics=self.metrics,
        )

    def remove_stopped_containers(self, now: float) -> int:
        """Remove app containers that stopped over ``BILLOWIN_KEEP_STOPPED_CONTAINERS`` ago (Nomad
        leaves them so their logs stay readable; see ``release/logs.py``)."""
        before = now - self.settings.keep_stopped_containers
        return self.docker.remove_exited(label=APP_LABEL, finished_before=before)

    @cached_property
    def builder(self) -> Builder:
        from billowin.adapters.buildkit import BuildKit

        return Builder(
            self.settings,
            self.packer,
            self.docker,
            self.image_registry,
            on_finished=self.metrics.build_finished,
            protected_images=self.protected_images,
            recipes=[DockerfileImages(self.settings, BuildKit(self.settings))],
        )

    def protected_images(self, app: str) -> set[str]:
        """Images the builder must never collect: ``app``'s newest live releases' (the current
        one and its rollback targets, ``BILLOWIN_KEEP_IMAGES`` of them) and one rolling out."""
        return protected_images(self.releases.list(app), self.settings.keep_images)

    @cached_property
    def worker(self) -> Worker | None:
        """The pipeline's worker; None when this process runs no pipeline (``BILLOWIN_PIPELINE``)."""
        if not self.settings.pipeline:
            return None
        return Worker(
            self.kv,
            self.apps,
            self.jobs,
            self.pipeline_builder,
            self.deployer,
            statuses=self.statuses,
            public_url=self.settings.public_url,
            deploy_timeout=self.settings.deploy_timeout,
            on_finished=self._job_finished,
            output=self.job_output,
        )

    @cached_property
    def pipeline_builder(self) -> AppBuilder:
        """The pipeline's builds, each in a child process at a lower CPU priority
        (``build/isolated.py``): the API's interpreter stays free for webhooks and requests; on a
        cluster (``BILLOWIN_BUILD_RUNNER=nomad``), each a Nomad batch job on a build node
        (``build/on_nomad.py``), which outlives the API."""
        if self.settings.build_runner == "nomad":
            return NomadBuilder(self.settings, self.builder, self.nomad)
        return ProcessBuilder(self.settings, self.builder)

    @cached_property
    def backups(self) -> BackupSchedule | None:
        """Scheduled backups of the production box this API runs on; None elsewhere, or when
        ``BILLOWIN_BACKUP_INTERVAL_HOURS`` is 0."""
        from billowin.stack.backup import BackupSchedule

        return BackupSchedule.for_settings(self.settings)

    def _job_finished(self, job: Job) -> None:
        self.metrics.job_finished(job)
        if job.source == "pull_request":
            self.review_apps.wake()  # tell GitHub how the review app's deploy went

    @cached_property
    def review_apps(self) -> ReviewApps:
        """Review apps: pull requests' records, reconciled into apps by a thread in the API."""
        return ReviewApps(
            self.platform,
            deployments=self.github,
            interval=self.settings.review_apps_interval,
        )

    @cached_property
    def cert_manager(self) -> CertificateManager:
        """Orders what is missing or due, for every app and custom domain (``BILLOWIN_ACME_AUTO``)."""
        return CertificateManager(
            self.certificates,
            self.apps,
            self.kv,
            domain=self.settings.domain,
            api_hostname=self.settings.acme_api_name,
            interval=self.settings.acme_check_interval,
        )

    @cached_property
    def certificates(self) -> Certificates:
        """Orders certificates (HTTP-01 always, DNS-01 when configured) and keeps them in ``cert_store``."""
        s = self.settings
        solvers: dict[str, ChallengeSolver] = {"http-01": self.acme_challenges}
        if self.dns01 is not None:
            solvers["dns-01"] = self.dns01
        return Certificates(
            self.cert_store,
            self.acme,
            solvers,
            email=s.acme_email,
            eab_kid=s.acme_eab_kid,
            eab_hmac_key=s.acme_eab_hmac_key,
            retry_min=s.acme_retry_min,
            retry_max=s.acme_retry_max,
        )

    def _addons_go_with(self, app: str) -> None:
        """``apps:destroy``: the app's add-ons go too (a look at KV first: most apps have none)."""
        if AddonStore(self.kv).of_app(app):
            self.addons.app_destroyed(app)

    @cached_property
    def task_exec(self) -> TaskExec:
        """Commands inside running tasks (Nomad's exec API): add-on backups, pg:psql, run -it."""
        from billowin.adapters.nomad_exec import NomadExec

        return NomadExec(self.settings)

    @cached_property
    def addons(self) -> Addons:
        """Postgres and Redis add-ons; their worker thread runs in the API."""
        s = self.settings
        return Addons(
            s,
            platform=self.platform,
            nomad=self.nomad,
            catalog=self.catalog,
            config=self.config,
            docker=self.docker,
            images=AddonImages(s, lambda: self.builder.packer_images, self.docker, self.image_registry),
            backups=Backups(s, self.nomad, self.task_exec),
            interval=s.addon_interval,
        )

    @cached_property
    def nodes(self) -> Nodes:
        """The cluster's Nomad client nodes: list, drain, activate, remove."""
        return Nodes(self.nomad, lambda: self.members)

    @cached_property
    def platform(self) -> Platform:
        return Platform(
            self.settings,
            nomad=self.nomad,
            kv=self.kv,
            apps=self.apps,
            jobs=self.jobs,
            releases=self.releases,
            deployer=self.deployer,
            config=self.config,
            runner=self.runner,
            logs=self.logs,
            output=self.job_output,
            builder=self.builder if self.settings.pipeline else None,
            names_changed=lambda: self.cert_manager.wake() if self.settings.acme_auto else None,
            certs=self.cert_store,
            taking_apart=self._addons_go_with,
            shells=Shells(self.runner, self.nomad, self.task_exec),
        )
