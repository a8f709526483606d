"""Bench figures of app management and capacity: config/rollback → live, rolling deploys, density.

Each takes the running single-box stack; see ``bench/__main__.py`` for the
others and for how results are written.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
from rich.console import Console

from billowin.apps.store import App
from billowin.release.jobspec import Process
from billowin.stack.install import base_image_tag
from billowin.stack.single_box import SingleBox
from billowin.system import System

console = Console(stderr=True)

# Serves "<GREETING> release=<release>": a config var or a new image changes the page.
HELLO = (
    'mkdir -p /srv/www; echo "$GREETING release=$BILLOWIN_RELEASE" > /srv/www/index.html; '
    'exec busybox httpd -f -p "$PORT" -h /srv/www'
)
CONTROL_PLANE = ("api", "nomad", "consul", "haproxy", "consul-template")


def hello_image(box: SingleBox, work: Path, app: str, tag: str, greeting: str = "hello") -> str:
    context = work / f"{app}-{tag}"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(
        f"FROM {base_image_tag(box.settings)}\n"
        f'ENV GREETING="{greeting}"\n'
        f"CMD {json.dumps(['sh', '-c', HELLO])}\n"
    )
    ref = f"{box.settings.registry}/{app}:{tag}"
    engine = System(box.settings).docker
    engine.build(context, ref)
    engine.push(ref)
    return ref


def serves(box: SingleBox, app: str, text: str) -> bool:
    try:
        resp = httpx.get(
            f"http://127.0.0.1:{box.ports.router_http}/",
            headers={"Host": f"{app}.{box.settings.domain}"},
            timeout=2,
        )
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.text.startswith(text)


def until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")


def api(box: SingleBox) -> httpx.Client:
    token = System(box.settings).tokens.create("bench")
    return httpx.Client(
        base_url=f"http://127.0.0.1:{box.ports.api}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def follow(client: httpx.Client, app: str, job: dict[str, Any]) -> dict[str, Any]:
    while job["state"] not in ("live", "failed", "superseded"):
        job = client.get(
            f"/apps/{app}/deploys/{job['id']}", params={"wait": 20, "seen": len(job["steps"])}
        ).json()
    if job["state"] != "live":
        raise RuntimeError(f"{app} job {job['id']} ended {job['state']}: {job.get('reason')}")
    return job


def bench_config_and_rollback(box: SingleBox, work: Path, runs: int = 3) -> dict[str, Any]:
    """``config:set`` → new value served; ``rollback`` → old release served (median of ``runs``)."""
    app = f"bcfg{uuid.uuid4().hex[:6]}"
    System(box.settings).apps.create(App(name=app, repository="/nonexistent"))
    image = hello_image(box, work, app, "v1")
    config_s, rollback_s = [], []
    with api(box) as client:
        follow(client, app, client.post(f"/apps/{app}/deploys", json={"image": image}).json())
        until(lambda: serves(box, app, "hello"), 60)
        for n in range(runs):
            value = f"value-{n}-{uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            changed = client.patch(f"/apps/{app}/config", json={"set": {"GREETING": value}}).json()
            until(lambda v=value: serves(box, app, v), 120)
            config_s.append(round(time.monotonic() - started, 2))
            follow(client, app, changed["job"])
        releases = client.get(f"/apps/{app}/releases").json()
        for n in range(runs):
            target = releases[-2 - n]  # earlier and earlier config versions
            text = "hello" if not target["config_version"] else None
            started = time.monotonic()
            job = client.post(f"/apps/{app}/releases/rollback", json={"release": target["number"]}).json()
            job = follow(client, app, job)
            release = job["release"]
            until(
                lambda r=release, t=text: serves(box, app, t or "") and f"release={r}" in _page(box, app), 120
            )
            rollback_s.append(round(time.monotonic() - started, 2))
        client.delete(f"/apps/{app}", params={"confirm": app})
    result = {
        "config_to_live_s": round(statistics.median(config_s), 2),
        "config_runs_s": config_s,
        "rollback_to_live_s": round(statistics.median(rollback_s), 2),
        "rollback_runs_s": rollback_s,
    }
    console.print(
        f"  config -> live {result['config_to_live_s']}s, rollback -> live {result['rollback_to_live_s']}s"
    )
    return result


def _page(box: SingleBox, app: str) -> str:
    try:
        return httpx.get(
            f"http://127.0.0.1:{box.ports.router_http}/",
            headers={"Host": f"{app}.{box.settings.domain}"},
            timeout=2,
        ).text
    except httpx.HTTPError:
        return ""


def wrk_during(url: str, host: str, seconds: int, during: Callable[[], None]) -> dict[str, Any]:
    """Constant load with wrk while ``during`` runs; wrk's own failed-request counts."""
    argv = ["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", "-H", f"Host: {host}", url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(2)
    during()
    out, _ = proc.communicate(timeout=seconds + 60)
    total = int(_grep(out, r"(\d+) requests in") or 0)
    non_2xx = int(_grep(out, r"Non-2xx or 3xx responses: (\d+)") or 0)
    socket = [
        int(x) for x in (_grep(out, r"Socket errors: (.*)") or "").replace(",", "").split() if x.isdigit()
    ]
    p99 = _grep(out, r"^\s+99%\s+([\d.]+\w+)")
    return {
        "requests": total,
        "failed": non_2xx + sum(socket),
        "non_2xx": non_2xx,
        "socket_errors": sum(socket),
        "p99": p99,
    }


def wrk(
    url: str,
    host: str | None,
    seconds: int = 5,
    script: Path | None = None,
    *,
    threads: int = 2,
    connections: int = 16,
) -> dict[str, Any]:
    """``wrk -t2 -c16`` (keep-alive) for ``seconds``, with a Host header and optionally a Lua script:
    requests/s, p50/p99 in ms, and what failed (wrk's "Non-2xx or 3xx" and socket errors)."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if host:
        argv += ["-H", f"Host: {host}"]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
        if not match:
            return float("nan")
        return round(float(match.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[match.group(2)], 3)

    socket = _grep(out, r"Socket errors: (.*)") or ""
    return {
        "rps": float(_grep(out, r"Requests/sec:\s+([\d.]+)") or "nan"),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": int(_grep(out, r"(\d+) requests in") or 0),
        "non_2xx": int(_grep(out, r"Non-2xx or 3xx responses: (\d+)") or 0),
        "socket_errors": sum(int(x) for x in socket.replace(",", " ").split() if x.isdigit()),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median req/s, p50, p99 (and CPU per request, when measured) of wrk runs; failures summed."""
    keys = [k for k in runs[0] if k.endswith("cpu_us_per_request")]
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
        **{k: round(statistics.median(r[k] for r in runs), 1) for k in keys},
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "runs": runs,
    }


def _grep(text: str, pattern: str) -> str | None:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1) if match else None


def bench_rolling_deploy(box: SingleBox, work: Path) -> dict[str, Any]:
    """Failed requests and p99 while a new release rolls out (blue/green) under constant load."""
    app = f"broll{uuid.uuid4().hex[:6]}"
    System(box.settings).apps.create(App(name=app, repository="/nonexistent"))
    v1, v2 = hello_image(box, work, app, "v1", "one"), hello_image(box, work, app, "v2", "two")
    with api(box) as client:
        follow(client, app, client.post(f"/apps/{app}/deploys", json={"image": v1}).json())
        client.post(f"/apps/{app}/ps/scale", json={"counts": {"web": 2}})
        System(box.settings).catalog.wait_for_healthy(app, count=2, timeout=60)
        started: dict[str, float] = {}

        def deploy() -> None:
            started["t"] = time.monotonic()
            follow(client, app, client.post(f"/apps/{app}/deploys", json={"image": v2}).json())
            until(lambda: serves(box, app, "two"), 60)
            started["live"] = time.monotonic() - started["t"]

        load = wrk_during(
            f"http://127.0.0.1:{box.ports.router_http}/", f"{app}.{box.settings.domain}", 30, deploy
        )
        client.delete(f"/apps/{app}", params={"confirm": app})
    load["rollout_s"] = round(started.get("live", float("nan")), 2)
    console.print(f"  rolling deploy: {load['failed']} failed of {load['requests']}, p99 {load['p99']}")
    return load


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def control_plane_rss(box: SingleBox) -> dict[str, float]:
    return {p.name: rss_mb(p.pid() or 0) for p in box.processes if p.name in CONTROL_PLANE and p.pid()}


def bench_density(box: SingleBox, work: Path, target: int = 30) -> dict[str, Any]:
    """Deploy small apps until ``target`` (or a failure); control-plane RSS and per-app memory."""
    settings = box.settings
    deployer = System(settings).deployer
    image = hello_image(box, work, "bdensity", "v1")
    small = [Process(name="web", cpu=50, memory=32)]
    apps: list[str] = []
    samples = [{"apps": 0, **control_plane_rss(box)}]
    failure = None
    try:
        for n in range(1, target + 1):
            app = f"bd{n:02d}{uuid.uuid4().hex[:4]}"
            release = deployer.deploy(app, image, small, timeout=120)
            apps.append(app)
            if release.status.value != "live":
                failure = f"app {n}: {release.description}"
                break
            if n % 5 == 0:
                until(lambda a=app: serves(box, a, "hello"), 60)
                samples.append({"apps": n, **control_plane_rss(box)})
                total = sum(v for k, v in samples[-1].items() if k != "apps")
                console.print(f"  density: {n} apps; control plane {total:.0f} MB")
        per_app = _container_memory(apps)
    finally:
        nomad = System(settings).nomad
        for app in apps:
            nomad.stop(app)
    last = samples[-1]
    return {
        "apps_running": len(apps) if failure is None else len(apps) - 1,
        "target": target,
        "failure": failure,
        "control_plane_rss_mb": samples,
        "billowin_api_rss_mb": last.get("api"),
        "per_app_memory_mb": per_app,
    }


def _container_memory(apps: list[str]) -> dict[str, float]:
    engine = docker.from_env()
    try:
        usage = []
        for app in apps:
            for container in engine.containers.list(filters={"label": f"billowin.app={app}"}):
                stats = container.stats(stream=False)
                usage.append(stats["memory_stats"].get("usage", 0) / 1024 / 1024)
    finally:
        engine.close()
    if not usage:
        return {}
    return {"mean": round(statistics.mean(usage), 2), "max": round(max(usage), 2), "containers": len(usage)}


def hand_deploy(box: SingleBox, src: Path, app: str, *, first: bool = False, buildkit: bool = False) -> float:
    """docker build of ``src``'s Dockerfile (the Engine's classic builder, or BuildKit through
    the docker CLI as a user types it), push, `nomad job run` of a hand jobspec, wait until routed."""
    settings = box.settings
    ref = f"{settings.registry}/{app}:hand-{uuid.uuid4().hex[:6]}"
    jobspec = src.parent / f"{app}.nomad.hcl"
    jobspec.write_text(HAND_JOBSPEC.replace("APP", app).replace("IMAGE", ref))
    started = time.monotonic()
    engine = docker.from_env()
    try:
        if buildkit:
            subprocess.run(
                [settings.docker_cli, "build", "-t", ref, str(src)],
                check=True,
                capture_output=True,
                env={"DOCKER_BUILDKIT": "1", "DOCKER_HOST": settings.docker_host, "PATH": "/usr/bin:/bin"},
            )
        else:
            engine.images.build(path=str(src), tag=ref, rm=True)
        for _ in engine.images.push(ref, stream=True, decode=True):
            pass
    finally:
        engine.close()
    subprocess.run(
        [str(box.tools.nomad), "job", "run", str(jobspec)],  # waits for the deployment, as users do
        check=True,
        capture_output=True,
        env={"NOMAD_ADDR": settings.nomad_addr, "PATH": "/usr/bin:/bin"},
    )
    # Healthy in Consul (Billowin's router only routes Billowin's apps).
    until(lambda: bool(System(settings).catalog.healthy_instances(app)), 300)
    seconds = round(time.monotonic() - started, 2)
    if not first:
        System(settings).nomad.stop(app)
    return seconds


# A minimal hand-written jobspec: one instance, a port, a Consul service with an HTTP check.
HAND_JOBSPEC = """
job "APP" {
  datacenters = ["*"]
  group "web" {
    network {
      port "http" {}
    }
    service {
      name = "APP"
      port = "http"
      check {
        type     = "http"
        path     = "/"
        interval = "2s"
        timeout  = "2s"
      }
    }
    task "web" {
      driver = "docker"
      config {
        image = "IMAGE"
        ports = ["http"]
      }
      env {
        PORT = "${NOMAD_PORT_http}"
      }
      resources {
        memory = 256
      }
    }
  }
}
"""
