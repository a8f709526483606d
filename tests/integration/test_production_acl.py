"""A production box is locked down: Consul and Nomad refuse whoever has no token, an app's
container cannot reach them at all, each component's token does its own job only, the
secrets on disk are root's alone, and apps are reached only through the router.

One box for the module, with one app live (with config vars), put there through the API.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import socket
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from billowin.stack.production import ProductionBox
from billowin.stack.single_box import SingleBox
from billowin.system import System

from .conftest import wait_for
from .production import (
    DOMAIN,
    api_client,
    live,
    new_box,
    page,
    push_image,
    put_app,
    router_client,
    running_tidily,
)

GREETING = "bonjour"


@dataclass
class Locked:
    box: ProductionBox
    token: str  # an admin API token
    app: str  # live, with the config var GREETING (its config version 1)
    image: str
    work: Path

    def consul(self, token: str | None = None) -> httpx.Client:
        headers = {"X-Consul-Token": token} if token else {}
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.box.ports.consul_http}", headers=headers, timeout=10
        )

    def nomad(self, token: str | None = None) -> httpx.Client:
        headers = {"X-Nomad-Token": token} if token else {}
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.box.ports.nomad_http}", headers=headers, timeout=10
        )

    def secret(self, name: str) -> str:
        value = self.box.secrets.get(name)
        assert value, f"no {name} token in {self.box.layout.secrets}"
        return value


@pytest.fixture(scope="module")
def locked(stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Locked]:
    box = new_box(tmp_path_factory.mktemp("acl"))
    work = Path(tmp_path_factory.mktemp("acl-images"))
    app = f"l{uuid.uuid4().hex[:8]}"
    with running_tidily(box):
        token = System(box.settings).tokens.create("acl admin")
        image = put_app(box, stack.settings, base_image, work, token, app, config={"GREETING": GREETING})
        yield Locked(box, token, app, image, work)


def minimal_job(job_id: str, image: str) -> dict[str, Any]:
    return {
        "Job": {
            "ID": job_id,
            "Name": job_id,
            "Type": "batch",
            "Datacenters": ["*"],
            "TaskGroups": [
                {
                    "Name": "probe",
                    "Count": 1,
                    "Tasks": [
                        {
                            "Name": "probe",
                            "Driver": "docker",
                            "Config": {"image": image, "args": ["true"]},
                            "Resources": {"CPU": 100, "MemoryMB": 64},
                        }
                    ],
                }
            ],
        }
    }


# -- 1. from the host, without a token --------------------------------------------------
@pytest.mark.parametrize("who", ["anonymous", "a made-up token"])
def test_consul_and_nomad_refuse_callers_without_a_token(locked: Locked, who: str) -> None:
    forged = str(uuid.uuid4()) if who != "anonymous" else None
    boot_consul, boot_nomad = locked.secret("consul-bootstrap"), locked.secret("nomad-bootstrap")
    job_id = f"intruder-{uuid.uuid4().hex[:6]}"
    key = f"billowin/tokens/{uuid.uuid4().hex[:8]}"
    variable = f"/v1/var/billowin/config/{locked.app}/1"
    with locked.consul(forged) as consul, locked.nomad(forged) as nomad:
        read = consul.get("/v1/kv/billowin/", params={"recurse": "true"})
        assert read.status_code == 403, (read.status_code, read.text)
        listed = consul.get("/v1/kv/", params={"keys": "true"})
        assert listed.status_code == 403, (listed.status_code, listed.text)
        written = consul.put(f"/v1/kv/{key}", content=b"bw_stolen")
        assert written.status_code == 403, (written.status_code, written.text)
        registered = nomad.post("/v1/jobs", json=minimal_job(job_id, locked.image))
        assert registered.status_code == 403, (registered.status_code, registered.text)
        config = nomad.get(variable)
        assert config.status_code == 403, (config.status_code, config.text)
        assert GREETING not in config.text
        assert GREETING.encode() not in read.content

    # The refusals hid something real, and nothing was written.
    with locked.consul(boot_consul) as consul, locked.nomad(boot_nomad) as nomad:
        keys = consul.get("/v1/kv/billowin/", params={"keys": "true"})
        assert keys.status_code == 200 and f"billowin/apps/{locked.app}/app" in keys.json(), keys.text
        assert consul.get(f"/v1/kv/{key}").status_code == 404
        valid = nomad.post("/v1/validate/job", json=minimal_job(job_id, locked.image))
        assert valid.status_code == 200 and not valid.json()["Error"], valid.text
        assert not valid.json()["ValidationErrors"], valid.text
        assert nomad.get(f"/v1/job/{job_id}").status_code == 404
        assert job_id not in {j["ID"] for j in nomad.get("/v1/jobs").json()}
        stored = nomad.get(variable)
        assert stored.status_code == 200 and stored.json()["Items"] == {"GREETING": GREETING}, stored.text


# -- 2. from inside an app's container ---------------------------------------------------
PROBE_TIMEOUT = 3  # seconds per connection attempt
MAX_COMMAND = 4000  # `run` takes commands of up to 4096 characters

# Run by the container's bash (the base image is Debian minbase plus busybox, whose applets have
# no links: `busybox ip`). Each probe opens a TCP connection with bash's /dev/tcp, says
# "connected" once it is open, then sends one HTTP request and prints the status line.
# One PROBE line per (address, service).
PROBE_SCRIPT = r"""
set -u
services='@SERVICES@'
echo "ROUTES $(busybox ip route | tr '\n' ';')"
echo "ADDRS $(busybox ip -o addr | tr -s ' ' | tr '\n' ';')"
gw=$(busybox ip route | awk '$1 == "default" { print $3; exit }')
hdi=$(getent ahosts host.docker.internal | awk '{ print $1; exit }')
echo "GATEWAY ${gw:-none}"
echo "HOST_DOCKER_INTERNAL ${hdi:-unresolved}"
probe() {
  out=$(timeout @TIMEOUT@ bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    echo connected
    printf "GET %s HTTP/1.0\r\nHost: billowin\r\n\r\n" "$3" >&3
    IFS= read -r line <&3 && echo "HTTP $line"
  ' probe "$2" "$4" "$5" 2>&1 </dev/null)
  rc=$?
  printf 'PROBE\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$rc" "$(printf %s "$out" | tr '\n\t\r' '|  ')"
}
probe_all() {
  for s in $services; do
    IFS=, read -r name port path <<EOS
$s
EOS
    probe "$1" "$2" "$name" "$port" "$path" &
  done
  wait
}
[ "@FIRST@" = yes ] && [ -n "$gw" ] && probe_all gateway "$gw"
[ "@FIRST@" = yes ] && [ -n "$hdi" ] && probe_all host.docker.internal "$hdi"
[ "@FIRST@" = yes ] && probe_all "container loopback" 127.0.0.1
for t in @HOSTS@; do probe_all "host ${t%%=*}" "${t#*=}"; done
echo PROBES-DONE
"""


@dataclass(frozen=True)
class Attempt:
    where: str  # gateway, host.docker.internal, container loopback, host <interface>
    address: str
    service: str
    exit_code: str
    output: str

    @property
    def status(self) -> int | None:
        """The HTTP status it got, if it reached anything."""
        for part in self.output.split("|"):
            if part.startswith("HTTP HTTP/"):
                return int(part.split()[2])
        return None

    @property
    def connected(self) -> bool:
        return "connected" in self.output.split("|")

    @property
    def outcome(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        if self.connected:
            return "connected, no HTTP answer"
        if self.exit_code == "124":
            return "cannot connect: timed out"
        reason = self.output.rsplit(": ", 1)[-1] if ": " in self.output else self.output
        return f"cannot connect: {reason.strip() or 'exit ' + self.exit_code}"


def host_addresses() -> list[tuple[str, str]]:
    """(interface, address) for every address of every interface of the host, as `ip -j addr`
    shows them; a link-local IPv6 address is tried through the container's own interface."""
    found = []
    for link in json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, check=True).stdout):
        for info in link.get("addr_info", []):
            address = info["local"]
            if ipaddress.ip_address(address).is_link_local:
                address += "%eth0"
            found.append((link["ifname"], address))
    return found


def probe_commands(box: ProductionBox, control_port: int) -> list[str]:
    """The probe as commands for the container's `sh`, each short enough for `run`."""
    services = " ".join(
        [
            f"consul,{box.ports.consul_http},/v1/kv/billowin/?recurse",
            f"nomad,{box.ports.nomad_http},/v1/jobs",
            f"registry,{box.ports.registry},/v2/_catalog",
            f"control,{control_port},/",
        ]
    )
    hosts = [f"{iface}={address}" for iface, address in host_addresses()]
    commands: list[str] = []
    while hosts or not commands:
        script = (
            PROBE_SCRIPT.replace("@SERVICES@", services)
            .replace("@TIMEOUT@", str(PROBE_TIMEOUT))
            .replace("@FIRST@", "no" if commands else "yes")
        )
        chunk: list[str] = []
        while hosts and len(script) + len(" ".join([*chunk, hosts[0]])) + 40 < MAX_COMMAND:
            chunk.append(hosts.pop(0))
        commands.append(
            "exec bash -s <<'BILLOWIN_PROBE'\n"
            + script.replace("@HOSTS@", " ".join(chunk))
            + "BILLOWIN_PROBE\n"
        )
    return commands


def docker(box: ProductionBox, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker CLI on the box's own engine."""
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
        env={**os.environ, "DOCKER_HOST": box.docker_host},
    )


def web_containers(box: ProductionBox, app: str) -> list[str]:
    labels = ["--filter", f"label=billowin.app={app}", "--filter", "label=billowin.process=web"]
    found: list[str] = wait_for(
        lambda: docker(box, "ps", "--quiet", *labels).stdout.split(), 30, f"a running web container of {app}"
    )
    return found


def in_web_container(box: ProductionBox, app: str, command: str) -> tuple[int, str]:
    proc = docker(box, "exec", web_containers(box, app)[0], "sh", "-c", command, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def in_one_off_run(box: ProductionBox, token: str, app: str, command: str) -> tuple[int, str]:
    """`billowin run`: the command in a one-off container of the app's release, through the API."""
    lines, code = [], None
    body = {"command": command, "timeout": 300}
    with (
        api_client(box, token) as api,
        api.stream("POST", f"/apps/{app}/runs", json=body, timeout=330) as resp,
    ):
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            event = json.loads(line)
            if "exit_code" in event:
                code = event["exit_code"]
            else:
                lines.append(event["text"])
    assert code is not None, lines
    return code, "\n".join(lines)


RUNNERS: dict[str, Callable[[Locked, str], tuple[int, str]]] = {
    "a running web instance (docker exec)": lambda locked, cmd: in_web_container(locked.box, locked.app, cmd),
    "a one-off run (the API)": lambda locked, cmd: in_one_off_run(locked.box, locked.token, locked.app, cmd),
}


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"control")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def control(locked: Locked) -> Iterator[tuple[str, int]]:
    """A listener on the host's side of the apps' network (its gateway address): what a service
    bound to more than the loopback would look like to an app. The probe must reach it, so a
    "cannot connect" elsewhere means nothing listens there, not that the probe cannot connect."""
    network = json.loads(docker(locked.box, "network", "inspect", locked.box.settings.app_network).stdout)
    gateway = network[0]["IPAM"]["Config"][0]["Gateway"]
    server = http.server.ThreadingHTTPServer((gateway, 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield gateway, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("inside", list(RUNNERS))
def test_an_app_container_cannot_reach_consul_nomad_or_the_registry(
    locked: Locked, inside: str, control: tuple[str, int]
) -> None:
    gateway, control_port = control
    attempts: list[Attempt] = []
    seen: dict[str, str] = {}
    for command in probe_commands(locked.box, control_port):
        code, output = RUNNERS[inside](locked, command)
        assert code == 0 and "PROBES-DONE" in output, (code, output[-2000:])
        for line in output.splitlines():
            if line.startswith("PROBE\t"):
                attempts.append(Attempt(*line.split("\t")[1:6]))
            elif line.split(" ", 1)[0] in {"ROUTES", "ADDRS", "GATEWAY", "HOST_DOCKER_INTERNAL"}:
                name, _, value = line.partition(" ")
                seen.setdefault(name, value)
    report = "\n".join(
        [f"{k}: {v}" for k, v in seen.items()]
        + [f"{a.service:8} {a.where:28} {a.address:32} {a.outcome}" for a in attempts]
    )
    print(f"\n-- from inside {inside} --\n{report}")

    assert seen["GATEWAY"] == gateway, report
    tried = {a.where for a in attempts}
    assert {"gateway", "container loopback"} <= tried, report
    assert any(w.startswith("host ") for w in tried), report
    if seen["HOST_DOCKER_INTERNAL"] != "unresolved":
        assert "host.docker.internal" in tried, report
    assert {a.service for a in attempts} == {"consul", "nomad", "registry", "control"}, report
    # The probe does reach the host: the listener on the gateway's address answers.
    assert [a.status for a in attempts if a.service == "control" and a.where == "gateway"] == [200], report
    attempts = [a for a in attempts if a.service != "control"]
    reached = [a for a in attempts if a.connected and a.status != 403]
    assert not reached, "reached from an app container:\n" + "\n".join(
        f"{a.service} at {a.address} ({a.where}): {a.outcome}" for a in reached
    )
    assert not [a for a in attempts if a.status is not None and 200 <= a.status < 300], report


def test_an_app_container_holds_none_of_the_box_s_tokens(locked: Locked) -> None:
    code, env = in_web_container(locked.box, locked.app, "env")
    assert code == 0 and f"BILLOWIN_APP={locked.app}" in env, env
    for path in sorted(locked.box.layout.secrets.iterdir()):
        value = path.read_text().strip()
        assert value not in env, f"{path.name} is in the app's environment"


# -- 3. Billowin itself works with its scoped tokens ------------------------------------
def test_deploys_config_changes_and_runs_work_with_the_scoped_tokens(
    locked: Locked, stack: SingleBox, base_image: str
) -> None:
    box = locked.box
    for component, boot in (("consul-api", "consul-bootstrap"), ("nomad-api", "nomad-bootstrap")):
        assert locked.secret(component) != locked.secret(boot), component
    with locked.consul(locked.secret("consul-api")) as consul:
        me = consul.get("/v1/acl/token/self").json()
        assert [p["Name"] for p in me["Policies"]] == ["billowin-api"], me
    with (
        locked.nomad(locked.secret("nomad-api")) as nomad,
        locked.nomad(locked.secret("nomad-bootstrap")) as admin,
    ):
        assert (
            nomad.get("/v1/acl/token/self").json()["AccessorID"]
            != admin.get("/v1/acl/token/self").json()["AccessorID"]
        )

    # The running API holds its own tokens, never a bootstrap token.
    api_proc = next(p for p in box.processes if p.name == "api")
    pid = api_proc.pid()
    assert pid is not None
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
    )
    assert environ["BILLOWIN_CONSUL_TOKEN"] == locked.secret("consul-api")
    assert environ["BILLOWIN_NOMAD_TOKEN"] == locked.secret("nomad-api")
    for boot in ("consul-bootstrap", "nomad-bootstrap"):
        assert locked.secret(boot) not in environ.values(), f"the API runs with the {boot} token"

    # A deploy, a config change and a run, through the API as a user does them.
    app = f"e{uuid.uuid4().hex[:8]}"
    image = push_image(stack.settings, base_image, box, app, "v1", locked.work / app)
    with api_client(box, locked.token) as api, router_client(box) as router:
        created = api.post("/apps", json={"name": app, "repository": "/nonexistent"})
        assert created.status_code == 201, created.text
        deployed = api.post(f"/apps/{app}/deploys", json={"image": image})
        assert deployed.status_code == 202, deployed.text
        live(api, app, deployed.json())
        wait_for(lambda: page(router, f"{app}.{DOMAIN}").startswith("hello release=v1"), 30, "v1 served")
        changed = api.patch(f"/apps/{app}/config", json={"set": {"GREETING": "hola"}})
        assert changed.status_code == 202, changed.text
        live(api, app, changed.json()["job"])
        wait_for(lambda: page(router, f"{app}.{DOMAIN}").startswith("hola release=v2"), 30, "v2 served")
        assert api.get(f"/apps/{app}/config", params={"reveal": "true"}).json()["values"] == {
            "GREETING": "hola"
        }
        releases = api.get(f"/apps/{app}/releases").json()
        assert {(r["number"], r["config_version"], r["status"]) for r in releases} == {
            (1, 0, "live"),
            (2, 1, "live"),
        }, releases
    code, output = in_one_off_run(box, locked.token, app, 'echo "greeting=$GREETING"')
    assert (code, output.strip()) == (0, "greeting=hola")


ROUTER_READS = ("billowin/certs/shop.example.com/chain", "billowin/certs/_account", "billowin/router/x")


def test_each_component_token_does_its_own_job_only(locked: Locked) -> None:
    boot = locked.secret("consul-bootstrap")
    written = []
    with locked.consul(locked.secret("consul-router")) as router:
        services = router.get("/v1/catalog/services")  # what consul-template reads
        assert services.status_code == 200 and locked.app in services.json(), services.text
        for key in ("billowin/apps/intruder", "billowin/tokens/intruder"):
            resp = router.put(f"/v1/kv/{key}", content=b"x")
            assert resp.status_code == 403, (key, resp.status_code, resp.text)
            written.append(key)
        read = router.get("/v1/kv/billowin/", params={"recurse": "true"})
        assert read.status_code == 403 or all(
            e["Key"].startswith(("billowin/certs/", "billowin/router/")) for e in read.json()
        ), (read.status_code, read.text)
        # The certificates it serves, and the per-app HTTPS switches; never the ACME account key.
        with locked.consul(boot) as admin:
            for key in ROUTER_READS:
                assert admin.put(f"/v1/kv/{key}", content=b"x").status_code == 200
        for key in ("billowin/certs/shop.example.com/chain", "billowin/router/x"):
            assert router.get(f"/v1/kv/{key}").status_code == 200, key
        assert router.get("/v1/kv/billowin/certs/_account").status_code == 403
        listed = router.get("/v1/kv/billowin/certs/", params={"recurse": "true"})
        assert listed.status_code == 200 and "shop.example.com/chain" in listed.text, listed.text
        assert "_account" not in listed.text, listed.text
        assert router.put("/v1/kv/billowin/certs/shop.example.com/chain", content=b"y").status_code == 403
        with locked.consul(boot) as admin:
            for key in ROUTER_READS:
                admin.delete(f"/v1/kv/{key}")
    with locked.consul(locked.secret("consul-api")) as api:
        own = api.get(f"/v1/kv/billowin/apps/{locked.app}/app")
        assert own.status_code == 200, own.text  # the token works, inside billowin/
        for key in ("outside/x", "billowin", "billowinx/x", "vault/core/x"):
            resp = api.put(f"/v1/kv/{key}", content=b"x")
            assert resp.status_code == 403, (key, resp.status_code, resp.text)
            written.append(key)
        for path in ("/v1/acl/tokens", "/v1/acl/policies"):
            resp = api.get(path)
            assert resp.status_code == 403, (path, resp.status_code, resp.text)
    with locked.consul(boot) as admin:
        for key in written:
            assert admin.get(f"/v1/kv/{key}").status_code == 404, key

    job_id = f"intruder-{uuid.uuid4().hex[:6]}"
    with locked.nomad(locked.secret("nomad-router")) as router:
        jobs = router.get("/v1/jobs")  # the reload's cross-check reads running apps
        assert jobs.status_code == 200 and locked.app in {j["ID"] for j in jobs.json()}, jobs.text
        resp = router.post("/v1/jobs", json=minimal_job(job_id, locked.image))
        assert resp.status_code == 403, (resp.status_code, resp.text)
        resp = router.get(f"/v1/var/billowin/config/{locked.app}/1")
        assert resp.status_code == 403, (resp.status_code, resp.text)
        resp = router.post(f"/v1/job/{locked.app}/scale", json={"Count": 1, "Target": {"Group": "web"}})
        assert resp.status_code == 403, (resp.status_code, resp.text)
    with locked.nomad(locked.secret("nomad-bootstrap")) as admin:
        assert admin.get(f"/v1/job/{job_id}").status_code == 404


# -- 4. secrets on disk --------------------------------------------------------------------
TOKEN_FILES = ("consul.json", "nomad.json", "consul-template.hcl", "api.env", "router.env")


def test_secrets_and_files_holding_tokens_are_readable_by_root_only(locked: Locked) -> None:
    layout = locked.box.layout
    mode = stat.S_IMODE(layout.secrets.stat().st_mode)
    assert mode == 0o700, oct(mode)
    files = sorted(p for p in layout.secrets.rglob("*"))
    names = {p.name for p in files}
    assert {"consul-bootstrap.token", "nomad-bootstrap.token", "consul-api.token", "nomad-api.token"} <= names
    assert {"consul-router.token", "nomad-router.token", "consul-gossip.key", "nomad-gossip.key"} <= names
    for path in files:
        assert path.is_file(), f"{path} is not a plain file"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))

    for name in TOKEN_FILES:
        path = layout.etc / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    # Whatever else under etc/ holds a secret is private too.
    values = {p.read_text().strip() for p in files}
    for path in sorted(p for p in layout.etc.rglob("*") if p.is_file()):
        if any(value in path.read_text() for value in values):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    assert locked.secret("consul-api") in (layout.etc / "api.env").read_text()
    assert locked.secret("consul-router") in (layout.etc / "consul-template.hcl").read_text()


# -- 5. apps are reached through the router only -------------------------------------------
def test_app_ports_listen_on_the_loopback_only(locked: Locked) -> None:
    box, app = locked.box, locked.app
    with locked.nomad(locked.secret("nomad-bootstrap")) as nomad:
        allocs = [
            a
            for a in nomad.get(f"/v1/job/{app}/allocations").json()
            if a["ClientStatus"] == "running" and a["DesiredStatus"] == "run"
        ]
        assert allocs, f"{app} has no running allocation"
        ports = []
        for summary in allocs:
            alloc = nomad.get(f"/v1/allocation/{summary['ID']}").json()
            ports += alloc["AllocatedResources"]["Shared"]["Ports"]
    assert ports and all(p["HostIP"] == "127.0.0.1" for p in ports), ports
    with locked.consul(locked.secret("consul-bootstrap")) as consul:
        instances = consul.get(f"/v1/catalog/service/{app}").json()
    assert instances and all(i["ServiceAddress"] == "127.0.0.1" for i in instances), instances
    assert {i["ServicePort"] for i in instances} <= {p["Value"] for p in ports}, (instances, ports)

    for container in json.loads(docker(box, "inspect", *web_containers(box, app)).stdout):
        bindings = [b for bs in container["NetworkSettings"]["Ports"].values() for b in bs or []]
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings

    # What a user sees: the app answers on the loopback and through the router, nowhere else.
    with router_client(box) as router:
        assert page(router, f"{app}.{DOMAIN}").startswith(GREETING)
    others = [
        (iface, a) for iface, a in host_addresses() if not ipaddress.ip_address(a.split("%")[0]).is_loopback
    ]
    assert others, "the host has no address but the loopback"
    for port in {p["Value"] for p in ports}:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text.startswith(GREETING)
        for iface, address in others:
            scoped = address.replace("%eth0", f"%{iface}")
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                try:  # an interface of another test's engine may go away meanwhile
                    sock.connect(socket.getaddrinfo(scoped, port, family, socket.SOCK_STREAM)[0][4])
                except OSError:
                    continue
            raise AssertionError(f"{app}'s port {port} answers on {address} ({iface})")
