"""A cluster: production boxes joined together, each with its router.

A ``ClusterNode`` is a production box (:mod:`billowin.stack.production`) that listens on
its private address and joins the others:

* Consul and Nomad agents bind to the node's private address and ``retry_join`` the
  servers; the servers expect ``len(servers)`` peers (3 for a highly available control
  plane: Raft keeps working, and keeps every write, with one of three lost);
* apps' ports are on the private interface (``network_interface``), so every node's router
  reaches every instance, and Nomad spreads a process's instances across nodes (the
  jobspec's ``spread``);
* every node runs a router (HAProxy and consul-template as host services, like the other
  agents, not as a Nomad job: the router must come up before Nomad and must keep serving
  when Nomad is down, and a host service needs no image on each node); so any node
  answers any app's name, and DNS for ``*.<domain>`` may name any or all of them;
* the registry runs on the first server, over HTTPS with its own CA, and asks for a password
  (:mod:`billowin.stack.join`); every node's engine trusts the CA and Nomad pulls with the
  password;
* the API runs on the first server, and every router sends ``billowin.<domain>`` to it.

``LocalCluster`` is the test harness: N nodes on this one machine, each in a network
namespace of its own (:mod:`billowin.stack.netns`) with its own Docker Engine, under the same
process supervisor as the single box.
"""

from __future__ import annotations

import base64
import json
import signal
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from billowin.errors import ConfigError, ServiceError
from billowin.settings import Settings
from billowin.stack.acl import Secrets
from billowin.stack.install import ensure_docker_networks
from billowin.stack.join import (
    REGISTRY_USER,
    distrust_registry,
    ensure_registry_password,
    ensure_registry_tls,
    read_join_secrets,
    trust_registry,
    write_join_secrets,
)
from billowin.stack.netns import NODE_INTERFACE, Bridge, Namespace, unmount_under
from billowin.stack.process import ManagedProcess, write_env_file, write_private
from billowin.stack.production import MANIFEST, ProductionBox, clear_stale_docker_pidfiles
from billowin.stack.single_box import Ports, Progress
from billowin.stack.tools import Toolset

# How fast Nomad's servers call a silent client down (its allocations lost, and replaced
# elsewhere): a heartbeat every 5 s at most (Nomad's default: 10 s), and Nomad's own 10 s of
# grace. 5 s of grace was too little on a loaded 2-core machine: when a node died, the leader
# took every client's heartbeats about 10 s late and called all three nodes down at once.
HEARTBEAT_TTL = "5s"
HEARTBEAT_GRACE = "10s"
# After a leader election, the new leader gives every client this long to heartbeat to it before
# calling it down. Nomad's default, 5 minutes, is for clusters of thousands of clients: when the
# node that died was the leader, its share of the apps would be missing for that long. 8 s was
# too short: a client whose heartbeat was stuck in an RPC to the dead leader (about 10 s, as an
# unplugged machine never refuses a connection) was called down while healthy.
FAILOVER_HEARTBEAT_TTL = "20s"


class ClusterNode(ProductionBox):
    """One node of a cluster: agents on ``address``, joined to ``servers`` (their addresses).

    ``bootstrap``: the first server, which makes every secret, bootstraps the ACLs and runs the
    registry and the API (``billowin install --private-address``); every other node joins with
    the join secrets (``billowin install --join``). ``server``: also a Consul and Nomad server
    (three of them make the control plane highly available). ``registry``: the cluster
    registry's ``host:port``. ``api``: this node runs the API. ``build``: Nomad schedules builds
    here (meta ``billowin.build``). ``netns``: in the test harness, the namespace every process
    runs in.
    """

    def __init__(
        self,
        tools: Toolset,
        root: Path,
        *,
        name: str,
        address: str,
        servers: list[str],
        domain: str,
        registry: str,
        api_address: str,
        server: bool = True,
        bootstrap: bool = False,
        api: bool = False,
        build: bool = False,
        interface: str = NODE_INTERFACE,
        netns: Namespace | None = None,
        api_env: dict[str, str] | None = None,
        build_docker_host: str | None = None,
        public_address: str | None = None,
        ports: Ports | None = None,
    ) -> None:
        super().__init__(
            tools,
            root,
            domain=domain,
            # The router's: where DNS points (the harness: the node's only address).
            public_address=public_address or address,
            ports=ports or Ports(router_http=80, router_https=443),
            own_docker=True,
            api_env=api_env,
        )
        self.name = name
        self.host = address
        self.servers = servers
        self.server = server or bootstrap
        self.bootstrap = bootstrap
        self.runs_api = api
        self.build = build
        self.interface = interface
        self.registry_address = registry
        self.api_address = api_address
        self.netns = netns
        # The engine builds use (the node's own unless told otherwise: a test harness builds
        # with the machine's engine, which has the language base images already).
        self.build_docker_host = build_docker_host or self.docker_host
        if netns is not None:
            self.exec_prefix = netns.enter()

    @property
    def runs_registry(self) -> bool:
        return self.registry_address.rsplit(":", 1)[0] == self.host

    # -- what clients need ------------------------------------------------------
    @property
    def settings(self) -> Settings:
        password = self.secrets.get("registry-password")
        return super().settings.model_copy(
            update={
                "registry": self.registry_address,
                "registry_ca_file": self.secrets.dir / "registry-ca.pem",
                "registry_username": REGISTRY_USER,
                "registry_password": SecretStr(password) if password else None,
            }
        )

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(
            {
                "BILLOWIN_REGISTRY": self.registry_address,
                "BILLOWIN_REGISTRY_CA_FILE": str(self.secrets.dir / "registry-ca.pem"),
                "BILLOWIN_REGISTRY_USERNAME": REGISTRY_USER,
            }
        )
        if password := self.secrets.get("registry-password"):
            env["BILLOWIN_REGISTRY_PASSWORD"] = password
        return env

    # -- configuration ------------------------------------------------------------
    def consul_config(self) -> dict[str, Any]:
        config = super().consul_config()
        config.update(
            {
                "node_name": self.name,
                "bind_addr": self.host,
                "advertise_addr": self.host,
                # The local agent for the node's own processes, the private address for the others.
                "client_addr": f"127.0.0.1 {self.host}",
                "retry_join": [s for s in self.servers if s != self.host],
                "server": self.server,
            }
        )
        if self.bootstrap:
            config["bootstrap_expect"] = 1  # later servers join the Raft it starts
        elif self.server:
            config.pop("bootstrap_expect", None)  # joins the existing Raft, never starts one
        else:
            config.pop("bootstrap_expect", None)
            config.pop("ui_config", None)
            config["acl"]["tokens"].pop("initial_management", None)
        return config

    def nomad_config(self) -> dict[str, Any]:
        config = super().nomad_config()
        rpc = [f"{s}:{self.ports.nomad_rpc}" for s in self.servers]
        config.update(
            {
                "name": self.name,
                "bind_addr": "0.0.0.0",
                "advertise": {"http": self.host, "rpc": self.host, "serf": self.host},
            }
        )
        client = dict(config["client"])
        client.update(
            {
                # Apps' ports on the private network: every node's router reaches them.
                "network_interface": self.interface,
                "servers": rpc,
                "meta": {
                    "billowin.build": "true" if self.build else "false",
                    # What a build job runs with on this node (jobspecs/build.nomad.hcl).
                    "billowin.build_settings": str(self.build_settings_file),
                },
            }
        )
        if self.build:
            # Marks the node for builds too: a build job asks for this volume.
            client["host_volume"] = {"billowin-build-cache": {"path": str(self.layout.cache)}}
        config["client"] = client
        if self.build:
            # Builds run Billowin's own build process on the node (never an app's code: that
            # runs in its build container); only Billowin's management token submits jobs.
            config["plugin"] = {**config["plugin"], "raw_exec": {"config": {"enabled": True}}}
        if self.server:
            config["server"] = {
                **config["server"],
                "bootstrap_expect": 1 if self.bootstrap else 0,
                "server_join": {
                    "retry_join": [f"{s}:{self.ports.nomad_serf}" for s in self.servers if s != self.host]
                },
                "heartbeat_grace": HEARTBEAT_GRACE,
                "min_heartbeat_ttl": HEARTBEAT_TTL,
                "failover_heartbeat_ttl": FAILOVER_HEARTBEAT_TTL,
            }
        else:
            config["server"] = {"enabled": False}
        return config

    def docker_plugin_config(self) -> dict[str, Any]:
        plugin = super().docker_plugin_config()
        plugin["auth"] = {"config": str(self.layout.etc / "docker-auth.json")}
        return plugin

    def registry_config(self) -> dict[str, Any]:
        config = super().registry_config()
        config["http"] = {
            "addr": self.registry_address,
            "tls": {
                "certificate": str(self.secrets.dir / "registry.pem"),
                "key": str(self.secrets.dir / "registry-key.pem"),
            },
        }
        config["auth"] = {
            "htpasswd": {"realm": "billowin", "path": str(self.secrets.dir / "registry.htpasswd")}
        }
        return config

    def write_configs(self) -> None:
        super().write_configs()
        password = self.secrets.get("registry-password") or ""
        auth = base64.b64encode(f"{REGISTRY_USER}:{password}".encode()).decode()
        write_private(
            self.layout.etc / "docker-auth.json",
            json.dumps({"auths": {self.registry_address: {"auth": auth}}}),
        )
        if self.build:
            write_env_file(self.build_settings_file, self.build_env())

    @property
    def build_settings_file(self) -> Path:
        return self.layout.etc / "build.env"

    def build_env(self) -> dict[str, str]:
        """The settings of a build job on this node: its engine, the registry and its
        credentials, and its own state and cache directories (no Consul or Nomad token: a
        build needs none, and its tidy-up keeps what it cannot check)."""
        env = {
            "BILLOWIN_DOCKER_HOST": self.build_docker_host,
            "DOCKER_HOST": self.build_docker_host,
            "BILLOWIN_REGISTRY": self.registry_address,
            "BILLOWIN_REGISTRY_CA_FILE": str(self.secrets.dir / "registry-ca.pem"),
            "BILLOWIN_REGISTRY_USERNAME": REGISTRY_USER,
            "BILLOWIN_STATE_DIR": str(self.root / "build-state"),
            "BILLOWIN_BUILD_CACHE_DIR": str(self.layout.cache),
            "BILLOWIN_CONSUL_ADDR": f"http://127.0.0.1:{self.ports.consul_http}",
            "BILLOWIN_NOMAD_ADDR": f"http://127.0.0.1:{self.ports.nomad_http}",
        }
        if password := self.secrets.get("registry-password"):
            env["BILLOWIN_REGISTRY_PASSWORD"] = password
        return env

    def _router_env(self) -> dict[str, str]:
        env = super()._router_env()
        env["BILLOWIN_API_BACKEND"] = f"{self.api_address}:{self.ports.api}"
        return env

    # -- lifecycle ---------------------------------------------------------------
    def start(self, progress: Progress = lambda _msg: None, *, timeout: float = 120) -> None:
        """The first server: a production box's first start (secrets, ACLs, tokens), with the
        registry's CA and password made first. A joining node: its agents and router, with the
        join secrets already under ``secrets/`` (``read_join_secrets``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.bootstrap:
            ensure_registry_tls(self.secrets, self.registry_address.rsplit(":", 1)[0])
            ensure_registry_password(self.secrets)
        elif self.secrets.get("consul-agent") is None:
            raise ConfigError(
                f"{self.name} has no join secrets in {self.secrets.dir}",
                hint="On the first server: `billowin join-secrets FILE`; copy FILE here, then "
                "`billowin install --join <first server> --join-secrets FILE …`.",
            )
        trust_registry(self.secrets.dir / "registry-ca.pem", self.registry_address)
        if self.bootstrap:
            super().start(progress, timeout=timeout)
            return
        self._write_manifest()
        try:
            self.write_configs()
            self._clear_stale_docker_pidfiles()
            self._start(self.dockerd(), progress, timeout)
            ensure_docker_networks(self.settings)
            self.write_configs()  # Nomad's host network is the apps' Docker network, now it exists
            self._start(self.consul(), progress, timeout)
            self._start(self.nomad(), progress, timeout)
            render = not (self.router_dir / "haproxy.cfg").is_file()
            if self.runs_api:
                self._start_router_and_api(progress, timeout, render=render)
            else:
                self._start_router(progress, timeout, render=render)
        except BaseException:
            self.stop()
            raise

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.host,
            "servers": self.servers,
            "registry": self.registry_address,
            "api_address": self.api_address,
            "server": self.server,
            "bootstrap": self.bootstrap,
            "api": self.runs_api,
            "build": self.build,
            "interface": self.interface,
        }

    def _write_manifest(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MANIFEST).write_text(
            json.dumps(
                {
                    "domain": self.domain,
                    "public_address": self.public_address,
                    "ports": self.ports.__dict__,
                    "cluster": self.manifest(),
                },
                indent=2,
            )
        )

    @classmethod
    def from_cluster_manifest(cls, tools: Toolset, root: Path, data: dict[str, Any]) -> ClusterNode:
        node = data["cluster"]
        return cls(
            tools,
            root,
            name=node["name"],
            address=node["address"],
            servers=list(node["servers"]),
            domain=data["domain"],
            registry=node["registry"],
            api_address=node["api_address"],
            server=node["server"],
            bootstrap=node["bootstrap"],
            api=node["api"],
            build=node["build"],
            interface=node["interface"],
            public_address=data.get("public_address"),
            ports=Ports(**data["ports"]) if "ports" in data else None,
        )

    def join_facts(self) -> dict[str, Any]:
        """What a joining node needs to know besides the secrets."""
        return {
            "domain": self.domain,
            "servers": sorted({self.host, *self.servers}),
            "registry": self.registry_address,
            "api_address": self.api_address,
        }

    # -- processes ---------------------------------------------------------------
    def dockerd(self) -> ManagedProcess:
        proc = super().dockerd()
        if self.netns is not None:
            # Alone in its namespace: the engine's own default bridge and firewall rules.
            argv = [a for a in proc.argv if a not in ("--iptables=false", "--ip-masq=false")]
            at = argv.index("--bridge")
            del argv[at : at + 2]
            proc.argv = argv
        return proc

    def _clear_stale_docker_pidfiles(self) -> None:
        if self.netns is None:
            super()._clear_stale_docker_pidfiles()  # and its default bridge, beside other engines
        else:  # alone in its namespace, the engine makes its default bridge itself
            clear_stale_docker_pidfiles(self.layout.run / "docker")

    def registry_ready(self) -> bool:
        try:
            resp = httpx.get(
                f"https://{self.registry_address}/v2/",
                verify=ssl.create_default_context(cafile=str(self.secrets.dir / "registry-ca.pem")),
                auth=(REGISTRY_USER, self.secrets.get("registry-password") or ""),
                timeout=2,
            )
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    def plan(self) -> list[ManagedProcess]:
        return [
            self.dockerd(),
            *([self.registry()] if self.runs_registry else []),
            self.consul(),
            self.nomad(),
            self.haproxy(),
            self.consul_template(),
            *([self.api()] if self.runs_api else []),
        ]


def _prefixed(progress: Progress, prefix: str) -> Progress:
    return lambda msg: progress(f"{prefix} {msg}")


def join_options(facts: dict[str, Any]) -> dict[str, Any]:
    """A joining node's ``ClusterNode`` options from the facts of its join secrets."""
    return {
        "servers": list(facts["servers"]),
        "domain": facts["domain"],
        "registry": facts["registry"],
        "api_address": facts["api_address"],
        "server": bool(facts["server"]),
    }


class LocalCluster:
    """``size`` nodes on this machine, all servers (Raft over three), each in its own network
    namespace with its own Docker Engine, Consul, Nomad and router; the first also runs the
    registry and the API. ``stop()`` leaves nothing behind: processes, mounts, namespaces,
    veths, the bridge, firewall rules and the registry's trust file."""

    def __init__(
        self,
        tools: Toolset,
        root: Path,
        *,
        size: int = 3,
        domain: str = "cluster.test",
        api_env: dict[str, str] | None = None,
        build_docker_host: str | None = None,
    ) -> None:
        self.build_docker_host = build_docker_host
        self.tools = tools
        self.root = root
        self.size = size
        self.domain = domain
        self.api_env = api_env or {}
        self.bridge = Bridge.new(root.name[-4:].lower().replace("_", "x") or "cl")
        self.nodes: list[ClusterNode] = []

    @property
    def first(self) -> ClusterNode:
        return self.nodes[0]

    @property
    def settings(self) -> Settings:
        """How a test (on the host) talks to the cluster: through the first node."""
        return self.first.settings

    @property
    def api_url(self) -> str:
        return f"http://{self.first.host}:{self.first.ports.api}"

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self, progress: Progress = lambda _msg: None, *, timeout: float = 180) -> None:
        try:
            self._start(progress, timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, progress: Progress, timeout: float) -> None:
        """As an admin makes a cluster: the first server installed alone, then each other node
        joined with the join secrets the first one writes (``billowin join-secrets``)."""
        namespaces = self.bridge.up(self.size)
        addresses = [ns.address for ns in namespaces]
        progress(f"network: {self.bridge.name} {self.bridge.subnet}, nodes {', '.join(addresses)}")
        first = ClusterNode(
            self.tools,
            self.root / "n1",
            name="n1",
            address=addresses[0],
            servers=[addresses[0]],
            domain=self.domain,
            registry=f"{addresses[0]}:5000",
            api_address=addresses[0],
            bootstrap=True,
            api=True,
            build=True,
            netns=namespaces[0],
            api_env=self.api_env,
            build_docker_host=self.build_docker_host,
        )
        self.nodes.append(first)
        first.start(_prefixed(progress, "n1"), timeout=timeout)
        bundle = self.root / "join-secrets.json"
        write_join_secrets(first.secrets, first.join_facts(), bundle, server=True)
        for i, ns in enumerate(namespaces[1:], start=2):
            node = ClusterNode(
                self.tools,
                self.root / f"n{i}",
                name=f"n{i}",
                address=ns.address,
                **join_options(read_join_secrets(bundle, Secrets(self.root / f"n{i}" / "secrets"))),
                netns=ns,
            )
            self.nodes.append(node)
            node.start(_prefixed(progress, node.name), timeout=timeout)
        bundle.unlink()
        self.wait_nodes_ready(self.size, timeout)

    def nomad_nodes(self) -> list[dict[str, Any]]:
        token = self.first.secrets.get("nomad-bootstrap") or ""
        for node in self.nodes:
            try:
                resp = httpx.get(
                    f"http://{node.host}:{node.ports.nomad_http}/v1/nodes",
                    headers={"X-Nomad-Token": token},
                    timeout=3,
                )
                if resp.status_code == 200:
                    return list(resp.json())
            except httpx.HTTPError:
                continue
        return []

    def wait_nodes_ready(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = self.nomad_nodes()
            ready = [
                n
                for n in seen
                if n.get("Status") == "ready" and (n.get("Drivers") or {}).get("docker", {}).get("Healthy")
            ]
            if len(ready) >= count:
                return
            time.sleep(0.5)
        states = [(n.get("Name"), n.get("Status")) for n in seen]
        raise ServiceError("nomad", f"{count} nodes not ready after {timeout:.0f}s: {states}")

    def leaders(self) -> dict[str, str]:
        """The node each Raft leader (Consul's, Nomad's) runs on, as the first node sees it."""
        by_address = {n.host: n.name for n in self.nodes}
        first = self.first
        found = {}
        for system, port in (("consul", first.ports.consul_http), ("nomad", first.ports.nomad_http)):
            try:
                leader = httpx.get(f"http://{first.host}:{port}/v1/status/leader", timeout=3).json()
            except (httpx.HTTPError, ValueError):
                leader = ""
            found[system] = by_address.get(str(leader).rsplit(":", 1)[0], "")
        return found

    def kill(self, name: str) -> list[int]:
        """Power off one node: every process of it killed at once, and its cable pulled."""
        node = self.node(name)
        assert node.netns is not None
        node.netns.unplug()
        pids = node.netns.kill_all()
        for proc in node.processes:
            proc.reap()
        node.processes.clear()
        return pids

    def stop(self) -> None:
        """Stop each kind of process on every node at once, newest kind first. Agents get
        SIGTERM, which shuts them down without leaving the cluster: all servers leaving at once
        would wait for a quorum that is going away."""
        for name in ("api", "consul-template", "haproxy", "nomad", "consul", "registry", "dockerd"):
            procs = []
            for node in self.nodes:
                proc = next((p for p in node.processes if p.name == name), None) or node._pidfile(name)
                if name in ("nomad", "consul"):
                    proc.stop_signal = signal.SIGTERM
                procs.append(proc)
            with ThreadPoolExecutor(len(procs) or 1) as pool:
                list(pool.map(lambda p: p.stop(), procs))
        for node in self.nodes:
            node.processes.clear()
        self.bridge.down()  # kills whatever a stop left in the namespaces
        for node in self.nodes:
            unmount_under(node.root)
        if self.nodes:
            distrust_registry(self.first.registry_address)

    @contextmanager
    def running(self, progress: Progress = lambda _msg: None) -> Iterator[LocalCluster]:
        self.start(progress)
        try:
            yield self
        finally:
            self.stop()
