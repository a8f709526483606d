"""The production box: the single-box stack with durable state, ACLs and public ports.

``billowin up --production`` runs it under Billowin's own supervisor; ``billowin install``
writes one systemd unit per process with the very same command lines and environment files
(:mod:`billowin.stack.units`). Unlike the development stack, nothing is in memory:

* Consul is a server (``bootstrap_expect = 1``) with a data directory, a gossip key and
  ACLs that deny anonymous callers;
* Nomad is server and client in one agent, with a data directory and ACLs on;
* the router listens on the public address (port 80), and serves the API at
  ``billowin.<domain>`` as well as the apps;
* every component has its own scoped token (:mod:`billowin.stack.acl`).

All state lives under one root (``/var/lib/billowin`` by default)::

    consul/      Consul's data: KV (apps, releases, tokens, queued jobs, webhook secrets)
    nomad/       Nomad's data: jobs, allocations, Variables (config vars) and their keyring
    registry/    the image registry's blobs
    billowin/    the API's state: the monitoring database, the audit log, build logs
    cache/       build caches, one per app (safe to delete)
    router/      the rendered HAProxy configuration and its sockets
    secrets/     0700: bootstrap tokens, each component's token, the gossip keys
    etc/         rendered configuration files and environment files (0600 where they hold tokens)
    run/         pidfiles and logs of processes run by Billowin's supervisor
    docker/      Docker's data, only when the box runs a Docker Engine of its own
    backups/     scheduled backups
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets as pysecrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from billowin.errors import ServiceError
from billowin.monitoring.service import DB_NAME
from billowin.settings import Settings
from billowin.stack.acl import Secrets, ensure_consul_acls, ensure_nomad_acls
from billowin.stack.install import docker_network_subnet, ensure_docker_networks
from billowin.stack.process import ManagedProcess, http_ok, write_env_file, write_private
from billowin.stack.single_box import API_ALLOCATOR, ROUTER_SLOTS, Ports, Progress, SingleBox, docker_ping
from billowin.stack.tools import Toolset

DEFAULT_ROOT: Path = Settings.model_fields["production_root"].default
API_HOSTNAME = "billowin"  # the API answers at billowin.<domain> through the router
MANIFEST = "production.json"


class Layout:
    """Where each piece of a production box's state lives, under one root (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.consul = root / "consul"
        self.nomad = root / "nomad"
        self.registry = root / "registry"
        self.billowin = root / "billowin"
        self.cache = root / "cache"
        self.router = root / "router"
        self.secrets = root / "secrets"
        self.etc = root / "etc"
        self.run = root / "run"
        self.docker = root / "docker"
        self.backups = root / "backups"
        self.docker_socket = self.run / "docker.sock"
        self.monitoring_db = self.billowin / DB_NAME


SETTINGS_FILE_HEADER = """\
# Your settings for this box's API: BILLOWIN_<NAME>=value lines (the README's settings tables),
# e.g. BILLOWIN_GITHUB_WEBHOOK_SECRET=... or BILLOWIN_ALERT_WEBHOOK_URL=...
# Billowin never rewrites this file. Its addresses and tokens are the box's own (api.env) and
# win over anything here. After a change: systemctl restart billowin-api.

# HTTPS by default: certificates from Let's Encrypt for every app, custom domain and the API,
# ordered once their DNS names point at this box (README, "HTTPS settings").
BILLOWIN_ACME_AUTO=true
# BILLOWIN_ACME_EMAIL=you@example.com
# Trying things out? The staging CA's limits are generous (browsers do not trust it):
# BILLOWIN_ACME_DIRECTORY_URL=https://acme-staging-v02.api.letsencrypt.org/directory
"""


class ProductionBox(SingleBox):
    """A box that keeps its state under ``root`` and starts each part with ACLs on.

    ``own_docker``: run a Docker Engine of this box (data under ``root/docker``, socket in
    ``root/run``), beside any other engine on the machine; otherwise use the system's engine
    (``/var/run/docker.sock``, Debian's ``docker.service``).
    """

    def __init__(
        self,
        tools: Toolset,
        root: Path,
        *,
        domain: str,
        public_address: str = "0.0.0.0",
        ports: Ports | None = None,
        own_docker: bool = False,
        api_env: dict[str, str] | None = None,
    ) -> None:
        self.layout = Layout(root)
        super().__init__(
            tools,
            ports or Ports(router_http=80, router_https=443),
            root / "run",
            domain=domain,
            api_env=api_env,
        )
        self.root = root
        self.router_dir = self.layout.router
        self.registry_dir = self.layout.registry
        self.public_address = public_address
        self.own_docker = own_docker
        self.secrets = Secrets(self.layout.secrets)

    # -- addresses and tokens ------------------------------------------------------
    @property
    def docker_host(self) -> str:
        return f"unix://{self.layout.docker_socket}" if self.own_docker else "unix:///var/run/docker.sock"

    def _token(self, name: str) -> str | None:
        return self.secrets.get(name)

    @property
    def settings(self) -> Settings:
        """How the API (and a test, or the admin's CLI on the host) talks to this box."""
        base = super().settings
        return base.model_copy(
            update={
                "state_dir": self.layout.billowin,
                "build_cache_dir": self.layout.cache,
                "docker_host": self.docker_host,
                "consul_token": _secret(self._token("consul-api")),
                "nomad_token": _secret(self._token("nomad-api")),
            }
        )

    def admin_env(self) -> dict[str, str]:
        """The environment for Consul's and Nomad's own CLIs with the bootstrap tokens (backups)."""
        env = {
            "CONSUL_HTTP_ADDR": f"{self.host}:{self.ports.consul_http}",
            "NOMAD_ADDR": f"http://{self.host}:{self.ports.nomad_http}",
        }
        if token := self._token("consul-bootstrap"):
            env["CONSUL_HTTP_TOKEN"] = token
        if token := self._token("nomad-bootstrap"):
            env["NOMAD_TOKEN"] = token
        return env

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(
            {
                "BILLOWIN_STATE_DIR": str(self.layout.billowin),
                "BILLOWIN_BUILD_CACHE_DIR": str(self.layout.cache),
                "BILLOWIN_DOCKER_HOST": self.docker_host,
                "DOCKER_HOST": self.docker_host,  # Packer's docker builder runs the docker CLI
                "BILLOWIN_ACME_API_NAME": f"{API_HOSTNAME}.{self.domain}",  # a certificate for the API too
            }
        )
        for var, name in (("BILLOWIN_CONSUL_TOKEN", "consul-api"), ("BILLOWIN_NOMAD_TOKEN", "nomad-api")):
            if token := self._token(name):
                env[var] = token
        return env

    def endpoints(self) -> dict[str, str]:
        shown = super().endpoints()
        port = "" if self.ports.router_http == 80 else f":{self.ports.router_http}"
        shown["Billowin API"] = (
            f"http://{API_HOSTNAME}.{self.domain}{port} and http://{self.host}:{self.ports.api}"
        )
        shown["Logs and state"] = f"{self.root} (logs in {self.layout.run})"
        shown["Admin tokens"] = f"{self.layout.secrets}/consul-bootstrap.token, nomad-bootstrap.token"
        return shown

    # -- configuration files -------------------------------------------------------
    @property
    def settings_file(self) -> Path:
        """The admin's own settings for the API (never rewritten; see ``SETTINGS_FILE_HEADER``)."""
        return self.layout.etc / "settings.env"

    def gossip_key(self, name: str) -> str:
        key = self.secrets.get(name)
        if key is None:
            key = base64.b64encode(pysecrets.token_bytes(32)).decode()
            self.secrets.put(name, key)
        return key

    def write_configs(self) -> None:
        """Render every configuration and environment file from the current secrets (idempotent)."""
        for path in (
            self.layout.etc,
            self.layout.run,
            self.layout.router,
            self.layout.billowin,
            self.layout.cache,
        ):
            path.mkdir(parents=True, exist_ok=True)
        for path in (self.layout.consul, self.layout.nomad, self.layout.registry):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write_consul_config()
        self._write_nomad_config()
        self._write_registry_config()
        self.consul_template_config(once=False)
        write_env_file(self.layout.etc / "router.env", self._router_env())
        write_env_file(
            self.layout.etc / "api.env",
            {
                **self.env(),
                "BILLOWIN_SETTINGS_FILE": str(self.settings_file),
                **API_ALLOCATOR,
                **self.api_env,
            },
        )
        if not self.settings_file.exists():
            write_private(self.settings_file, SETTINGS_FILE_HEADER)

    def _write_consul_config(self) -> None:
        write_private(self.layout.etc / "consul.json", json.dumps(self.consul_config(), indent=2))

    def consul_config(self) -> dict[str, Any]:
        """Consul's configuration (a cluster node changes its addresses and joins)."""
        p = self.ports
        return {
            "node_name": "billowin",
            "server": True,
            "bootstrap_expect": 1,
            "data_dir": str(self.layout.consul),
            "bind_addr": "127.0.0.1",
            "client_addr": "127.0.0.1",
            "encrypt": self.gossip_key("consul-gossip.key"),
            "ports": {
                "http": p.consul_http,
                "dns": p.consul_dns,
                "serf_lan": p.consul_serf_lan,
                "serf_wan": p.consul_serf_wan,
                "server": p.consul_server,
                "grpc": p.consul_grpc,
                "grpc_tls": -1,
            },
            "acl": {
                "enabled": True,
                "default_policy": "deny",
                "down_policy": "extend-cache",
                # Listing KV needs `list`: an anonymous list gets a 403, not a filtered 404.
                "enable_key_list_policy": True,
                "tokens": {
                    # Consul makes this management token itself when it first elects a leader.
                    "initial_management": self.secrets.ensure("consul-bootstrap"),
                    "agent": self.secrets.ensure("consul-agent"),
                    # Consul's DNS interface answers the router's SRV queries (the app instances)
                    # with this token, as DNS carries none. Consul 1.14 has no separate DNS token,
                    # so anonymous requests on the loopback may read services and nodes too.
                    "default": self.secrets.ensure("consul-dns"),
                },
            },
            "dns_config": {"only_passing": True},
            "ui_config": {"enabled": True},
            "performance": {"raft_multiplier": 1},  # elect a leader in about a second, not five
            "log_level": "INFO",
            "disable_update_check": True,  # a production box does not call home
        }

    def _write_nomad_config(self) -> None:
        write_private(self.layout.etc / "nomad.json", json.dumps(self.nomad_config(), indent=2))

    def docker_plugin_config(self) -> dict[str, Any]:
        """The docker driver's settings: as on the development stack (single_box.py), Docker
        keeps the logs and Billowin removes stopped instances' containers."""
        plugin: dict[str, Any] = {
            "allow_privileged": False,
            # Add-ons' data on Docker volumes; only Billowin submits jobs (single_box.py says more).
            "volumes": {"enabled": True},
            "disable_log_collection": True,
            "gc": {"container": False},
        }
        if self.own_docker:
            plugin["endpoint"] = self.docker_host
        return plugin

    def _host_networks(self) -> dict[str, Any]:
        """The apps' Docker network as a Nomad host network, once it exists: add-ons' ports."""
        subnet = docker_network_subnet(self.settings, self.settings.app_network)
        return {"host_network": {self.settings.addon_host_network: {"cidr": subnet}}} if subnet else {}

    def nomad_config(self) -> dict[str, Any]:
        """Nomad's configuration (a cluster node changes its addresses and joins)."""
        p = self.ports
        return {
            "name": "billowin",
            "bind_addr": "127.0.0.1",
            "data_dir": str(self.layout.nomad),
            "ports": {"http": p.nomad_http, "rpc": p.nomad_rpc, "serf": p.nomad_serf},
            "advertise": {"http": "127.0.0.1", "rpc": "127.0.0.1", "serf": "127.0.0.1"},
            "server": {
                "enabled": True,
                "bootstrap_expect": 1,
                "encrypt": self.gossip_key("nomad-gossip.key"),
            },
            # Apps' ports on the loopback only: the world reaches apps through the router.
            "client": {
                "enabled": True,
                "network_interface": "lo",
                "gc_max_allocs": 200,
                **self._host_networks(),
            },
            "acl": {"enabled": True},
            "consul": {"address": f"127.0.0.1:{p.consul_http}", "token": self._token("consul-nomad") or ""},
            "plugin": {"docker": {"config": self.docker_plugin_config()}},
            "log_level": "INFO",
            "disable_update_check": True,
        }

    def _write_registry_config(self) -> None:
        # YAML is a superset of JSON
        write_private(self.layout.etc / "registry.yml", json.dumps(self.registry_config()))

    def registry_config(self) -> dict[str, Any]:
        return {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.layout.registry)},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"{self.host}:{self.ports.registry}"},
        }

    def consul_template_config_path(self, *, once: bool) -> Path:
        return self.layout.etc / ("consul-template-once.hcl" if once else "consul-template.hcl")

    def consul_template_config(self, *, once: bool) -> Path:
        path = self.consul_template_config_path(once=once)
        write_private(path, self.consul_template_hcl())
        return path

    def consul_template_hcl(self) -> str:
        hcl = super().consul_template_hcl()
        token = self._token("consul-router") or ""
        return hcl.replace("consul {\n", f'consul {{\n  token   = "{token}"\n', 1)

    def _router_env(self) -> dict[str, str]:
        env = {
            "BILLOWIN_DOMAIN": self.domain,
            "BILLOWIN_HAPROXY_SOCKET": str(self.router_dir / "haproxy.sock"),
            "BILLOWIN_ROUTER_BIND": f"{self.public_address}:{self.ports.router_http}",
            "BILLOWIN_ROUTER_HTTPS_BIND": f"{self.public_address}:{self.ports.router_https}",
            "BILLOWIN_ROUTER_HTTPS_PORT": str(self.ports.router_https),
            "BILLOWIN_ROUTER_CERTS_DIR": str(self.router_dir / "certs"),
            "BILLOWIN_HSTS_MAX_AGE": str(self.hsts_max_age),
            "BILLOWIN_ROUTER_STATS_BIND": f"{self.host}:{self.ports.router_stats}",
            "BILLOWIN_ROUTER_ROUTES_MAP": str(self.router_dir / "routes.map"),
            "BILLOWIN_ROUTER_SERVER_STATE": str(self.router_dir / "servers.state"),
            "BILLOWIN_CONSUL_DNS_PORT": str(self.ports.consul_dns),
            # Instances of one app the router can send to (the first this many DNS answers).
            "BILLOWIN_ROUTER_SLOTS": str(ROUTER_SLOTS),
            "BILLOWIN_API_BACKEND": f"{self.host}:{self.ports.api}",
            "BILLOWIN_API_HOSTNAME": f"{API_HOSTNAME}.{self.domain}",
        }
        if token := self._token("consul-router"):
            env["BILLOWIN_CONSUL_TOKEN"] = token  # the reload command reads the certificates
        if token := self._token("nomad-router"):
            env["BILLOWIN_NOMAD_TOKEN"] = token  # the reload command's cross-check with Nomad
        return env

    # -- the processes ---------------------------------------------------------
    def plan(self) -> list[ManagedProcess]:
        """Every long-running process of the box, in start order, as the supervisor and the
        systemd units run them (same argv, same environment file)."""
        procs = [self.dockerd()] if self.own_docker else []
        return [
            *procs,
            self.registry(),
            self.consul(),
            self.nomad(),
            self.haproxy(),
            self.consul_template(),
            self.api(),
        ]

    def dockerd(self) -> ManagedProcess:
        exec_root = self.layout.run / "docker"
        return self._proc(
            "dockerd",
            [
                str(self.tools.dockerd),
                "--host",
                self.docker_host,
                "--data-root",
                str(self.layout.docker),
                "--exec-root",
                str(exec_root),
                "--pidfile",
                str(exec_root / "dockerd.pid"),
                "--storage-driver",
                "overlay2",
                # Beside another engine on the machine: a default bridge of its own (with
                # `--bridge none` dockerd deletes the host's docker0, the other engine's), no
                # iptables rules (those would fight the other engine's); published ports go
                # through docker-proxy.
                "--bridge",
                self.engine_bridge,
                "--iptables=false",
                "--ip-masq=false",
            ],
            ready=lambda: docker_ping(self.layout.docker_socket),
            stop_timeout=30,
        )

    @property
    def engine_bridge(self) -> str:
        """The default bridge of the box's own engine: named after the root (15 characters at most)."""
        return "bw" + hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:10]

    def _clear_stale_docker_pidfiles(self) -> None:
        prepare_own_engine(self.layout.run / "docker", self.engine_bridge)

    def registry(self) -> ManagedProcess:
        return self._proc(
            "registry",
            [str(self.tools.docker_registry), "serve", str(self.layout.etc / "registry.yml")],
            ready=self.registry_ready,
        )

    def registry_ready(self) -> bool:
        url = f"http://{self.host}:{self.ports.registry}/v2/"
        return http_ok(url, expect=lambda r: r.status_code == 200)()

    def consul(self) -> ManagedProcess:
        return self._proc(
            "consul",
            [str(self.tools.consul), "agent", "-config-file", str(self.layout.etc / "consul.json")],
            ready=http_ok(
                f"http://{self.host}:{self.ports.consul_http}/v1/status/leader",
                expect=lambda r: r.status_code == 200 and r.json() not in ("", None),
            ),
            stop_signal=signal.SIGINT,  # leave gracefully
            stop_timeout=30,
        )

    def nomad(self) -> ManagedProcess:
        return self._proc(
            "nomad",
            [str(self.tools.nomad), "agent", "-config", str(self.layout.etc / "nomad.json")],
            ready=self._nomad_ready,
            stop_signal=signal.SIGINT,
            stop_timeout=30,
        )

    def _nomad_ready(self) -> bool:
        """A leader is elected and, once ACLs are bootstrapped, this node's docker driver is healthy."""
        base = f"http://{self.host}:{self.ports.nomad_http}/v1"
        if not http_ok(f"{base}/status/leader", expect=lambda r: r.status_code == 200 and r.json() != "")():
            return False
        token = self._token("nomad-bootstrap")
        try:
            resp = httpx.get(f"{base}/nodes", headers={"X-Nomad-Token": token or ""}, timeout=2)
            if resp.status_code == 403:  # ACLs not bootstrapped yet: start() does that next
                return True
            nodes = resp.json()
        except (httpx.HTTPError, ValueError):
            return False
        return any(
            n.get("Status") == "ready" and (n.get("Drivers") or {}).get("docker", {}).get("Healthy")
            for n in nodes
        )

    def haproxy(self) -> ManagedProcess:
        proc = super().haproxy()
        proc.env_file = self.layout.etc / "router.env"
        return proc

    def consul_template(self) -> ManagedProcess:
        return self._proc(
            "consul-template",
            [str(self.tools.consul_template), "-config", str(self.consul_template_config_path(once=False))],
            ready=lambda: True,
            env_file=self.layout.etc / "router.env",
            stop_signal=signal.SIGINT,
        )

    def api(self) -> ManagedProcess:
        return self._proc(
            "api", self.api_argv(), ready=self.api_ready(), env_file=self.layout.etc / "api.env"
        )

    # -- lifecycle --------------------------------------------------------------
    def start(self, progress: Progress = lambda _msg: None, *, timeout: float = 120) -> None:
        """Start every part; the first time, bootstrap the ACLs and make each component's token."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_manifest()  # first: a start that fails half way can still be stopped
        try:
            self.write_configs()
            if self.own_docker:
                self._clear_stale_docker_pidfiles()
                self._start(self.dockerd(), progress, timeout)
            elif not docker_ping():
                raise ServiceError(
                    "docker",
                    "no Docker Engine answers on /var/run/docker.sock",
                    hint="Start it (`systemctl start docker`), or run `billowin install`.",
                )
            made = ensure_docker_networks(self.settings)
            progress(f"Docker networks: {', '.join(made) + ' made' if made else 'present'}")
            self._collect_registry_garbage(progress)
            self._start(self.registry(), progress, timeout)
            self._start(self.consul(), progress, timeout)
            progress("consul: ACLs and tokens")
            ensure_consul_acls(f"http://{self.host}:{self.ports.consul_http}", self.secrets)
            self.write_configs()  # Nomad's and the router's Consul tokens
            self._start(self.nomad(), progress, timeout)
            progress("nomad: ACLs and tokens")
            ensure_nomad_acls(f"http://{self.host}:{self.ports.nomad_http}", self.secrets)
            self.write_configs()  # the router's and the API's Nomad tokens
            self.nomad().wait_ready(timeout)  # now with a token: until its docker driver is healthy
            # After the first start, HAProxy starts on the last configuration it had.
            self._start_router_and_api(
                progress, timeout, render=not (self.router_dir / "haproxy.cfg").is_file()
            )
        except BaseException:
            self.stop()
            raise

    def _write_manifest(self) -> None:
        (self.root / MANIFEST).write_text(
            json.dumps(
                {
                    "ports": self.ports.__dict__,
                    "domain": self.domain,
                    "public_address": self.public_address,
                    "own_docker": self.own_docker,
                },
                indent=2,
            )
        )

    @classmethod
    def from_root(cls, tools: Toolset, root: Path) -> ProductionBox:
        data = json.loads((root / MANIFEST).read_text())
        if "cluster" in data:  # a node of a cluster (billowin install --join / --private-address)
            from billowin.stack.cluster import ClusterNode

            return ClusterNode.from_cluster_manifest(tools, root, data)
        return cls(
            tools,
            root,
            domain=data["domain"],
            public_address=data["public_address"],
            ports=Ports(**{"router_https": 443, **data["ports"]}),  # boxes made before HTTPS: 443
            own_docker=data["own_docker"],
        )

    def stop(self) -> None:
        """Stop every process, newest first. Apps' jobs stay registered: the next start, or the
        next boot, brings them back from Nomad's state."""
        started = {p.name: p for p in self.processes}
        for name in ("api", "consul-template", "haproxy", "nomad", "consul", "registry", "dockerd"):
            (started.get(name) or self._pidfile(name)).stop()
        self.processes.clear()


def _secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None


def prepare_own_engine(exec_root: Path, bridge: str) -> None:
    """Before the box's own dockerd starts: its stale pidfiles gone, its default bridge there."""
    clear_stale_docker_pidfiles(exec_root)
    # Asked of the kernel, not of /sys: a process that entered another network namespace (as a
    # cluster harness's node does) still sees the /sys of the one it came from.
    if not _link_exists(bridge):
        made = subprocess.run(
            ["ip", "link", "add", "name", bridge, "type", "bridge"],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0 and not _link_exists(bridge):
            raise ServiceError("docker", f"cannot make the bridge {bridge}: {made.stderr.strip()}")


def _link_exists(name: str) -> bool:
    shown = subprocess.run(["ip", "link", "show", "dev", name], capture_output=True, check=False)
    return shown.returncode == 0


def clear_stale_docker_pidfiles(exec_root: Path) -> None:
    """Remove dockerd's and containerd's own pidfiles under ``exec_root`` when no live process of
    this box's engine has that pid: they sit on disk (not on a tmpfs /run), so after a power cut
    they name a dead process, or a stranger that got its pid, and dockerd would refuse to start,
    or wait for a containerd that is not there. The supervisor runs this before it starts dockerd,
    and so does the systemd unit (``ExecStartPre=``, see :mod:`billowin.stack.units`)."""
    for pidfile in (exec_root / "dockerd.pid", exec_root / "containerd" / "containerd.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            continue
        if str(exec_root).encode() not in cmdline:  # a zombie's is empty; a stranger's differs
            pidfile.unlink(missing_ok=True)
