"""Billowin's settings: one pydantic-settings tree, built once and injected.

Every field reads ``BILLOWIN_<NAME>``. The addresses of the HashiCorp tools
also fall back to the variables their own CLIs use (``NOMAD_ADDR``,
``CONSUL_HTTP_ADDR``, ``VAULT_ADDR`` and their tokens), so a shell that already
talks to Nomad talks to the same Nomad through Billowin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
TsigAlgorithm = Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1"]


def _env(name: str, *fallbacks: str) -> AliasChoices:
    """``BILLOWIN_<NAME>``, then the documented fallbacks: never a bare ``<NAME>`` from the environment
    (``GITHUB_TOKEN``, ``DOMAIN`` or ``PIPELINE`` set for something else must not configure Billowin)."""
    return AliasChoices(f"BILLOWIN_{name}", *fallbacks)


def _xdg(var: str, default: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / default) / "billowin"


class Settings(BaseSettings):
    """All of Billowin's knobs. Construct it once and pass it down."""

    # env_prefix: pydantic-settings also reads each field by its own name (populate_by_name); the
    # prefix makes that BILLOWIN_<NAME> too, so a bare GITHUB_TOKEN or DOMAIN never configures Billowin.
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore", env_prefix="BILLOWIN_")

    # Where the real systems are.
    nomad_addr: str = Field("http://127.0.0.1:4646", validation_alias=_env("NOMAD_ADDR", "NOMAD_ADDR"))
    nomad_token: SecretStr | None = Field(None, validation_alias=_env("NOMAD_TOKEN", "NOMAD_TOKEN"))
    nomad_timeout: int = Field(10, ge=1, validation_alias=_env("NOMAD_TIMEOUT"))  # seconds per call
    consul_addr: str = Field(
        "http://127.0.0.1:8500", validation_alias=_env("CONSUL_ADDR", "CONSUL_HTTP_ADDR")
    )
    consul_token: SecretStr | None = Field(None, validation_alias=_env("CONSUL_TOKEN", "CONSUL_HTTP_TOKEN"))
    vault_addr: str | None = Field(None, validation_alias=_env("VAULT_ADDR", "VAULT_ADDR"))
    vault_token: SecretStr | None = Field(None, validation_alias=_env("VAULT_TOKEN", "VAULT_TOKEN"))
    # Where apps' config vars live: Nomad Variables (no extra service) or Vault's KV v2.
    config_backend: Literal["nomad", "vault"] = Field("nomad", validation_alias=_env("CONFIG_BACKEND"))
    vault_kv_mount: str = Field("secret", validation_alias=_env("VAULT_KV_MOUNT"))
    # Where certificates' private keys and the ACME account live: Consul KV, or Vault. Unset, they
    # follow the config vars (Vault when BILLOWIN_CONFIG_BACKEND=vault).
    cert_backend: Literal["consul", "vault"] | None = Field(None, validation_alias=_env("CERT_BACKEND"))
    docker_host: str = Field(
        "unix:///var/run/docker.sock", validation_alias=_env("DOCKER_HOST", "DOCKER_HOST")
    )
    registry: str = Field("127.0.0.1:5000", validation_alias=_env("REGISTRY"))
    # A registry every node of a cluster reaches: HTTPS with this CA (the engines trust it through
    # /etc/docker/certs.d/<registry>/ca.crt), and basic auth (htpasswd) with this user. Unset, the
    # registry is plain HTTP on the loopback, as on one box.
    registry_ca_file: Path | None = Field(None, validation_alias=_env("REGISTRY_CA_FILE"))
    registry_username: str = Field("", validation_alias=_env("REGISTRY_USERNAME"))
    registry_password: SecretStr | None = Field(None, validation_alias=_env("REGISTRY_PASSWORD"))

    # The router: apps answer at <app>.<domain>.
    domain: str = Field("localhost", validation_alias=_env("DOMAIN"))
    router_port: int = Field(8080, validation_alias=_env("ROUTER_PORT"))
    router_stats_port: int = Field(8404, validation_alias=_env("ROUTER_STATS_PORT"))
    router_https_port: int = Field(8443, validation_alias=_env("ROUTER_HTTPS_PORT"))
    # Strict-Transport-Security on HTTPS answers of apps that redirect to HTTPS, seconds; 0: none.
    hsts_max_age: int = Field(0, ge=0, validation_alias=_env("HSTS_MAX_AGE"))
    haproxy_socket: Path | None = Field(None, validation_alias=_env("HAPROXY_SOCKET"))
    haproxy_bin: str = Field("haproxy", validation_alias=_env("HAPROXY_BIN"))

    # The API.
    api_host: str = Field("127.0.0.1", validation_alias=_env("API_HOST"))
    api_port: int = Field(8000, validation_alias=_env("API_PORT"))
    api_threads: int = Field(64, ge=4, validation_alias=_env("API_THREADS"))
    # Log tails, runs and long-polls open at once (each holds a thread); more get 503.
    max_streams: int = Field(32, ge=1, validation_alias=_env("MAX_STREAMS"))

    # Where things live on this machine.
    state_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state"),
        validation_alias=_env("STATE_DIR"),
    )
    cache_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache"),
        validation_alias=_env("CACHE_DIR"),
    )
    # Build caches (one directory per app); empty: <cache_dir>/build-cache.
    build_cache_dir: Path | None = Field(None, validation_alias=_env("BUILD_CACHE_DIR"))
    # A production box's root (billowin install --root): the CLI's token verbs find its Consul there.
    production_root: Path = Field(Path("/var/lib/billowin"), validation_alias=_env("ROOT"))
    jobspecs_dir: Path = Field(REPO_DIR / "jobspecs", validation_alias=_env("JOBSPECS_DIR"))
    versions_file: Path = Field(PACKAGE_DIR / "versions.toml", validation_alias=_env("VERSIONS_FILE"))

    # Builds.
    packer_dir: Path = Field(REPO_DIR / "packer", validation_alias=_env("PACKER_DIR"))
    # The docker CLI that builds apps' Dockerfiles with BuildKit (Debian's docker.io has it built in;
    # a CLI without buildx refuses BuildKit builds): by absolute path, whatever comes first on PATH.
    docker_cli: str = Field("/usr/bin/docker", validation_alias=_env("DOCKER_CLI"))
    build_concurrency: int = Field(2, ge=1, validation_alias=_env("BUILD_CONCURRENCY"))
    # Where the pipeline's builds run: a child process of the API on this box (`process`), or a
    # Nomad batch job on a node marked to build (`nomad`: a cluster; billowin/build/on_nomad.py).
    build_runner: Literal["process", "nomad"] = Field("process", validation_alias=_env("BUILD_RUNNER"))
    build_timeout: float = Field(900, validation_alias=_env("BUILD_TIMEOUT"))
    keep_images: int = Field(5, ge=1, validation_alias=_env("KEEP_IMAGES"))
    # How long a stopped instance's container (and so what it printed) is kept, in seconds.
    keep_stopped_containers: float = Field(3600, ge=0, validation_alias=_env("KEEP_STOPPED_CONTAINERS"))
    ca_bundle: Path = Field(Path("/etc/ssl/certs/ca-certificates.crt"), validation_alias=_env("CA_BUNDLE"))
    pip_index_url: str = Field("", validation_alias=_env("PIP_INDEX_URL"))
    npm_registry: str = Field("", validation_alias=_env("NPM_REGISTRY"))
    goproxy: str = Field("", validation_alias=_env("GOPROXY"))  # empty: Go's own default
    debian_mirror: str = Field("", validation_alias=_env("DEBIAN_MIRROR"))  # empty: what apt uses here
    # Where language runtimes come from, in order (billowin/build/runtimes/providers.py):
    # `auto` = upstream,npm,goproxy,debian; or a comma-separated list of those names.
    runtime_providers: str = Field(
        "auto",
        pattern=r"^(auto|(upstream|npm|goproxy|debian)(,(upstream|npm|goproxy|debian))*)$",
        validation_alias=_env("RUNTIME_PROVIDERS"),
    )
    rubygems_mirror: str = Field("", validation_alias=_env("RUBYGEMS_MIRROR"))
    allow_private_repositories: bool = Field(False, validation_alias=_env("ALLOW_PRIVATE_REPOSITORIES"))

    # Triggers: webhooks, CI, and statuses back to GitHub.
    github_webhook_secret: SecretStr | None = Field(None, validation_alias=_env("GITHUB_WEBHOOK_SECRET"))
    github_token: SecretStr | None = Field(None, validation_alias=_env("GITHUB_TOKEN"))
    github_api_url: str = Field("https://api.github.com", validation_alias=_env("GITHUB_API_URL"))
    travis_public_key: str | None = Field(None, validation_alias=_env("TRAVIS_PUBLIC_KEY"))
    travis_config_url: str | None = Field(None, validation_alias=_env("TRAVIS_CONFIG_URL"))
    webhook_max_bytes: int = Field(25 * 1024 * 1024, validation_alias=_env("WEBHOOK_MAX_BYTES"))
    public_url: str = Field("", validation_alias=_env("PUBLIC_URL"))
    pipeline: bool = Field(True, validation_alias=_env("PIPELINE"))
    deploy_timeout: float = Field(300, validation_alias=_env("DEPLOY_TIMEOUT"))

    # Monitoring (billowin/monitoring/): samples every interval, one-minute points in SQLite, alerts.
    monitoring: bool = Field(True, validation_alias=_env("MONITORING"))
    metrics_interval: float = Field(10.0, gt=0, validation_alias=_env("METRICS_INTERVAL"))
    metrics_retention_days: float = Field(7.0, ge=1, validation_alias=_env("METRICS_RETENTION_DAYS"))
    metrics_token: SecretStr | None = Field(None, validation_alias=_env("METRICS_TOKEN"))
    alert_webhook_url: SecretStr | None = Field(None, validation_alias=_env("ALERT_WEBHOOK_URL"))
    alert_webhook_format: Literal["json", "slack"] = Field(
        "json", validation_alias=_env("ALERT_WEBHOOK_FORMAT")
    )
    alert_webhook_attempts: int = Field(5, ge=1, validation_alias=_env("ALERT_WEBHOOK_ATTEMPTS"))
    alert_crash_restarts: int = Field(5, ge=1, validation_alias=_env("ALERT_CRASH_RESTARTS"))
    alert_crash_window: float = Field(600.0, gt=0, validation_alias=_env("ALERT_CRASH_WINDOW"))
    alert_unhealthy_after: float = Field(60.0, ge=0, validation_alias=_env("ALERT_UNHEALTHY_AFTER"))
    # A certificate that keeps failing to be issued or renewed for this long raises an alert.
    alert_cert_failing_after: float = Field(86400.0, ge=0, validation_alias=_env("ALERT_CERT_FAILING_AFTER"))
    alert_5xx_ratio: float = Field(0.05, gt=0, le=1, validation_alias=_env("ALERT_5XX_RATIO"))
    alert_5xx_min_requests: int = Field(20, ge=1, validation_alias=_env("ALERT_5XX_MIN_REQUESTS"))

    # HTTPS: certificates from an ACME CA (billowin/certs/, billowin/adapters/acme.py, rfc2136.py).
    acme_directory_url: str = Field(LETS_ENCRYPT, validation_alias=_env("ACME_DIRECTORY_URL"))
    acme_email: str = Field("", validation_alias=_env("ACME_EMAIL"))  # the CA's expiry and policy mail
    acme_eab_kid: str = Field("", validation_alias=_env("ACME_EAB_KID"))  # External Account Binding
    acme_eab_hmac_key: SecretStr | None = Field(None, validation_alias=_env("ACME_EAB_HMAC_KEY"))
    acme_ca_bundle: Path | None = Field(None, validation_alias=_env("ACME_CA_BUNDLE"))  # None: system CAs
    acme_timeout: float = Field(120.0, gt=0, validation_alias=_env("ACME_TIMEOUT"))  # one order, seconds
    acme_retry_min: float = Field(300.0, gt=0, validation_alias=_env("ACME_RETRY_MIN"))  # first back-off, s
    # Order and renew every app's, custom domain's certificate in a thread of the API.
    acme_auto: bool = Field(False, validation_alias=_env("ACME_AUTO"))
    acme_api_name: str = Field("", validation_alias=_env("ACME_API_NAME"))  # the API's own name, if routed
    acme_check_interval: float = Field(3600.0, gt=0, validation_alias=_env("ACME_CHECK_INTERVAL"))  # s
    # A filesystem mirror of the Terraform providers terraform/ needs (`make test-terraform`):
    # <mirror>/<host>/<namespace>/<type>/<version>/<os_arch>/, as `tofu providers mirror` makes.
    tofu_mirror: Path | None = Field(None, validation_alias=_env("TOFU_MIRROR"))
    # How often review apps are checked for TTL and max (each pull_request delivery wakes it too).
    review_apps_interval: float = Field(60.0, gt=0, validation_alias=_env("REVIEW_APPS_INTERVAL"))  # s
    acme_retry_max: float = Field(86400.0, gt=0, validation_alias=_env("ACME_RETRY_MAX"))  # longest one, s
    # DNS-01 by RFC 2136 dynamic updates (wildcards): the primary server, its zone and TSIG key.
    acme_dns_server: str = Field("", validation_alias=_env("ACME_DNS_SERVER"))  # host[:port]; "": no DNS-01
    acme_dns_zone: str = Field("", validation_alias=_env("ACME_DNS_ZONE"))
    acme_dns_tsig_key: str = Field("", validation_alias=_env("ACME_DNS_TSIG_KEY"))  # the key's name
    acme_dns_tsig_secret: SecretStr | None = Field(None, validation_alias=_env("ACME_DNS_TSIG_SECRET"))
    acme_dns_tsig_algorithm: TsigAlgorithm = Field(
        "hmac-sha256", validation_alias=_env("ACME_DNS_TSIG_ALGORITHM")
    )
    acme_dns_ttl: int = Field(60, ge=1, validation_alias=_env("ACME_DNS_TTL"))
    acme_dns_timeout: float = Field(120.0, gt=0, validation_alias=_env("ACME_DNS_TIMEOUT"))  # until answered

    # How `billowin setup` gets Nomad, Consul and consul-template:
    # "auto" tries HashiCorp's release archives, then builds from Go modules.
    install_method: Literal["auto", "release", "go"] = Field("auto", validation_alias=_env("INSTALL_METHOD"))
    releases_url: str = Field("https://releases.hashicorp.com", validation_alias=_env("RELEASES_URL"))
    download_timeout: float = Field(10.0, validation_alias=_env("DOWNLOAD_TIMEOUT"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the admin's own file of ``BILLOWIN_*=value`` lines
        named by ``BILLOWIN_SETTINGS_FILE`` (a production box's ``<root>/etc/settings.env``, which
        Billowin never rewrites), so the box's own addresses and tokens always win over it."""
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if path := os.environ.get("BILLOWIN_SETTINGS_FILE"):
            sources += (DotEnvSettingsSource(settings_cls, env_file=path, env_file_encoding="utf-8"),)
        return sources

    @field_validator("acme_directory_url")
    @classmethod
    def _https_directory(cls, value: str) -> str:
        """ACME is spoken over HTTPS only (RFC 8555, section 6.1)."""
        if not value.startswith("https://"):
            raise ValueError("the ACME directory URL must start with https://")
        return value

    @field_validator("nomad_addr", "consul_addr", "vault_addr")
    @classmethod
    def _with_scheme(cls, value: str | None) -> str | None:
        """``CONSUL_HTTP_ADDR`` is often written without a scheme."""
        if value and "://" not in value:
            return f"http://{value}"
        return value

    @field_validator("addon_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        low, high = (int(p) for p in value.split("-"))
        if not 1024 <= low <= high <= 65535:
            raise ValueError("give a range of ports from 1024 to 65535, low to high: 19000-19999")
        return value

    @property
    def addon_port_range(self) -> tuple[int, int]:
        low, high = (int(p) for p in self.addon_ports.split("-"))
        return low, high

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    @property
    def build_cache(self) -> Path:
        return self.build_cache_dir or self.cache_dir / "build-cache"

    def hostport(self, which: Literal["nomad", "consul", "vault"]) -> tuple[str, str, int]:
        """Split one of the service addresses into (scheme, host, port)."""
        addr = {"nomad": self.nomad_addr, "consul": self.consul_addr, "vault": self.vault_addr}[which]
        parts = urlsplit(addr or "")
        default = {"nomad": 4646, "consul": 8500, "vault": 8200}[which]
        return parts.scheme or "http", parts.hostname or "127.0.0.1", parts.port or default

    # Access: tokens, sessions, audit
    session_ttl: float = Field(12 * 3600, gt=0, validation_alias=_env("SESSION_TTL"))  # dashboard login, s
    audit_file: Path | None = Field(None, validation_alias=_env("AUDIT_FILE"))  # None: <state>/audit.jsonl

    # Build hygiene and isolation (billowin/build/hygiene.py, packer/app.json, jobspecs/).
    build_memory_mb: int = Field(4096, ge=64, validation_alias=_env("BUILD_MEMORY_MB"))
    build_pids_limit: int = Field(4096, ge=32, validation_alias=_env("BUILD_PIDS_LIMIT"))
    build_network: str = Field(
        "billowin-builds",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",  # a Docker network name
        validation_alias=_env("BUILD_NETWORK"),
    )
    app_network: str = Field(
        "billowin-apps",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",  # a Docker network name
        validation_alias=_env("APP_NETWORK"),
    )
    # Add-ons (billowin/addons/): the node ports they are published on, on the Nomad host
    # network of the apps' Docker network (its gateway address, which only this box's
    # containers reach); their memory; scheduled dumps (seconds apart, 0: none) and how many
    # of each kind (scheduled, manual) are kept.
    addon_ports: str = Field(
        "19000-19999", pattern=r"^[0-9]{4,5}-[0-9]{4,5}$", validation_alias=_env("ADDON_PORTS")
    )
    addon_host_network: str = Field(
        "billowin-apps", pattern=r"^[A-Za-z0-9_-]{1,63}$", validation_alias=_env("ADDON_HOST_NETWORK")
    )
    addon_memory_mb: int = Field(256, ge=64, le=65536, validation_alias=_env("ADDON_MEMORY_MB"))
    addon_ready_timeout: float = Field(300.0, gt=0, validation_alias=_env("ADDON_READY_TIMEOUT"))
    addon_backup_interval: float = Field(86400.0, ge=0, validation_alias=_env("ADDON_BACKUP_INTERVAL"))
    addon_backup_keep: int = Field(7, ge=1, le=1000, validation_alias=_env("ADDON_BACKUP_KEEP"))
    addon_interval: float = Field(30.0, gt=0, validation_alias=_env("ADDON_INTERVAL"))  # worker's round, s
    build_cache_max_age_days: float = Field(30.0, gt=0, validation_alias=_env("BUILD_CACHE_MAX_AGE_DAYS"))
    build_cache_max_mb: int = Field(10240, ge=1, validation_alias=_env("BUILD_CACHE_MAX_MB"))
    build_log_retention_days: float = Field(30.0, gt=0, validation_alias=_env("BUILD_LOG_RETENTION_DAYS"))
    build_logs_max_mb: int = Field(1024, ge=1, validation_alias=_env("BUILD_LOGS_MAX_MB"))

    # Backups of a production box (billowin/stack/backup.py): the API takes them on a schedule.
    backup_interval_hours: float = Field(24.0, ge=0, validation_alias=_env("BACKUP_INTERVAL_HOURS"))  # 0: off
    backup_keep: int = Field(7, ge=1, validation_alias=_env("BACKUP_KEEP"))
    backup_dir: Path | None = Field(None, validation_alias=_env("BACKUP_DIR"))  # None: <root>/backups
    # Run after each scheduled backup, the archive's path last; split with shlex, no shell.
    backup_hook: SecretStr | None = Field(None, validation_alias=_env("BACKUP_HOOK"))
    backup_with_images: bool = Field(False, validation_alias=_env("BACKUP_WITH_IMAGES"))
