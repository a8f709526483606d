"""Measure Billowin on the real single-box stack, each figure beside a same-run baseline.

Starts its own stack on free ports (as the integration tests do), then:

- ``build``: per language, a cold build (new app, empty dependency cache) and a
  warm one (code-only change); the baseline is a plain ``docker build`` of an
  equivalent hand-written Dockerfile, timed in the same run.
- ``deploy``: job registered -> new release serving through HAProxy.
- ``push_to_live``: signed push -> the release answering through HAProxy, cold and warm, per
  language, beside a hand-written Dockerfile built and run by hand; ``dockerfile_push_to_live``:
  the same for the Dockerfile app (BuildKit), beside `docker build` with BuildKit by hand.
- ``webhook_ack``: reply times of 50 concurrent signed deliveries, on the idle box and while
  the API's own pipeline builds an app (a signed push of an app it follows).
- ``recovery``: ``docker kill`` of the instance -> requests succeed again.
- ``router``: requests/s and latency through HAProxy with ``wrk``, against the
  same container hit directly on its port.
- ``monitoring``: the API's CPU and memory with the collector on, against the
  same API with it off, 20 apps running under steady traffic (``bench/monitoring.py``;
  ``python -m bench.monitoring`` runs this figure alone).
- ``power_cut_to_serving``: a production box with three apps, every process SIGKILLed at
  once, then started again: seconds until all three serve, against a clean restart of the
  same box (``bench/production.py``).
- ``node_loss``: a three-node cluster of its own; one node with an instance powered off under
  load (``node_loss_failed_requests``, ``node_loss_to_capacity_s``), beside draining a node with
  ``nodes:drain`` (``bench/cluster.py``).
- ``domain_to_https``: ``domains:add`` -> the first verified HTTPS 200 for that domain through
  HAProxy, against the bare certificate order from the same ACME CA (pebble); and
  ``router_tls``: requests/s and latency through HAProxy over HTTPS with ``wrk``, against plain
  HTTP to the same app. Both on a box of their own with ACME on (``bench/https.py``); ``--only
  https`` runs the two.
- ``router_scale``: requests/s, p50/p99 and HAProxy's CPU per request through the box's router
  with 1, 100 and 1,000 routed apps (Consul agent services at one fast nginx backend), against
  the same HAProxy as a plain reverse proxy and nginx with one server block per app (Dokku's
  layout), same run; and ``router_reloads``: HAProxy reloads while 10 apps are first deployed,
  given a new image, and scaled to 3 and back to 1 (``bench/router.py``; router_scale needs nginx).
- ``platform_idle_mb``: the PSS of every platform process (Consul, Nomad and its logmon and
  docker_logger children, the Docker Engine, the shims, the registry, the router, the API) at
  idle, by component; ``instance_overhead_mb``: the platform's growth per small app at 1, 10 and
  30 apps, beside the app's own PSS; and ``apps_in_1gib``: how many of those apps fit in 1 GiB,
  everything counted (``bench/memory.py``; run first, on the fresh box).
- ``addon_create_to_ready``: ``addons:create`` -> the add-on ready with its ``DATABASE_URL`` /
  ``REDIS_URL`` linked, Postgres and Redis, the image already in the registry, beside the same
  server as a hand-written Nomad job (same image, start script, volume and check) until it passes
  in Consul; ``pg_backup_restore_s``: ``pg:backups:capture`` then ``pg:backups:restore`` of a 100 MB
  Postgres database, beside the same ``pg_dump``/``pg_restore`` by hand with ``docker exec``
  (``bench/addons.py``; ``--only addons`` runs the two).

Writes ``bench/results.json`` and prints a table. These machines are noisy:
compare ratios, not seconds. No figure here is ever asserted in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx
from rich.console import Console
from rich.table import Table

from bench.addons import bench_addons
from bench.cluster import bench_node_loss
from bench.figures import (
    bench_config_and_rollback,
    bench_density,
    bench_rolling_deploy,
    hand_deploy,
    until,
    wrk,
)
from bench.https import bench_https
from bench.memory import Memory
from bench.monitoring import bench_monitoring_overhead
from bench.production import bench_power_cut
from bench.router import bench_router_reloads, bench_router_scale
from billowin.apps.store import App
from billowin.build.builder import Builder
from billowin.pipeline.webhooks import github_signature
from billowin.release.jobspec import Process
from billowin.settings import Settings
from billowin.stack.single_box import Ports, SingleBox
from billowin.stack.tools import Toolset
from billowin.system import System
from tests.gitrepo import commit

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "tests" / "fixtures" / "apps"


# A full run is kept in the repository, one file per run: bench/results/<UTC date>.json.
# A partial one (--only) goes to bench/results.json, which git ignores.
def results_path(day: str = time.strftime("%Y-%m-%d", time.gmtime())) -> Path:
    """``bench/results/<day>.json``; when a run of that day is there, ``<day>-<n>.json`` with
    ``n`` after every run of the day (``<day>-3-https.json`` counts as run 3)."""
    folder = REPO / "bench" / "results"
    taken = [1] if (folder / f"{day}.json").exists() else []
    for found in folder.glob(f"{day}-*.json"):
        if match := re.match(rf"{day}-(\d+)", found.name):
            taken.append(int(match.group(1)))
    return folder / (f"{day}-{max(taken) + 1}.json" if taken else f"{day}.json")


RESULTS = results_path()
SCRATCH = REPO / "bench" / "results.json"
console = Console(stderr=True)

# What a user would write by hand for the same sample app, on the same base images.
HAND_DOCKERFILES = {
    "python": "RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install -r requirements.txt\n"
    'CMD ["sh", "-c", "/app/.venv/bin/gunicorn --bind 0.0.0.0:$PORT app:app"]\n',
    "node": 'RUN npm ci --omit=dev\nCMD ["sh", "-c", "npm start"]\n',
    "go": 'RUN go build -o /app/bin/web .\nCMD ["/app/bin/web"]\n',
    "ruby": "RUN bundle install --local\n"
    'CMD ["sh", "-c", "bundle exec puma -b tcp://0.0.0.0:$PORT config.ru"]\n',
}


def write_hand_dockerfile(src: Path, base: str, language: str, ca_bundle: Path) -> None:
    """The Dockerfile a user would write for the sample app (CA bundle: behind a TLS-inspecting proxy)."""
    shutil.copy(ca_bundle, src / "host-ca.crt")
    (src / "Dockerfile").write_text(
        f"FROM {base}\nWORKDIR /app\nCOPY . /app\n"
        "ENV SSL_CERT_FILE=/app/host-ca.crt PIP_CERT=/app/host-ca.crt "
        "NODE_EXTRA_CA_CERTS=/app/host-ca.crt npm_config_cafile=/app/host-ca.crt\n"
        f"{HAND_DOCKERFILES[language]}"
    )


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    started = time.monotonic()
    fn(*args, **kwargs)
    return round(time.monotonic() - started, 2)


wait_for = until


def answers(url: str, host: str | None = None, text: str = "") -> bool:
    try:
        resp = httpx.get(url, headers={"Host": host} if host else None, timeout=2)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and text in resp.text


def bench_build(box: SingleBox, builder: Builder, languages: list[str], work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    engine = docker.from_env()
    try:
        for language in languages:
            app = f"b{language}{uuid.uuid4().hex[:6]}"
            repo = work / app
            shutil.copytree(APPS / language, repo)
            shutil.rmtree(box.settings.cache_dir / "build-cache" / app, ignore_errors=True)
            cold = timed(builder.build, app, str(repo), commit(repo, "cold"))
            warm_runs = []
            for n in range(2):
                (repo / "CHANGELOG").write_text(f"change {n}\n")  # a code-only change
                sha = commit(repo, f"warm {n}")
                warm_runs.append(timed(builder.build, app, str(repo), sha))
            # Baseline: the hand-written Dockerfile, built cold by `docker build` on the same base.
            base = builder.language_image(language, log=lambda _l: None)
            hand = work / f"{app}-hand"
            shutil.copytree(APPS / language, hand)
            write_hand_dockerfile(hand, base, language, box.settings.ca_bundle)
            tag = f"billowin-bench/{app}:hand"
            by_hand = timed(engine.images.build, path=str(hand), tag=tag, rm=True, nocache=True)
            engine.images.remove(tag, force=True)
            warm = round(statistics.median(warm_runs), 2)
            out[language] = {
                "cold_s": cold,
                "warm_s": warm,
                "warm_runs_s": warm_runs,
                "by_hand_docker_build_cold_s": by_hand,
                "warm_over_cold": round(warm / cold, 3),
                "cold_over_by_hand": round(cold / by_hand, 3),
            }
            console.print(f"  build {language}: cold {cold}s, warm {warm}s, by hand {by_hand}s")
    finally:
        engine.close()
    return out


def bench_deploy_and_recovery(box: SingleBox, builder: Builder, work: Path) -> dict[str, Any]:
    settings = box.settings
    app = f"bdeploy{uuid.uuid4().hex[:6]}"
    repo = work / app
    shutil.copytree(APPS / "go", repo)
    record = builder.build(app, str(repo), commit(repo, "v1"))
    assert record.image
    deployer = System(settings).deployer
    router = f"http://127.0.0.1:{box.ports.router_http}/"
    host = f"{app}.{settings.domain}"
    started = time.monotonic()
    release = deployer.deploy(app, record.image, [Process(name="web")])
    wait_for(lambda: answers(router, host, "Hello from Go"), 60)
    deploy_s = round(time.monotonic() - started, 2)
    console.print(f"  deploy: registered -> serving {deploy_s}s ({release.status})")

    engine = docker.from_env()
    try:
        (container,) = engine.containers.list(filters={"label": f"billowin.app={app}"})
        direct_port = container.attrs["NetworkSettings"]["Ports"]
        killed = time.monotonic()
        container.kill()
        time.sleep(0.2)
        wait_for(lambda: answers(router, host, "Hello from Go"), 120)
        recovery_s = round(time.monotonic() - killed, 2)
        console.print(f"  recovery: docker kill -> serving again {recovery_s}s")
        (container,) = engine.containers.list(filters={"label": f"billowin.app={app}"})
        direct_port = container.attrs["NetworkSettings"]["Ports"]
    finally:
        engine.close()
    host_port = next(iter(direct_port.values()))[0]["HostPort"]
    router_figures = bench_router(router, host, f"http://127.0.0.1:{host_port}/")
    System(settings).nomad.stop(app)
    return {
        "deploy": {"registered_to_serving_s": deploy_s, "release_status": release.status.value},
        "recovery": {"kill_to_serving_s": recovery_s},
        "router": router_figures,
    }


SECRET = "billowin-bench-secret"  # noqa: S105 - a throwaway for the bench stack


def signed_push(api: str, github_repo: str, sha: str, delivery: str) -> httpx.Request:
    body = json.dumps(
        {"ref": "refs/heads/main", "after": sha, "deleted": False, "repository": {"full_name": github_repo}}
    ).encode()
    return httpx.Request(
        "POST",
        f"{api}/hooks/github",
        content=body,
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": github_signature(SECRET.encode(), body),
            "Content-Type": "application/json",
        },
    )


def bench_push_to_live(box: SingleBox, builder: Builder, languages: list[str], work: Path) -> dict[str, Any]:
    """Signed push accepted -> the new release answering through HAProxy, cold then warm."""
    apps = System(box.settings).apps
    auth = {"Authorization": f"Bearer {System(box.settings).tokens.create('bench')}"}
    out: dict[str, Any] = {}
    for language in languages:
        name = f"p{language}{uuid.uuid4().hex[:6]}"
        repo = work / name
        shutil.copytree(APPS / language, repo)
        apps.create(App(name=name, repository=str(repo), github_repo=f"bench/{name}"))
        figures = push_cold_then_warm(box, auth, name, repo)
        System(box.settings).nomad.stop(name)
        # The same by hand: docker build of a hand-written Dockerfile, `nomad job run`, wait healthy.
        base = builder.language_image(language, log=lambda _l: None)
        hand = work / f"{name}-hand"
        shutil.copytree(APPS / language, hand)
        write_hand_dockerfile(hand, base, language, box.settings.ca_bundle)
        by_hand = [hand_deploy(box, hand, f"h{name}", first=True)]
        (hand / "VERSION").write_text(uuid.uuid4().hex)  # a code-only change, as in the warm push
        by_hand.append(hand_deploy(box, hand, f"h{name}"))
        figures["by_hand_cold_s"], figures["by_hand_warm_s"] = by_hand
        figures["warm_over_by_hand"] = round(figures["warm_s"] / by_hand[1], 3)
        console.print(
            f"  push -> live {language}: cold {figures['cold_s']}s, warm {figures['warm_s']}s; "
            f"by hand cold {by_hand[0]}s, warm {by_hand[1]}s"
        )
        out[language] = figures
    return out


def push_cold_then_warm(box: SingleBox, auth: dict[str, str], name: str, repo: Path) -> dict[str, Any]:
    """A signed push of ``repo`` (the app's first, so cold), then two code-only ones (warm):
    seconds from each push to its release answering through HAProxy, and where they went."""
    api = f"http://127.0.0.1:{box.ports.api}"
    router = f"http://127.0.0.1:{box.ports.router_http}/"
    figures: dict[str, Any] = {}
    warm_runs: list[float] = []
    for run in ("cold", "warm", "warm"):
        marker = f"{run}-{uuid.uuid4().hex[:8]}"
        (repo / "VERSION").write_text(marker)
        sha = commit(repo, run)
        started = time.monotonic()
        with httpx.Client() as client:
            resp = client.send(signed_push(api, f"bench/{name}", sha, str(uuid.uuid4())))
        resp.raise_for_status()
        job_id = resp.json()["jobs"][0]["id"]

        def live(job: str = job_id) -> bool:
            found = httpx.get(f"{api}/pipeline/{name}/jobs/{job}", headers=auth, timeout=5).json()
            if found["state"] == "failed":
                raise RuntimeError(f"push-to-live job {job} of {name} failed: {found['reason']}")
            return found["state"] == "live" and answers(router, f"{name}.{box.settings.domain}")

        wait_for(live, 600)
        seconds = round(time.monotonic() - started, 2)
        done = httpx.get(f"{api}/pipeline/{name}/jobs/{job_id}", headers=auth, timeout=5).json()
        figures.setdefault("stages_s", []).append(stages(done["steps"], seconds))
        if run == "cold":
            figures["cold_s"] = seconds
        else:
            warm_runs.append(seconds)
    figures["warm_s"] = round(statistics.median(warm_runs), 2)
    figures["warm_runs_s"] = warm_runs
    return figures


def bench_dockerfile_push_to_live(box: SingleBox, work: Path) -> dict[str, Any]:
    """The Dockerfile app (BuildKit): signed push -> live, cold then warm, beside the same
    Dockerfile built by hand (`docker build` with BuildKit, push, `nomad job run`), same run.

    Cold means no layer of it in BuildKit's cache: an ``ENV`` line of its own, right after
    ``FROM``, makes every later step new to the cache, for Billowin's copy and the hand one."""
    apps = System(box.settings).apps
    auth = {"Authorization": f"Bearer {System(box.settings).tokens.create('bench')}"}
    name = f"pdocker{uuid.uuid4().hex[:6]}"

    def copy(to: Path) -> Path:
        shutil.copytree(APPS / "dockerfile", to)
        dockerfile = to / "Dockerfile"
        lines = dockerfile.read_text().splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("FROM ")) + 1
        lines.insert(at, f"ENV BENCH_RUN={uuid.uuid4().hex}")
        dockerfile.write_text("\n".join(lines) + "\n")
        return to

    repo = copy(work / name)
    apps.create(App(name=name, repository=str(repo), github_repo=f"bench/{name}"))
    figures = push_cold_then_warm(box, auth, name, repo)
    System(box.settings).nomad.stop(name)
    hand = copy(work / f"{name}-hand")
    by_hand = [hand_deploy(box, hand, f"h{name}", first=True, buildkit=True)]
    (hand / "VERSION").write_text(uuid.uuid4().hex)  # a code-only change, as in the warm push
    by_hand.append(hand_deploy(box, hand, f"h{name}", buildkit=True))
    figures["by_hand_cold_s"], figures["by_hand_warm_s"] = by_hand
    figures["warm_over_by_hand"] = round(figures["warm_s"] / by_hand[1], 3)
    figures["cold_over_by_hand"] = round(figures["cold_s"] / by_hand[0], 3)
    console.print(
        f"  push -> live dockerfile: cold {figures['cold_s']}s, warm {figures['warm_s']}s; "
        f"by hand cold {by_hand[0]}s, warm {by_hand[1]}s"
    )
    return figures


def stages(steps: list[dict[str, Any]], total: float) -> dict[str, float]:
    """Where a push's time went, from the pipeline job's own step times."""
    at = {}
    for step in steps:
        at.setdefault(step["state"], datetime.fromisoformat(step["at"]).timestamp())
    queued, building = at.get("queued", 0.0), at.get("building", 0.0)
    deploying, live = at.get("deploying", building), at.get("live", 0.0)
    return {
        "queue_wait": round(building - queued, 2),
        "build": round(deploying - building, 2),
        "rollout": round(live - deploying, 2),
        "routed_after_live": round(total - (live - queued), 2),
    }


def bench_webhook_ack(box: SingleBox, work: Path, deliveries: int = 50) -> dict[str, Any]:
    """Reply times of ``deliveries`` concurrent signed deliveries (for a repository no app
    follows), first on the idle box, then while the API's own pipeline builds an app (a signed
    push of a Node app it follows, as on a real push)."""
    api = f"http://127.0.0.1:{box.ports.api}"
    system = System(box.settings)
    auth = {"Authorization": f"Bearer {system.tokens.create('bench webhook_ack')}"}

    async def one(client: httpx.AsyncClient) -> float:
        request = signed_push(api, "bench/nobody-follows-this", "f" * 40, str(uuid.uuid4()))
        started = time.monotonic()
        resp = await client.send(request)
        resp.raise_for_status()
        return (time.monotonic() - started) * 1000

    async def all_at_once() -> list[float]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(one(client) for _ in range(deliveries))))

    def measure() -> dict[str, float]:
        times = sorted(asyncio.run(all_at_once()))
        return {
            "p50_ms": round(times[len(times) // 2], 1),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
            "max_ms": round(times[-1], 1),
        }

    measure()  # warm: the API's thread pools grown and its connections open, as on a box that has been up
    idle = measure()
    name = f"ack{uuid.uuid4().hex[:6]}"
    repo = work / name
    shutil.copytree(APPS / "node", repo)
    system.apps.create(App(name=name, repository=str(repo), github_repo=f"bench/{name}"))
    try:
        with httpx.Client(timeout=30) as client:
            queued = client.send(signed_push(api, f"bench/{name}", commit(repo, "busy"), str(uuid.uuid4())))
            queued.raise_for_status()
            job_id = queued.json()["jobs"][0]["id"]

            def state() -> str:
                return str(client.get(f"{api}/pipeline/{name}/jobs/{job_id}", headers=auth).json()["state"])

            wait_for(lambda: state() == "building", 120)
            time.sleep(1)  # into the build proper: fetch done, Packer's container running
            during = measure()
            during["build_still_running"] = state() == "building"
            wait_for(lambda: state() in ("live", "failed"), 600)
    finally:
        system.nomad.stop(name, purge=True)
    console.print(
        f"  webhook ack, {deliveries} concurrent: idle p50 {idle['p50_ms']}ms p99 {idle['p99_ms']}ms; "
        f"during a build p50 {during['p50_ms']}ms p99 {during['p99_ms']}ms"
    )
    return {"deliveries": deliveries, "idle": idle, "during_build": during, **during}


def bench_router(router: str, host: str, direct: str) -> dict[str, Any]:
    through = wrk(router, host)
    baseline = wrk(direct, None)
    console.print(f"  router: {through['rps']:.0f} req/s through HAProxy, {baseline['rps']:.0f} direct")
    return {
        "through_haproxy": through,
        "direct_container": baseline,
        "rps_ratio": round(through["rps"] / baseline["rps"], 3),
        "p99_ratio": round(through["p99_ms"] / baseline["p99_ms"], 3) if baseline["p99_ms"] else None,
    }


def versions(box: SingleBox) -> dict[str, str | None]:
    admin = {"Authorization": f"Bearer {System(box.settings).tokens.create('bench versions')}"}
    health = httpx.get(f"http://127.0.0.1:{box.ports.api}/health", headers=admin, timeout=20).json()[
        "components"
    ]
    out: dict[str, str | None] = {name: c.get("version") for name, c in health.items()}
    out["packer"] = System(box.settings).packer.version()
    return out


def machine() -> dict[str, Any]:
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def run_figures(box: SingleBox, work: Path, langs: list[str], only: str, out: Path) -> dict[str, Any]:
    """Run every figure (or those named in ``only``) on the running stack, saving after each."""
    bs = box.settings
    builder = System(bs).builder
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "versions": versions(box),
    }
    memory = Memory(box, work)  # the three share one measurement
    figures: list[tuple[str, Callable[[], Any]]] = [
        # first: idle is the fresh box, before any other figure's apps have come and gone
        ("platform_idle_mb", memory.platform_idle),
        ("instance_overhead_mb", memory.instance_overhead),
        ("apps_in_1gib", memory.apps_in_1gib),
        ("config_rollback", lambda: bench_config_and_rollback(box, work)),
        ("rolling_deploy", lambda: bench_rolling_deploy(box, work)),
        ("webhook_ack", lambda: bench_webhook_ack(box, work)),
        ("push_to_live", lambda: bench_push_to_live(box, builder, langs, work)),
        ("dockerfile_push_to_live", lambda: bench_dockerfile_push_to_live(box, work)),
        ("build", lambda: bench_build(box, builder, langs, work)),
        ("deploy_recovery_router", lambda: bench_deploy_and_recovery(box, builder, work)),
        ("density", lambda: bench_density(box, work)),
        ("monitoring", lambda: bench_monitoring_overhead(box, work)),
        ("power_cut_to_serving", lambda: bench_power_cut(box, work)),
        # a three-node cluster of its own: a node powered off under load, beside a drain
        ("node_loss", lambda: bench_node_loss(box, work)),
        # domain_to_https and router_tls, on a box of their own (ACME on would redirect every app)
        ("https", lambda: bench_https(box.tools, work)),
        # on the main box; each leaves it as it found it (services deregistered, apps destroyed)
        ("router_scale", lambda: bench_router_scale(box, work)),
        ("router_reloads", lambda: bench_router_reloads(box, work)),
        # addon_create_to_ready and pg_backup_restore_s, on an app of their own, destroyed after
        ("addons", lambda: bench_addons(box, work)),
    ]
    wanted = {f for f in only.split(",") if f}
    for name, run in figures:
        if wanted and name not in wanted:
            continue
        started = time.monotonic()
        try:
            value = run()
        except Exception as exc:  # one broken figure must not lose the others
            console.print(f"[red]figure {name} failed:[/] {exc!r}")
            value = {"error": repr(exc)}
        if name in ("deploy_recovery_router", "https", "addons") and "error" not in value:
            results.update(value)
        else:
            results[name] = value
        results.setdefault("figure_seconds", {})[name] = round(time.monotonic() - started, 1)
        out.write_text(json.dumps(results, indent=2) + "\n")  # partial results survive
    return results


def summary_table(results: dict[str, Any]) -> Table:
    """The figures of one run beside their same-run baselines."""
    table = Table("figure", "value", "baseline (same run)", "ratio", title="Billowin benchmarks")
    try:
        for lang, b in results["build"].items():
            table.add_row(
                f"build {lang} cold",
                f"{b['cold_s']}s",
                f"docker build {b['by_hand_docker_build_cold_s']}s",
                f"{b['cold_over_by_hand']}x",
            )
            table.add_row(
                f"build {lang} warm", f"{b['warm_s']}s", f"cold {b['cold_s']}s", f"{b['warm_over_cold']}x"
            )
        table.add_row(
            "deploy: registered -> serving", f"{results['deploy']['registered_to_serving_s']}s", "", ""
        )
        table.add_row("recovery: kill -> serving", f"{results['recovery']['kill_to_serving_s']}s", "", "")
        ack = results["webhook_ack"]
        idle = ack.get("idle", {})
        table.add_row(
            f"webhook ack p50 / p99, {ack['deliveries']} at once during a build",
            f"{ack['p50_ms']} / {ack['p99_ms']} ms",
            f"idle box {idle.get('p50_ms')} / {idle.get('p99_ms')} ms",
            "",
        )
        for lang, p in results["push_to_live"].items():
            table.add_row(
                f"push -> live {lang}",
                f"cold {p['cold_s']}s, warm {p['warm_s']}s",
                f"by hand cold {p['by_hand_cold_s']}s, warm {p['by_hand_warm_s']}s",
                f"{p['warm_over_by_hand']}x (warm)",
            )
        d = results.get("dockerfile_push_to_live")
        if d and "error" not in d:
            table.add_row(
                "push -> live dockerfile",
                f"cold {d['cold_s']}s, warm {d['warm_s']}s",
                f"docker build by hand cold {d['by_hand_cold_s']}s, warm {d['by_hand_warm_s']}s",
                f"{d['cold_over_by_hand']}x cold, {d['warm_over_by_hand']}x warm",
            )
        c = results["config_rollback"]
        table.add_row("config -> live", f"{c['config_to_live_s']}s", "", "")
        table.add_row("rollback -> live", f"{c['rollback_to_live_s']}s", "", "")
        rd = results["rolling_deploy"]
        table.add_row(
            "rolling deploy under load", f"{rd['failed']} failed of {rd['requests']}", f"p99 {rd['p99']}", ""
        )
        d = results["density"]
        table.add_row(
            "density",
            f"{d['apps_running']} apps",
            f"API {d['billowin_api_rss_mb']} MB RSS",
            f"per app {d['per_app_memory_mb'].get('mean')} MB",
        )
        r = results["router"]
        table.add_row(
            "router req/s",
            f"{r['through_haproxy']['rps']:.0f}",
            f"direct {r['direct_container']['rps']:.0f}",
            f"{r['rps_ratio']}x",
        )
        table.add_row(
            "router p99",
            f"{r['through_haproxy']['p99_ms']}ms",
            f"direct {r['direct_container']['p99_ms']}ms",
            f"{r['p99_ratio']}x",
        )
        m = results["monitoring"]
        table.add_row(
            f"monitoring: API CPU, {m['apps']} apps",
            f"{m['on']['api_cpu_percent']}% of a core",
            f"collector off {m['off']['api_cpu_percent']}%",
            f"+{m['api_cpu_percent_added']} points",
        )
        table.add_row(
            "monitoring: API memory",
            f"{m['on']['api_rss_mib']} MiB",
            f"collector off {m['off']['api_rss_mib']} MiB",
            f"+{m['api_rss_mib_added']} MiB",
        )
        pc = results["power_cut_to_serving"]
        table.add_row(
            f"power cut -> {pc['apps']} apps serving",
            f"{max(pc['power_cut_to_serving_s'])}s",
            f"clean restart {max(pc['clean_restart_to_serving_s'])}s",
            f"{pc['cut_over_clean']}x",
        )
    except (KeyError, TypeError, AttributeError) as exc:  # a figure that failed
        console.print(f"[yellow]table incomplete:[/] missing {exc}")
    if (nl := results.get("node_loss")) and "error" not in nl:  # a run of --only node_loss has it alone
        table.add_row(
            "node powered off under load (3 nodes)",
            f"{nl['node_loss_failed_requests']} failed of {nl['node_loss_requests']}, "
            f"capacity in {nl['node_loss_to_capacity_s']}s",
            f"nodes:drain {nl['drain_failed_requests']} failed, {nl['drain_to_capacity_s']}s",
            f"{nl['loss_over_drain_s']}x",
        )
    https_rows(table, results)  # on their own box: a run of --only https has these alone
    router_rows(table, results)  # a run of --only router_scale,router_reloads has these alone
    memory_rows(table, results)  # and --only platform_idle_mb,instance_overhead_mb,apps_in_1gib
    addon_rows(table, results)  # and --only addons
    return table


def https_rows(table: Table, results: dict[str, Any]) -> None:
    try:
        h = results["domain_to_https"]
        table.add_row(
            f"domains:add -> HTTPS 200 ({h['runs']} domains)",
            f"{h['median_s']}s ({h['min_s']}-{h['max_s']}s)",
            f"bare ACME order {h['bare_order_median_s']}s",
            f"{h['median_over_bare_order']}x",
        )
    except (KeyError, TypeError, AttributeError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")
    try:
        t = results["router_tls"]
        table.add_row(
            "router HTTPS req/s",
            f"{t['https']['rps']:.0f}",
            f"plain HTTP {t['plain_http']['rps']:.0f}",
            f"{t['rps_ratio']}x",
        )
        table.add_row(
            "router HTTPS p50 / p99",
            f"{t['https']['p50_ms']} / {t['https']['p99_ms']} ms",
            f"plain HTTP {t['plain_http']['p50_ms']} / {t['plain_http']['p99_ms']} ms",
            f"{t['p50_ratio']}x / {t['p99_ratio']}x",
        )
    except (KeyError, TypeError, AttributeError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")


def router_rows(table: Table, results: dict[str, Any]) -> None:
    try:
        for count, f in results["router_scale"]["apps"].items():
            if "error" in f:  # a count the router could not reach
                table.add_row(f"router, {count} apps", "failed", f["error"][:100], "")
                continue
            r, p, n = f["router"], f["haproxy_plain"], f["nginx_per_app"]
            table.add_row(
                f"router, {count} apps: req/s (p50 / p99)",
                f"{r['rps']:.0f} ({r['p50_ms']} / {r['p99_ms']} ms)",
                f"plain HAProxy {p['rps']:.0f}, nginx per app {n['rps']:.0f}",
                f"{f['router_over_plain_rps']}x plain, {f['router_over_nginx_rps']}x nginx",
            )
            table.add_row(
                f"router, {count} apps: HAProxy CPU per request",
                f"{r['cpu_us_per_request']} us",
                f"plain HAProxy {p['cpu_us_per_request']} us, nginx per app {n['cpu_us_per_request']} us",
                f"{f['router_over_plain_cpu']}x plain",
            )
    except (KeyError, TypeError, AttributeError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")
    try:
        rr = results["router_reloads"]
        table.add_row(
            f"router reloads, {rr['apps']} apps: new image to each / scale 1->3->1",
            f"{rr['new_image_deploys']['reloads']} / {rr['scale_to_3_and_back_to_1']['reloads']}",
            f"first deploys {rr['first_deploys']['reloads']}, destroy {rr['destroy']['reloads']}",
            "",
        )
    except (KeyError, TypeError, AttributeError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")


def memory_rows(table: Table, results: dict[str, Any]) -> None:
    def top(parts: dict[str, Any], n: int = 3) -> str:
        return ", ".join(
            f"{name} {v['pss_mib'] if isinstance(v, dict) else v}" for name, v in list(parts.items())[:n]
        )

    try:
        p = results["platform_idle_mb"]
        table.add_row(
            f"platform at idle, PSS ({p['platform_processes']} processes)",
            f"{p['platform_pss_mib']} MiB",
            top(p["platform_breakdown"]),
            f"distinct pages {p['platform_distinct_pages_mib']} MiB",
        )
    except (KeyError, TypeError, AttributeError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")
    try:
        o = results["instance_overhead_mb"]
        counts = list(o["overhead_mib_per_instance"])
        last = o["instances"][counts[-1]]
        table.add_row(
            f"platform PSS per app instance, {' / '.join(counts)} apps",
            " / ".join(f"{v}" for v in o["overhead_mib_per_instance"].values()) + " MiB",
            f"app's own PSS {' / '.join(str(v) for v in o['app_own_pss_mib_median'].values())} MiB (median)",
            top(last["overhead_by_component_mib_per_instance"]),
        )
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")
    try:
        a = results["apps_in_1gib"]
        table.add_row(
            "small apps in 1 GiB, everything counted",
            f"{a['apps']} apps",
            f"(1024 - {a['platform_idle_pss_mib']}) / ({a['overhead_mib_per_instance']} + "
            f"{a['app_own_pss_mib_median']}) MiB",
            f"distinct pages: {a['distinct_pages']['apps']} apps",
        )
    except (KeyError, TypeError, AttributeError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")


def addon_rows(table: Table, results: dict[str, Any]) -> None:
    try:
        created = results["addon_create_to_ready"]
        for kind in ("postgres", "redis"):
            c = created[kind]
            table.add_row(
                f"addons:create {kind} {c['version']} -> ready and linked (warm image)",
                f"{c['create_to_ready_s']}s ({c['min_s']}-{c['max_s']}s)",
                f"hand Nomad job, same image and check {c['hand_nomad_job_s']}s",
                f"{c['over_hand_nomad_job']}x",
            )
    except (KeyError, TypeError, AttributeError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")
    try:
        b = results["pg_backup_restore_s"]
        h = b["by_hand_docker_exec"]
        table.add_row(
            f"pg backup + restore, {b['database_mib']} MiB database ({b['dump_mib']} MiB dump)",
            f"{b['pg_backup_restore_s']}s (capture {b['capture_s']}s, restore {b['restore_s']}s)"
            + ("" if b["verified"] else ", NOT verified"),
            f"docker exec pg_dump {h['pg_dump_s']}s + pg_restore {h['pg_restore_s']}s",
            f"{b['over_by_hand']}x",
        )
    except (KeyError, TypeError, AttributeError) as exc:
        console.print(f"[yellow]table incomplete:[/] missing {exc}")


def main(argv: list[str] | None = None) -> int:
    # A SIGTERM (Ctrl-C's cousin from `timeout` or CI) still tears the stack down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--languages", default="python,node,go,ruby")
    parser.add_argument("--out", type=Path, default=None, help="where the results go")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated figure names, e.g. webhook_ack; https: domain_to_https and router_tls; "
        "addons: addon_create_to_ready and pg_backup_restore_s; router_scale needs nginx",
    )
    args = parser.parse_args(argv)
    out: Path = args.out or (SCRATCH if args.only else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    tools = Toolset.resolve(settings)
    with tempfile.TemporaryDirectory(prefix="billowin-bench-") as tmp:
        work = Path(tmp)
        box = SingleBox(
            tools, Ports.free(), work / "stack", api_env={"BILLOWIN_GITHUB_WEBHOOK_SECRET": SECRET}
        )
        with box.running(lambda msg: console.print(f"  {msg}")):
            results = run_figures(box, work, args.languages.split(","), args.only, out)
    Console().print(summary_table(results))
    console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
