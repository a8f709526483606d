"""Router figures on the main bench box: ``router_scale`` and ``router_reloads``.

The router picks an app's backend with one map lookup (``routes.map``, written by the reload
step from the render's ``# route`` lines) and resolves each app's instances from Consul's DNS
(``server-template``), so only an app or a domain coming or going should reload HAProxy.

- ``router_scale``: requests/s, p50/p99 and HAProxy's CPU per request through the box's real
  router with 1, 100 and 1,000 routed apps, wrk at the last app's name. The apps are cheap:
  services registered straight with the box's Consul agent (as Nomad would, as
  ``tests/integration/test_https.py``'s ``echo_instance`` does), every one at the same fast
  backend (Debian's nginx answering a small static body, keep-alive). Same-run baselines: the
  same HAProxy binary as a plain reverse proxy (one frontend, one backend) to that backend, and
  nginx with one ``server`` block per app (Dokku's layout) for the same number of apps.
- ``router_reloads``: HAProxy reloads (the reload step's "and reloaded HAProxy" lines in
  ``consul-template.log``) while 10 small apps are first deployed, then all get a new image
  (blue/green rollouts), then are each scaled to 3 instances and back to 1 with Nomad's API;
  the router quiet (no configuration change, no reload, for 3 s) before each phase.

Both leave the box as they found it: services deregistered, apps destroyed, routes gone.
Needs Debian's ``nginx`` package (``apt-get install -y nginx``); without it ``router_scale``
fails and says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench.figures import api, hello_image, median_run, serves, wrk
from billowin.adapters.haproxy import show_info
from billowin.apps.store import App
from billowin.errors import InvalidInput
from billowin.release.jobspec import Process
from billowin.stack.process import free_port
from billowin.stack.single_box import SingleBox
from billowin.system import System

console = Console(stderr=True)
TICK = os.sysconf("SC_CLK_TCK")
RELOADED = "and reloaded HAProxy"  # what billowin/router/reload.py logs after each real reload
RENDERED = "(runner) rendered"  # consul-template: the output changed, the reload step runs
BODY = "billowin bench backend\n"  # what the shared backend answers
NGINX_MISSING = (
    "router_scale needs Debian's nginx (the shared fast backend and the Dokku-layout baseline): "
    "`apt-get install -y nginx`, or put an nginx binary on PATH"
)
WRK_THREADS, WRK_CONNECTIONS = 1, 16


# -- measuring ---------------------------------------------------------------------------------
def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime of each process (all its threads), in seconds; a process gone is left out."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings, by the processes present at both."""
    return sum(after[pid] - before[pid] for pid in after if pid in before)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def measured(
    url: str, host: str, seconds: int, pids: Callable[[], list[int]], others: dict[str, int] | None = None
) -> dict[str, Any]:
    """One wrk run, and the CPU the proxy's processes (``pids``, and any ``others``) spent per request."""
    others = others or {}
    procs = pids()
    before, before_others = cpu_seconds(procs), cpu_seconds(list(others.values()))
    run = wrk(url, host, seconds, threads=WRK_THREADS, connections=WRK_CONNECTIONS)
    after, after_others = cpu_seconds(pids()), cpu_seconds(list(others.values()))
    requests = run["requests"] or 1
    run["cpu_us_per_request"] = round(spent(before, after) * 1e6 / requests, 1)
    for name, pid in others.items():
        used = after_others.get(pid, 0.0) - before_others.get(pid, 0.0)
        run[f"{name}_cpu_us_per_request"] = round(used * 1e6 / requests, 1)
    run["processes"] = len(procs)
    return run


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


def answers(url: str, host: str) -> bool:
    try:
        resp = httpx.get(url, headers={"Host": host}, timeout=5)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.text == BODY


# -- the box's router --------------------------------------------------------------------------
def _log(box: SingleBox) -> str:
    log = box.state_dir / "consul-template.log"
    return log.read_text(errors="replace") if log.exists() else ""


def reloads(box: SingleBox) -> int:
    """How often the reload step has reloaded HAProxy (it says so in consul-template's log)."""
    return _log(box).count(RELOADED)


def renders(box: SingleBox) -> int:
    """How often consul-template rendered a changed configuration (and so ran the reload step)."""
    return _log(box).count(RENDERED)


def router_quiet(box: SingleBox, quiet_for: float = 3.0, timeout: float = 300) -> None:
    """Until the live configuration and the reload count have not changed for ``quiet_for`` s."""
    live = box.router_dir / "haproxy.cfg"
    state, since = (live.read_bytes(), reloads(box)), time.monotonic()

    def settled() -> bool:
        nonlocal state, since
        if (now := (live.read_bytes(), reloads(box))) != state:
            state, since = now, time.monotonic()
        return time.monotonic() - since >= quiet_for

    wait(settled, timeout, "the router to settle")


def haproxy_master(box: SingleBox) -> int:
    return int((box.router_dir / "haproxy.pid").read_text().split()[0])


def haproxy_workers(box: SingleBox) -> list[int]:
    """The box's HAProxy workers: the master's children (an older one lingers after a reload)."""
    return children(haproxy_master(box))


def one_worker(box: SingleBox, timeout: float = 40) -> int:
    """Wait (at most ``hard-stop-after`` and a bit) for older workers to finish; how many are left."""
    with contextlib.suppress(TimeoutError):
        wait(lambda: len(haproxy_workers(box)) == 1, timeout, "the older HAProxy workers to exit")
    return len(haproxy_workers(box))


def process_pid(box: SingleBox, name: str) -> int:
    pid = next(p for p in box.processes if p.name == name).pid()
    if pid is None:
        raise RuntimeError(f"{name} is not running")
    return pid


def routed_hosts(box: SingleBox, prefix: str) -> int:
    """How many of the hosts in the router's ``routes.map`` start with ``prefix``."""
    try:
        lines = (box.router_dir / "routes.map").read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if line.startswith(prefix))


def register(box: SingleBox, names: list[str], port: int) -> None:
    """Each name as an app's instance with the box's Consul agent, as Nomad registers one."""
    with httpx.Client(base_url=box.settings.consul_addr, timeout=10) as consul:
        for name in names:
            consul.put(
                "/v1/agent/service/register",
                json={
                    "ID": f"{name}-bench",
                    "Name": name,
                    "Address": "127.0.0.1",
                    "Port": port,
                    "Tags": ["billowin.web", f"billowin.app={name}"],
                },
            ).raise_for_status()


def deregister(box: SingleBox, names: list[str], timeout: float = 120) -> list[str]:
    """Deregister each name's instance, retrying while Consul refuses (429); those left over."""
    left = list(names)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        with httpx.Client(base_url=box.settings.consul_addr, timeout=10) as consul:
            for name in list(left):
                with contextlib.suppress(httpx.HTTPError):
                    status = consul.put(f"/v1/agent/service/deregister/{name}-bench").status_code
                    if status < 400 or status == 404:  # 404: never registered (a failed register)
                        left.remove(name)
        if left:
            time.sleep(1)
    return left


# -- the backend and the baselines -------------------------------------------------------------
def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise RuntimeError(NGINX_MISSING)
    return found


NGINX_CONF = """\
{user}daemon off;
worker_processes {workers};
pid {run_dir}/nginx.pid;
error_log {run_dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {run_dir}/client_body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
{http}}}
"""


def _nginx_conf(run_dir: Path, workers: int, http: str) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read nothing but their config
    return NGINX_CONF.format(user=user, workers=workers, run_dir=run_dir, http=http)


@contextlib.contextmanager
def nginx(binary: str, run_dir: Path, workers: int, http: str, probe: tuple[str, str]) -> Iterator[int]:
    """An nginx (master and ``workers``) on the ``http`` block given, until the block ends; its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(_nginx_conf(run_dir, workers, http))
    argv = [binary, "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log")]
    with (run_dir / "stderr.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait(lambda: proc.poll() is None and answers(*probe), 60, f"nginx in {run_dir}")
        except TimeoutError:
            raise RuntimeError(
                f"nginx in {run_dir} did not serve: {(run_dir / 'error.log').read_text()[-1500:]}"
            ) from None
        yield proc.pid
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


BACKEND_SERVER = """\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
"""

# Dokku's layout: one upstream and one server block per app.
DOKKU_DEFAULT = """\
    server_names_hash_max_size 8192;
    server_names_hash_bucket_size 128;
    server {{
        listen 127.0.0.1:{port} default_server backlog=4096;
        return 404;
    }}
"""
DOKKU_APP = """\
    upstream {app}-5000 {{
        server 127.0.0.1:{backend};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name {app}.{domain};
        location / {{
            proxy_pass http://{app}-5000;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""


def backend_http(port: int) -> str:
    """The shared backend: a small static body, keep-alive, no logging."""
    return BACKEND_SERVER.format(port=port, body=BODY.replace("\n", "\\n"))


def dokku_http(port: int, apps: list[str], domain: str, backend: int) -> str:
    """One upstream and one ``server`` block per app, as Dokku lays out its nginx, and a 404 default."""
    blocks = [DOKKU_APP.format(app=app, port=port, domain=domain, backend=backend) for app in apps]
    return DOKKU_DEFAULT.format(port=port) + "".join(blocks)


PLAIN_HAPROXY = """\
global
    maxconn 4096
    nbthread {threads}

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s

frontend http
    bind 127.0.0.1:{port}
    default_backend app

backend app
    server s1 127.0.0.1:{backend}
"""


@contextlib.contextmanager
def plain_haproxy(binary: str, run_dir: Path, threads: int, port: int, backend: int) -> Iterator[int]:
    """The same HAProxy binary as a plain reverse proxy to ``backend``, in the foreground; its pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir / "haproxy.cfg"
    cfg.write_text(PLAIN_HAPROXY.format(threads=threads, port=port, backend=backend))
    with (run_dir / "haproxy.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait(
            lambda: proc.poll() is None and answers(f"http://127.0.0.1:{port}/", "plain"), 30, "plain HAProxy"
        )
        yield proc.pid
    finally:
        stop(proc)


# -- router_scale ------------------------------------------------------------------------------
# What consul-template logs when Consul refuses it a connection: it keeps one open per query
# of the template, and Consul allows 200 per client address (127.0.0.1, shared with the API and
# Nomad), so a template with a query per app stops rendering at about a hundred apps.
LIMITED = "Unexpected response code: 429"
LIMIT_HINT = (
    "consul-template got HTTP 429 from Consul ('too many concurrent connections': "
    "limits.http_max_conns_per_client, 200 by default) while rendering {count} apps, and cannot "
    "render the new ones: does the template ask Consul something per app?"
)


def consul_clients(port: int) -> dict[str, int]:
    """Open connections to Consul's HTTP port, by client process (``ss -tanp``), to say who holds them."""
    try:
        out = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: dict[str, int] = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[0] == "ESTAB" and cols[4].endswith(f":{port}"):
            match = re.search(r'users:\(\("([^"]+)"', line)
            name = match.group(1) if match else "?"
            found[name] = found.get(name, 0) + 1
    return found


class Scale:
    """The pieces of one ``router_scale`` run: the box, the shared backend, the plain HAProxy."""

    def __init__(self, box: SingleBox, run_dir: Path, nginx_bin: str, threads: int, prefix: str) -> None:
        self.box, self.run_dir, self.nginx_bin = box, run_dir, nginx_bin
        self.threads, self.prefix = threads, prefix
        self.router = f"http://127.0.0.1:{box.ports.router_http}/"
        self.backend_port, self.plain_port = free_port(), free_port()
        self.plain_pid = 0

    def routed(self, count: int, host: str, log_from: int, limited_since: list[float]) -> bool:
        """All ``count`` routes in the map and the last app answering; raises when Consul refuses."""
        if routed_hosts(self.box, self.prefix) == count and answers(self.router, host):
            return True
        if LIMITED in _log(self.box)[log_from:]:
            if not limited_since:
                limited_since.append(time.monotonic())
            if time.monotonic() - limited_since[0] > 20:  # not a passing burst: it stays stuck
                clients = consul_clients(self.box.ports.consul_http)
                raise RuntimeError(f"{LIMIT_HINT.format(count=count)}; connections to Consul: {clients}")
        return False

    def at(
        self, names: list[str], registered: list[str], count: int, rounds: int, seconds: int
    ) -> dict[str, Any]:
        """Route ``count`` apps (registering the ones missing), then the three proxies, interleaved."""
        box = self.box
        router_quiet(box)
        reloads_before, log_from, started = reloads(box), len(_log(box)), time.monotonic()
        new = names[len(registered) : count]
        registered.extend(new)  # first: a registration failing half-way is still undone
        register(box, new, self.backend_port)
        host = f"{names[count - 1]}.{box.settings.domain}"
        limited: list[float] = []
        wait(lambda: self.routed(count, host, log_from, limited), 600, f"{count} apps routed")
        figure: dict[str, Any] = {"registered_to_routed_s": round(time.monotonic() - started, 2)}
        router_quiet(box)
        figure["reloads_while_adding"] = reloads(box) - reloads_before
        figure["router_workers_at_start"] = one_worker(box)
        figure.update(idle_cpu(box))
        ng_port = free_port()
        dokku = dokku_http(ng_port, names[:count], box.settings.domain, self.backend_port)
        probe = (f"http://127.0.0.1:{ng_port}/", host)
        with nginx(self.nginx_bin, self.run_dir / f"nginx-{count}", self.threads, dokku, probe) as ng_pid:
            targets: dict[str, tuple[str, Callable[[], list[int]], dict[str, int]]] = {
                "router": (self.router, lambda: haproxy_workers(box), {"api": process_pid(box, "api")}),
                "haproxy_plain": (f"http://127.0.0.1:{self.plain_port}/", lambda: [self.plain_pid], {}),
                "nginx_per_app": (f"http://127.0.0.1:{ng_port}/", lambda: children(ng_pid), {}),
            }
            for url, _, _ in targets.values():
                wrk(
                    url, host, 1, threads=WRK_THREADS, connections=WRK_CONNECTIONS
                )  # warm-up: connections, caches
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for _ in range(rounds):  # interleaved, so a noisy moment hits all three
                for name, (url, pids, others) in targets.items():
                    runs[name].append(measured(url, host, seconds, pids, others))
            for name, (url, pids, _) in targets.items():
                figure[name] = {**median_run(runs[name]), "rss_mib": rss_mib(pids())}
                if not answers(url, host):
                    raise RuntimeError(f"{name} stopped serving {host} at {count} apps")
        r, p, n = figure["router"], figure["haproxy_plain"], figure["nginx_per_app"]
        figure["router_over_plain_rps"] = round(r["rps"] / p["rps"], 3) if p["rps"] else None
        figure["router_over_nginx_rps"] = round(r["rps"] / n["rps"], 3) if n["rps"] else None
        plain_cpu = p["cpu_us_per_request"]
        figure["router_over_plain_cpu"] = round(r["cpu_us_per_request"] / plain_cpu, 2) if plain_cpu else None
        console.print(
            f"  router scale, {count} apps: router {r['rps']:.0f} req/s "
            f"(p50 {r['p50_ms']} p99 {r['p99_ms']} ms, {r['cpu_us_per_request']} us CPU/req); "
            f"plain HAProxy {p['rps']:.0f} ({p['cpu_us_per_request']} us); "
            f"nginx per app {n['rps']:.0f} ({n['cpu_us_per_request']} us); "
            f"idle router {figure['router_idle_cpu_ms_per_s']} ms/s, "
            f"consul {figure['consul_idle_cpu_ms_per_s']} ms/s; routed in {figure['registered_to_routed_s']}s"
        )
        return figure


def bench_router_scale(
    box: SingleBox, work: Path, counts: tuple[int, ...] = (1, 100, 1000), rounds: int = 3, seconds: int = 5
) -> dict[str, Any]:
    """The box's router at ``counts`` routed apps, beside plain HAProxy and nginx-per-app, same run.

    A count the router cannot reach is recorded as that count's ``error``, and the larger ones
    are not tried; what was measured before is kept."""
    nginx_bin = nginx_binary()  # before anything is registered: no nginx, no figure
    threads = int(show_info(box.router_dir / "haproxy.sock").get("Nbthread", "1"))
    prefix = f"rs{uuid.uuid4().hex[:5]}-"
    run = Scale(box, work / f"router-scale-{uuid.uuid4().hex[:6]}", nginx_bin, threads, prefix)
    names = [f"{prefix}{n:04d}" for n in range(1, max(counts) + 1)]
    registered: list[str] = []
    out: dict[str, Any] = {}
    backend = backend_http(run.backend_port)
    with contextlib.ExitStack() as stack:
        probe = (f"http://127.0.0.1:{run.backend_port}/", "backend")
        stack.enter_context(nginx(nginx_bin, run.run_dir / "backend", 1, backend, probe))
        run.plain_pid = stack.enter_context(
            plain_haproxy(
                box.settings.haproxy_bin, run.run_dir / "haproxy", threads, run.plain_port, run.backend_port
            )
        )
        stack.callback(_unroute, box, prefix, registered)  # first out: before the backend stops
        for count in counts:
            try:
                out[str(count)] = run.at(names, registered, count, rounds, seconds)
            except Exception as exc:  # more apps would fail the same way
                console.print(f"[red]router scale, {count} apps:[/] {exc}")
                out[str(count)] = {"error": str(exc)}
                break
    measured_counts = [c for c in counts if "error" not in out.get(str(c), {"error": ""})]
    result: dict[str, Any] = {"apps": out}
    if len(measured_counts) > 1:
        first, last = out[str(measured_counts[0])]["router"], out[str(measured_counts[-1])]["router"]
        pair = f"{measured_counts[-1]}_over_{measured_counts[0]}"
        result[f"router_rps_{pair}"] = round(last["rps"] / first["rps"], 3)
        result[f"router_cpu_{pair}"] = round(last["cpu_us_per_request"] / first["cpu_us_per_request"], 3)
    domain = box.settings.domain
    return {
        **result,
        "haproxy_threads": threads,
        "wrk": f"-t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s, {rounds} interleaved rounds",
        "cores": os.cpu_count(),
        "note": (
            f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s (keep-alive) at the last app's name "
            f"(<app>.{domain}), {rounds} rounds interleaved router / plain HAProxy / nginx, medians, "
            "after a 1s warm-up of each. The apps are Consul agent services (tags billowin.web), every "
            f"one at the same backend: nginx, 1 worker, answering a {len(BODY)}-byte static body with "
            "keep-alive. "
            f"The box's HAProxy runs with its default {threads} threads (its config sets no nbthread); "
            f"the plain HAProxy (one frontend -> one backend, no logging, no ACLs) gets nbthread {threads} "
            f"and the per-app nginx (one upstream with keepalive 16 and one server block per app, "
            f"Dokku's layout, access_log off) worker_processes {threads}, so each proxy may use every "
            f"core. The machine has {os.cpu_count()} cores, shared by wrk, the proxy, the backend and "
            "the rest of the box: req/s is bounded by that, the CPU per request is the steadier "
            "figure. CPU per request: utime+stime (/proc/<pid>/stat) of the proxy's workers (the box's "
            "HAProxy master's children; the plain HAProxy process; nginx's workers, not its master) "
            "over the run, divided by wrk's requests; router.api_cpu_us_per_request is what the "
            "Billowin API (its monitoring reads HAProxy's access log, one line per request) spent "
            "meanwhile. The router does more per request than the plain HAProxy: Host to a variable, "
            "the HTTPS-hosts map, the ACME path check, the routes map, X-Forwarded-*, and the access "
            "log line. idle_cpu: the router's workers and Consul over 5s with no traffic, which at "
            "1,000 apps includes resolving 1,000 SRV names every second (hold valid 1s). "
            "registered_to_routed_s: the agent registrations to the last app answering through the "
            "router (render, check, reload). A count the router cannot reach has an error instead, "
            "and the larger counts are not tried."
        ),
    }


def idle_cpu(box: SingleBox, seconds: float = 5) -> dict[str, float]:
    """CPU ms per second of the router's workers and of Consul with no traffic (DNS resolution)."""
    consul = process_pid(box, "consul")
    workers = haproxy_workers(box)
    before, consul_before = cpu_seconds(workers), cpu_seconds([consul])
    time.sleep(seconds)
    after, consul_after = cpu_seconds(haproxy_workers(box)), cpu_seconds([consul])
    return {
        "router_idle_cpu_ms_per_s": round(spent(before, after) * 1000 / seconds, 1),
        "consul_idle_cpu_ms_per_s": round(spent(consul_before, consul_after) * 1000 / seconds, 1),
        "router_idle_rss_mib": rss_mib(workers),
    }


def _unroute(box: SingleBox, prefix: str, registered: list[str]) -> None:
    """Deregister the bench's services and wait until the router routes none of them; a
    consul-template stuck on Consul's refusals (see ``LIMIT_HINT``) is restarted to get there."""
    left = deregister(box, registered)
    if left:
        console.print(f"[yellow]router_scale cleanup:[/] Consul refused to deregister {len(left)} services")
    try:
        wait(lambda: routed_hosts(box, prefix) == 0, 120, "the bench's routes to go")
    except TimeoutError as exc:
        console.print(f"[yellow]router_scale cleanup:[/] {exc}; restarting consul-template")
        box.restart("consul-template")
    try:
        wait(lambda: routed_hosts(box, prefix) == 0, 300, "the bench's routes to go")
        router_quiet(box)
    except TimeoutError as exc:
        console.print(f"[yellow]router_scale cleanup:[/] {exc}")


# -- router_reloads ----------------------------------------------------------------------------
def instances(box: SingleBox, app: str) -> int:
    """Every registered instance of ``app`` in Consul, passing or not."""
    resp = httpx.get(f"{box.settings.consul_addr}/v1/health/service/{app}", timeout=10)
    resp.raise_for_status()
    return len(resp.json())


def deployment_done(box: SingleBox, app: str) -> bool:
    """The job's latest Nomad deployment, if any, is over (Nomad scales no job while one runs)."""
    resp = httpx.get(f"{box.settings.nomad_addr}/v1/job/{app}/deployment", timeout=10)
    resp.raise_for_status()
    latest = resp.json()
    if latest and latest.get("Status") == "failed":
        raise RuntimeError(f"{app}: deployment failed: {latest.get('StatusDescription')}")
    return not latest or latest.get("Status") in ("successful", "cancelled")


def phase(box: SingleBox, action: Callable[[], None]) -> dict[str, Any]:
    """Reloads while ``action`` runs, counted from a quiet router until it is quiet again."""
    router_quiet(box)
    before, rendered, started = reloads(box), renders(box), time.monotonic()
    action()
    took = round(time.monotonic() - started, 1)
    router_quiet(box)
    return {"reloads": reloads(box) - before, "renders": renders(box) - rendered, "seconds": took}


def bench_router_reloads(box: SingleBox, work: Path, count: int = 10) -> dict[str, Any]:
    """HAProxy reloads while ``count`` apps are added, redeployed and scaled (target: 0 per move)."""
    system = System(box.settings)
    tag = uuid.uuid4().hex[:5]
    apps = [f"rr{tag}-{n:02d}" for n in range(1, count + 1)]
    small = [Process(name="web", cpu=50, memory=32)]
    images = {
        app: (hello_image(box, work, app, "v1", "one"), hello_image(box, work, app, "v2", "two"))
        for app in apps
    }
    for app in apps:
        system.apps.create(App(name=app, repository="/nonexistent"))

    def deploy(app: str, image: str, text: str) -> None:
        release = System(box.settings).deployer.deploy(app, image, small, timeout=300)
        if release.status.value != "live":
            raise RuntimeError(f"{app} {release.name}: {release.status.value} ({release.description})")
        wait(lambda: serves(box, app, text), 60, f"{app} serving {text!r}")
        # the old instance deregistered (after its shutdown delay), so its going is counted here
        wait(lambda: instances(box, app) == 1, 120, f"{app} down to one instance")

    def first_deploys() -> None:  # one after another: each app's first registration on its own
        for app in apps:
            deploy(app, images[app][0], "one")

    def new_images() -> None:  # all at once: the most instance churn
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(lambda a: deploy(a, images[a][1], "two"), apps))

    def scaled(size: int) -> None:
        """Every app to ``size`` instances with Nomad's scale endpoint (which refuses while the
        deployment of the last scale still runs: tried again then)."""
        for app in apps:
            deadline = time.monotonic() + 180
            while True:
                try:
                    system.nomad.scale(app, "web", size, message="bench router_reloads")
                    break
                except InvalidInput as exc:  # "job scaling blocked due to active deployment"
                    if "active deployment" not in exc.message or time.monotonic() > deadline:
                        raise
                    time.sleep(1)

    def scale_up_and_down() -> None:
        scaled(3)
        for app in apps:
            if len(system.catalog.wait_for_healthy(app, count=3, timeout=120)) < 3:
                raise RuntimeError(f"{app} did not get 3 healthy instances")
        scaled(1)
        for app in apps:
            wait(lambda a=app: instances(box, a) == 1, 120, f"{app} back to one instance")
            wait(lambda a=app: serves(box, a, "two"), 60, f"{app} serving after the scale down")
            wait(lambda a=app: deployment_done(box, a), 180, f"{app}'s deployment after the scale down")

    def destroy() -> None:
        with api(box) as client:
            failed = [
                a for a in apps if client.delete(f"/apps/{a}", params={"confirm": a}).status_code >= 400
            ]
        if failed:
            console.print(f"[yellow]router_reloads cleanup:[/] could not destroy {failed}")
        wait(lambda: routed_hosts(box, f"rr{tag}-") == 0, 300, "the apps' routes to go")

    out: dict[str, Any] = {"apps": count}
    phases = [("first_deploys", first_deploys), ("new_image_deploys", new_images)]
    phases.append(("scale_to_3_and_back_to_1", scale_up_and_down))
    try:
        for name, action in phases:
            out[name] = phase(box, action)
    except Exception as exc:  # the phases done so far are kept
        console.print(f"[red]router reloads:[/] {exc!r}")
        out["error"] = repr(exc)
    finally:
        out["destroy"] = phase(box, destroy)
    if "error" in out:
        return out
    moves = out["new_image_deploys"]["reloads"] + out["scale_to_3_and_back_to_1"]["reloads"]
    console.print(
        f"  router reloads, {count} apps: first deploys {out['first_deploys']['reloads']}, "
        f"new image to each {out['new_image_deploys']['reloads']}, "
        f"scale 1->3->1 {out['scale_to_3_and_back_to_1']['reloads']}, destroy {out['destroy']['reloads']}"
    )
    out["reloads_for_instance_moves"] = moves
    out["note"] = (
        f"{count} busybox httpd apps (hello_image; Billowin's Deployer, 50 MHz / 32 MB each). Reloads "
        f"are the reload step's '{RELOADED}' lines in consul-template.log, counted from a quiet router "
        "(no change to the live config and no reload for 3s) to a quiet router again after the phase; "
        "renders: consul-template's '(runner) rendered' lines (it runs the reload step only when its "
        "output changed). "
        "first_deploys: the apps' first releases, one after another (each app's first registration "
        "adds its route and backend: a reload each, unless two renders coalesce). new_image_deploys: "
        "a new image to every app at once (blue/green: a new instance registers, turns healthy, the "
        "old one deregisters and stops), waited until each serves the new page with one instance "
        "left. scale_to_3_and_back_to_1: Nomad's scale endpoint, every app to 3 (all healthy), then "
        "to 1 (one instance left). destroy: DELETE /apps/<app> (routes removed: may reload). "
        "Target: 0 reloads for instance moves (new_image_deploys and the scaling)."
    )
    return out
