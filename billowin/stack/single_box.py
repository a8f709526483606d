"""The single-box stack: every real part of Billowin on one machine.

``billowin up`` (``make up``) and the integration test session both use this,
so what is tested is what users run. Order of start:

    dockerd (only when no engine answers) → the apps' and builds' Docker networks →
    registry → consul -dev →
    nomad -dev (docker driver, registering in that Consul) →
    consul-template + HAProxy (the router) → the Billowin API

Each process logs to ``<state>/<name>.log`` and has a ``<state>/<name>.pid``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import httpx

from billowin.build.hygiene import collect_registry_garbage
from billowin.errors import BillowinError, ServiceError
from billowin.release.logs import ALLOC_LABEL
from billowin.router.reload import MARKER
from billowin.settings import PACKAGE_DIR, Settings
from billowin.stack.install import docker_network_subnet, ensure_docker_networks
from billowin.stack.nomad_ui import served_ui, ui_note
from billowin.stack.process import ManagedProcess, free_port, http_ok, pid_alive
from billowin.stack.tools import Toolset
from billowin.system import System

DOCKER_SOCKET = Path("/var/run/docker.sock")
# Server slots per app backend in the router, filled from Consul's DNS: the most instances of one
# app that receive traffic at once (a rolling deploy briefly runs twice the app's count).
ROUTER_SLOTS = 16
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Ports:
    consul_http: int = 8500
    consul_dns: int = 8600
    consul_serf_lan: int = 8301
    consul_serf_wan: int = 8302
    consul_server: int = 8300
    consul_grpc: int = 8502
    nomad_http: int = 4646
    nomad_rpc: int = 4647
    nomad_serf: int = 4648
    registry: int = 5000
    router_http: int = 8080
    router_https: int = 8443
    router_stats: int = 8404
    api: int = 8000

    @classmethod
    def from_settings(cls, settings: Settings) -> Ports:
        return cls(
            consul_http=settings.hostport("consul")[2],
            nomad_http=settings.hostport("nomad")[2],
            registry=int(settings.registry.rsplit(":", 1)[1]),
            router_http=settings.router_port,
            router_https=settings.router_https_port,
            router_stats=settings.router_stats_port,
            api=settings.api_port,
        )

    @classmethod
    def free(cls) -> Ports:
        """Free ports for every listener, so a test stack never clashes with `make up`."""
        return cls(**{f.name: free_port() for f in fields(cls)})


def docker_ping(socket_path: Path = DOCKER_SOCKET) -> bool:
    """Does a Docker Engine answer on ``socket_path``?"""
    # Connect first: httpx leaks the socket when a unix-socket connect fails.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(2)
            sock.connect(str(socket_path))
        except OSError:
            return False
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=2) as client:
            return client.get("http://docker/_ping").status_code == 200
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class VaultDev:
    """A ``vault server -dev`` (in memory, unsealed, KV v2 at ``secret/``) and how to talk to it."""

    process: ManagedProcess
    addr: str
    root_token: str

    def env(self) -> dict[str, str]:
        return {"BILLOWIN_VAULT_ADDR": self.addr, "BILLOWIN_VAULT_TOKEN": self.root_token}


def _free_port_pair() -> int:
    """A free port whose next one is free too: Vault's dev cluster listener takes port + 1."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise ServiceError("ports", "no two free consecutive ports for Vault")


def vault_dev(vault: Path, state_dir: Path, *, port: int | None = None) -> VaultDev:
    """A Vault dev server on ``port`` (default: a free one) with a random root token.

    Not started: call ``.process.start()`` and ``.process.wait_ready(timeout)``, and
    ``.process.stop()`` when done. It logs to ``<state_dir>/vault.log``; like any dev
    server, Vault prints its (throwaway) root token there.
    """
    port = port or _free_port_pair()
    addr = f"http://127.0.0.1:{port}"
    token = secrets.token_urlsafe(24)
    process = ManagedProcess(
        name="vault",
        argv=[
            str(vault),
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",  # leave ~/.vault-token alone
        ],
        run_dir=state_dir,
        # The token goes through the environment, so it is not in `ps` output.
        env={"VAULT_DEV_ROOT_TOKEN_ID": token, "VAULT_ADDR": addr},
        ready=http_ok(f"{addr}/v1/sys/health", expect=lambda r: r.status_code == 200),
        stop_signal=signal.SIGINT,
        stop_timeout=30,
    )
    return VaultDev(process, addr, token)


# Two malloc arenas for the API's threads instead of eight per core: 5 MB less at idle.
API_ALLOCATOR = {"MALLOC_ARENA_MAX": "2"}


class SingleBox:
    def __init__(
        self,
        tools: Toolset,
        ports: Ports,
        state_dir: Path,
        *,
        domain: str = "localhost",
        api_env: dict[str, str] | None = None,
        hsts_max_age: int | None = None,
    ) -> None:
        self.tools = tools
        self.hsts_max_age = Settings().hsts_max_age if hsts_max_age is None else hsts_max_age
        self.api_env = api_env or {}
        self.ports = ports
        self.state_dir = state_dir
        self.domain = domain
        self.router_dir = state_dir / "router"
        self.registry_dir = state_dir / "registry"
        self.processes: list[ManagedProcess] = []
        # Where the control plane's listeners (Consul's and Nomad's HTTP APIs, the registry, the
        # API, the router's stats) answer. A cluster node's is its private address.
        self.host = "127.0.0.1"
        # Put before every command line (a cluster harness's node runs in its network namespace).
        self.exec_prefix: list[str] = []

    # -- what clients need to talk to this stack -------------------------------
    @property
    def settings(self) -> Settings:
        return Settings(
            nomad_addr=f"http://{self.host}:{self.ports.nomad_http}",
            consul_addr=f"http://{self.host}:{self.ports.consul_http}",
            registry=f"{self.host}:{self.ports.registry}",
            domain=self.domain,
            router_port=self.ports.router_http,
            router_https_port=self.ports.router_https,
            router_stats_port=self.ports.router_stats,
            haproxy_socket=self.router_dir / "haproxy.sock",
            haproxy_bin=str(self.tools.haproxy),
            api_port=self.ports.api,
            state_dir=self.state_dir,
        )

    def endpoints(self) -> dict[str, str]:
        p = self.ports
        return {
            "Billowin API": f"http://{self.host}:{p.api}  (docs at /docs, health at /health)",
            "App router": f"http://<app>.{self.domain}:{p.router_http}, https://<app>.{self.domain}:{p.router_https}",
            "Router stats": f"http://{self.host}:{p.router_stats}/stats  (Prometheus: /metrics)",
            # Asked of the running Nomad: a source build may lack the UI (`make setup` says why).
            "Nomad UI/API": f"http://{self.host}:{p.nomad_http}  "
            f"({ui_note(served_ui(f'http://{self.host}:{p.nomad_http}'))})",
            "Consul UI": f"http://{self.host}:{p.consul_http}/ui",
            "Registry": f"{self.host}:{p.registry}",
            "Logs and state": str(self.state_dir),
        }

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            "BILLOWIN_NOMAD_ADDR": s.nomad_addr,
            "BILLOWIN_CONSUL_ADDR": s.consul_addr,
            "BILLOWIN_REGISTRY": s.registry,
            "BILLOWIN_DOMAIN": s.domain,
            "BILLOWIN_ROUTER_PORT": str(s.router_port),
            "BILLOWIN_ROUTER_HTTPS_PORT": str(s.router_https_port),
            "BILLOWIN_ROUTER_STATS_PORT": str(s.router_stats_port),
            "BILLOWIN_HAPROXY_SOCKET": str(s.haproxy_socket),
            "BILLOWIN_API_PORT": str(s.api_port),
            "BILLOWIN_STATE_DIR": str(self.state_dir),
        }

    # -- the processes -------------------------------------------------------
    def _proc(self, name: str, argv: list[str], ready: Callable[[], bool], **kw: object) -> ManagedProcess:
        argv = [*self.exec_prefix, *argv]
        return ManagedProcess(name=name, argv=argv, run_dir=self.state_dir, ready=ready, **kw)  # type: ignore[arg-type]

    def dockerd(self) -> ManagedProcess:
        return self._proc(
            "dockerd",
            [str(self.tools.dockerd), "--storage-driver", "overlay2"],
            ready=docker_ping,
            stop_timeout=30,
        )

    def registry(self) -> ManagedProcess:
        cfg = self.state_dir / "registry.yml"
        storage = self.registry_dir
        storage.mkdir(parents=True, exist_ok=True)
        cfg.write_text(
            json.dumps(
                {  # YAML is a superset of JSON
                    "version": 0.1,
                    "log": {"level": "info"},
                    "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
                    "http": {"addr": f"{self.host}:{self.ports.registry}"},
                }
            )
        )
        return self._proc(
            "registry",
            [str(self.tools.docker_registry), "serve", str(cfg)],
            ready=http_ok(
                f"http://{self.host}:{self.ports.registry}/v2/", expect=lambda r: r.status_code == 200
            ),
        )

    def consul(self) -> ManagedProcess:
        p = self.ports
        return self._proc(
            "consul",
            [
                str(self.tools.consul),
                "agent",
                "-dev",
                "-node",
                "billowin",
                "-bind",
                "127.0.0.1",
                "-client",
                "127.0.0.1",
                "-http-port",
                str(p.consul_http),
                "-dns-port",
                str(p.consul_dns),
                "-serf-lan-port",
                str(p.consul_serf_lan),
                "-serf-wan-port",
                str(p.consul_serf_wan),
                "-server-port",
                str(p.consul_server),
                "-grpc-port",
                str(p.consul_grpc),
                "-hcl",
                "ports { grpc_tls = -1 }",
                # The router resolves instances over DNS: passing ones only, as consul-template did.
                "-hcl",
                "dns_config { only_passing = true }",
            ],
            ready=http_ok(
                f"http://{self.host}:{p.consul_http}/v1/status/leader",
                expect=lambda r: r.status_code == 200 and r.json() not in ("", None),
            ),
        )

    def nomad(self) -> ManagedProcess:
        p = self.ports
        cfg = self.state_dir / "nomad.hcl"
        data_dir = self.state_dir / "nomad-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        subnet = docker_network_subnet(self.settings, self.settings.app_network)
        host_network = (
            f'\n  host_network "{self.settings.addon_host_network}" {{\n    cidr = "{subnet}"\n  }}'
            if subnet
            else ""
        )
        cfg.write_text(f"""
name      = "billowin"
bind_addr = "127.0.0.1"
data_dir  = "{data_dir}"
ports {{
  http = {p.nomad_http}
  rpc  = {p.nomad_rpc}
  serf = {p.nomad_serf}
}}
consul {{
  address = "127.0.0.1:{p.consul_http}"
}}
client {{
  gc_max_allocs = 200{host_network}
}}
plugin "docker" {{
  config {{
    allow_privileged = false
    # Add-ons keep their data on Docker volumes (jobspecs/addon.nomad.hcl). Only Billowin
    # submits jobs, always rendered from jobspecs/: no app asks for a mount.
    volumes {{
      enabled = true
    }}
    # Docker keeps each container's output (the jobspecs' `local` log driver); the
    # containers of stopped instances stay until Billowin removes them, so what a
    # crashed or replaced instance printed stays readable with `billowin logs`.
    disable_log_collection = true
    gc {{
      container = false
    }}
  }}
}}
""")
        return self._proc(
            "nomad",
            [str(self.tools.nomad), "agent", "-dev", "-config", str(cfg)],
            ready=http_ok(
                f"http://{self.host}:{p.nomad_http}/v1/nodes",
                expect=lambda r: (
                    r.status_code == 200
                    and any(
                        n.get("Status") == "ready"
                        and "docker" in (n.get("Drivers") or {})
                        and n["Drivers"]["docker"].get("Healthy")
                        for n in r.json()
                    )
                ),
            ),
            stop_signal=signal.SIGINT,
            stop_timeout=30,
        )

    def vault(self) -> VaultDev:
        """A Vault dev server for this stack, on a free port; not part of ``start()``."""
        return vault_dev(self.tools.vault, self.state_dir)

    def _router_env(self) -> dict[str, str]:
        return {
            "BILLOWIN_DOMAIN": self.domain,
            "BILLOWIN_HAPROXY_SOCKET": str(self.router_dir / "haproxy.sock"),
            "BILLOWIN_ROUTER_BIND": f"*:{self.ports.router_http}",
            "BILLOWIN_ROUTER_HTTPS_BIND": f"*:{self.ports.router_https}",
            "BILLOWIN_ROUTER_HTTPS_PORT": str(self.ports.router_https),
            "BILLOWIN_ROUTER_CERTS_DIR": str(self.router_dir / "certs"),
            "BILLOWIN_HSTS_MAX_AGE": str(self.hsts_max_age),
            "BILLOWIN_ROUTER_STATS_BIND": f"{self.host}:{self.ports.router_stats}",
            "BILLOWIN_ROUTER_ROUTES_MAP": str(self.router_dir / "routes.map"),
            "BILLOWIN_ROUTER_SERVER_STATE": str(self.router_dir / "servers.state"),
            "BILLOWIN_CONSUL_DNS_PORT": str(self.ports.consul_dns),
            # Instances of one app the router can send to (the first this many DNS answers).
            "BILLOWIN_ROUTER_SLOTS": str(ROUTER_SLOTS),
            # The API answers ACME HTTP-01 challenges on every host; only a production box also
            # serves the API itself at billowin.<domain> (BILLOWIN_API_HOSTNAME).
            "BILLOWIN_API_BACKEND": f"{self.host}:{self.ports.api}",
        }

    def _reload_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "billowin.router.reload",
            "--candidate",
            str(self.router_dir / "haproxy.cfg.next"),
            "--live",
            str(self.router_dir / "haproxy.cfg"),
            "--pidfile",
            str(self.router_dir / "haproxy.pid"),
            "--haproxy",
            str(self.tools.haproxy),
            "--nomad-addr",
            f"http://127.0.0.1:{self.ports.nomad_http}",
            "--certs-dir",
            str(self.router_dir / "certs"),
            "--consul-addr",
            f"http://127.0.0.1:{self.ports.consul_http}",
            "--routes-map",
            str(self.router_dir / "routes.map"),
            "--socket",
            str(self.router_dir / "haproxy.sock"),
            "--server-state",
            str(self.router_dir / "servers.state"),
        ]

    def consul_template_hcl(self) -> str:
        """consul-template's configuration: render the HAProxy template, then reload safely."""
        template = PACKAGE_DIR / "router" / "haproxy.cfg.ctmpl"
        command = json.dumps(self._reload_argv())
        return f"""
consul {{
  address = "127.0.0.1:{self.ports.consul_http}"
  retry {{
    enabled     = true
    attempts    = 0
    backoff     = "250ms"
    max_backoff = "5s"
  }}
}}
log_level = "info"
kill_signal = "SIGTERM"
template {{
  source      = "{template}"
  destination = "{self.router_dir / "haproxy.cfg.next"}"
  command     = {command}
  command_timeout = "60s"
  wait {{
    min = "500ms"
    max = "3s"
  }}
}}
"""

    def consul_template_config(self, *, once: bool) -> Path:
        cfg = self.router_dir / ("consul-template-once.hcl" if once else "consul-template.hcl")
        cfg.write_text(self.consul_template_hcl())
        return cfg

    def render_initial_router_config(self) -> None:
        """Render once and install, so HAProxy starts on a config from Consul."""
        self.router_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.consul_template_config(once=True)
        proc = subprocess.run(
            [*self.exec_prefix, str(self.tools.consul_template), "-config", str(cfg), "-once"],
            env={**os.environ, **self._router_env()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        live = self.router_dir / "haproxy.cfg"
        if proc.returncode != 0 or not live.is_file() or MARKER not in live.read_text():
            raise ServiceError(
                "router", f"the first render of the HAProxy configuration failed:\n{proc.stderr[-2000:]}"
            )

    def haproxy(self) -> ManagedProcess:
        sock = self.router_dir / "haproxy.sock"
        return self._proc(
            "haproxy",
            [
                str(self.tools.haproxy),
                "-W",
                "-f",
                str(self.router_dir / "haproxy.cfg"),
                "-p",
                str(self.router_dir / "haproxy.pid"),
                "-S",
                str(self.router_dir / "master.sock"),
            ],
            ready=lambda: (
                sock.exists() and http_ok(f"http://{self.host}:{self.ports.router_stats}/healthz")()
            ),
            stop_signal=signal.SIGUSR1,  # soft stop: finish in-flight requests
            stop_timeout=35,
        )

    def consul_template(self) -> ManagedProcess:
        return self._proc(
            "consul-template",
            [str(self.tools.consul_template), "-config", str(self.consul_template_config(once=False))],
            ready=lambda: True,
            env=self._router_env(),
            stop_signal=signal.SIGINT,
        )

    def api_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "billowin.api.app:create_app",
            "--factory",
            "--host",
            self.host,
            "--port",
            str(self.ports.api),
            "--no-access-log",
        ]

    def api_ready(self) -> Callable[[], bool]:
        return http_ok(f"http://{self.host}:{self.ports.api}/health", expect=lambda r: r.status_code == 200)

    def api(self) -> ManagedProcess:
        env = {**self.env(), **API_ALLOCATOR, **self.api_env}
        return self._proc("api", self.api_argv(), ready=self.api_ready(), env=env)

    # -- lifecycle --------------------------------------------------------------
    def start(self, progress: Progress = lambda _msg: None, *, timeout: float = 120) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if docker_ping():
                progress("Docker Engine: already running")
            else:
                self._start(self.dockerd(), progress, timeout)
            made = ensure_docker_networks(self.settings)
            progress(f"Docker networks: {', '.join(made) + ' made' if made else 'present'}")
            self._collect_registry_garbage(progress)
            self._start(self.registry(), progress, timeout)
            self._start(self.consul(), progress, timeout)
            self._start(self.nomad(), progress, timeout)
            self._start_router_and_api(progress, timeout, render=True)
        except BaseException:
            self.stop()
            raise
        self._write_manifest()

    def _start_router_and_api(self, progress: Progress, timeout: float, *, render: bool) -> None:
        """The router (``render``: from a first render of Consul's catalog), then the API."""
        self._start_router(progress, timeout, render=render)
        self._start(self.api(), progress, timeout)

    def _start_router(self, progress: Progress, timeout: float, *, render: bool) -> None:
        if render:
            progress("router: first render from Consul")
            self.render_initial_router_config()
        self._start(self.haproxy(), progress, timeout)
        self._start(self.consul_template(), progress, timeout)

    def _collect_registry_garbage(self, progress: Progress) -> None:
        """Free the layers of deleted images, while the registry is down (its rule for GC)."""
        if self._pidfile("registry").running() or not (self.registry_dir / "docker").is_dir():
            return  # serving, or nothing pushed yet
        try:
            freed = collect_registry_garbage(
                self.tools.docker_registry,
                self.registry_dir,
                address=f"{self.host}:{self.ports.registry}",
            )
        except ServiceError as exc:
            progress(f"registry garbage collection skipped: {exc.message}")
            return
        progress(f"registry: garbage collected{f' ({freed})' if freed else ''}")

    def _start(self, proc: ManagedProcess, progress: Progress, timeout: float) -> None:
        if proc.running():
            progress(f"{proc.name}: already running (pid {proc.pid()})")
            return
        progress(f"{proc.name}: starting")
        proc.start()
        self.processes.append(proc)
        proc.wait_ready(timeout)
        progress(f"{proc.name}: ready")

    def restart(self, name: str, timeout: float = 120, *, crash: bool = False) -> None:
        """Stop one process of the stack and start it again on the same ports.

        ``crash``: SIGKILL the process alone, as a crash would, instead of stopping it cleanly.
        """
        proc = next((p for p in self.processes if p.name == name), None)
        if proc is None:
            raise ServiceError(name, "is not part of this running stack")
        if crash:
            proc.kill()
        else:
            proc.stop()
        proc.start()
        proc.wait_ready(timeout)

    def _write_manifest(self) -> None:
        (self.state_dir / "stack.json").write_text(
            json.dumps({"ports": asdict(self.ports), "domain": self.domain}, indent=2)
        )

    @classmethod
    def from_manifest(cls, tools: Toolset, state_dir: Path) -> SingleBox:
        data = json.loads((state_dir / "stack.json").read_text())
        return cls(tools, Ports(**data["ports"]), state_dir, domain=data["domain"])

    def stop_jobs(self, timeout: float = 60) -> None:
        """Stop every Nomad job, then remove their containers (Nomad leaves stopped ones for
        their logs), so no app container outlives the stack."""
        system = System(self.settings)
        nomad = system.nomad
        try:
            allocations = [a["ID"] for a in nomad.all_allocations()]
            for job in nomad.jobs():
                nomad.stop(job["ID"], purge=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and nomad.live_allocations():
                time.sleep(0.5)
            for alloc_id in allocations:
                system.docker.remove_containers(label=f"{ALLOC_LABEL}={alloc_id}")
        except BillowinError:
            return

    def stop(self) -> None:
        """Stop everything this stack started (or a previous `billowin up` did), newest first."""
        if self._pidfile("nomad").running():
            self.stop_jobs()
        started = {p.name: p for p in self.processes}
        for name in ("api", "consul-template", "haproxy", "nomad", "consul", "registry", "dockerd"):
            proc = started.get(name) or self._pidfile(name)
            proc.stop()
        self.processes.clear()

    def _pidfile(self, name: str) -> ManagedProcess:
        """A handle on a process known only by its pidfile (to stop it, not to start it)."""
        return ManagedProcess(name=name, argv=[], run_dir=self.state_dir, ready=lambda: True)

    @contextmanager
    def running(self, progress: Progress = lambda _msg: None) -> Iterator[SingleBox]:
        self.start(progress)
        try:
            yield self
        finally:
            self.stop()


def pids_alive(state_dir: Path) -> dict[str, bool]:
    out = {}
    for pidfile in sorted(state_dir.glob("*.pid")):
        try:
            out[pidfile.stem] = pid_alive(int(pidfile.read_text().strip()))
        except (OSError, ValueError):
            out[pidfile.stem] = False
    return out
