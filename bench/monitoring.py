"""What monitoring costs: the API's CPU and memory with the collector on and off, 20 apps running.

    .venv/bin/python -m bench.monitoring [--apps 20] [--window 90] [--rps 100]

Starts its own stack on free ports (as ``make bench`` does), deploys ``--apps``
small web apps, and sends a steady ``--rps`` of requests spread over all of
them through HAProxy (so the access-log path works as hard as it would). The
API is then run twice, same stack, same apps, same traffic: once with
``BILLOWIN_MONITORING=false`` (the baseline), once with the collector on at its
default interval. For each run, after a warm-up, it reads the API process's CPU
time (``/proc/<pid>/stat``) over ``--window`` seconds and its resident memory at
the end, plus Nomad's and Consul's CPU (the collector's queries cost them too).
``make bench`` includes this figure; it is never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from billowin.release.jobspec import Process
from billowin.settings import Settings
from billowin.stack.install import base_image_tag
from billowin.stack.single_box import Ports, SingleBox
from billowin.stack.tools import Toolset
from billowin.system import System

console = Console(stderr=True)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class Traffic:
    """A steady request rate, round-robin over the apps' hostnames, for a ``with`` block."""

    def __init__(self, router: str, hosts: list[str], rps: float) -> None:
        self.router, self.hosts, self.rps = router, hosts, rps
        self.sent = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            started, n = time.monotonic(), 0
            while not self._stop.is_set():
                host = self.hosts[n % len(self.hosts)]
                try:
                    ok = client.get(self.router, headers={"Host": host}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.sent += 1
                self.failed += 0 if ok else 1
                n += 1
                self._stop.wait(max(0.0, started + n / self.rps - time.monotonic()))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _pid(box: SingleBox, name: str) -> int:
    proc = next(p for p in box.processes if p.name == name)
    pid = proc.pid()
    assert pid is not None, f"{name} is not running"
    return pid


def _restart_api(box: SingleBox, *, monitoring: bool) -> None:
    proc = next(p for p in box.processes if p.name == "api")
    proc.env = {**proc.env, "BILLOWIN_MONITORING": "true" if monitoring else "false"}
    box.restart("api")


def _sample_image(settings: Settings, work: Path) -> str:
    context = work / "monitoring-bench-image"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(
        f"FROM {base_image_tag(Settings(registry=settings.registry))}\n"
        "RUN mkdir -p /srv/www && echo ok > /srv/www/index.html\n"
        'CMD ["sh", "-c", "exec busybox httpd -f -p \\"$PORT\\" -h /srv/www"]\n'
    )
    ref = f"{settings.registry}/bmon:{uuid.uuid4().hex[:8]}"
    docker = System(settings).docker
    docker.build(context, ref)
    docker.push(ref)
    return ref


def _cycle_stats(api: str, token: str) -> dict[str, float]:
    text = httpx.get(f"{api}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            stem, _, part = sample.name.rpartition("_")
            if stem == "billowin_monitoring_cycle_seconds" and part in ("sum", "count"):
                out[part] = sample.value
    return out


def bench_monitoring_overhead(
    box: SingleBox, work: Path, *, apps: int = 20, window: float = 90, rps: float = 100, warmup: float = 25
) -> dict[str, Any]:
    """API CPU and RSS with the collector off, then on; same stack, apps and traffic."""
    settings = box.settings
    image = _sample_image(settings, work)
    names = [f"bmon{uuid.uuid4().hex[:6]}" for _ in range(apps)]
    deployer = System(settings).deployer
    router = f"http://127.0.0.1:{box.ports.router_http}/"
    api = f"http://127.0.0.1:{box.ports.api}"
    hosts = [f"{name}.{settings.domain}" for name in names]
    console.print(f"  monitoring: deploying {apps} apps")
    web = [Process(name="web", cpu=20, memory=32)]
    try:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda n: deployer.deploy(n, image, web).status.value, names))
        if set(statuses) != {"live"}:
            raise RuntimeError(f"not every bench app went live: {statuses}")
        deadline = time.monotonic() + 120
        while not all(_answers(router, h) for h in hosts):
            if time.monotonic() > deadline:
                raise TimeoutError("the bench apps are not all served")
            time.sleep(0.5)
        token = System(settings).tokens.create("monitoring bench")
        runs: dict[str, Any] = {}
        for mode in ("off", "on"):
            _restart_api(box, monitoring=mode == "on")
            with Traffic(router, hosts, rps) as traffic:
                time.sleep(warmup)  # a measurement window, not a wait for a condition
                pids = {name: _pid(box, name) for name in ("api", "nomad", "consul")}
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                started = time.monotonic()
                time.sleep(window)
                elapsed = time.monotonic() - started
                after = {name: cpu_seconds(pid) for name, pid in pids.items()}
                rss = rss_mib(pids["api"])
            run = {
                f"{name}_cpu_percent": round((after[name] - before[name]) / elapsed * 100, 2) for name in pids
            }
            run |= {"api_rss_mib": rss, "requests": traffic.sent, "failed_requests": traffic.failed}
            if mode == "on":
                cycles = _cycle_stats(api, token)
                if cycles.get("count"):
                    run["collection_ms_avg"] = round(cycles["sum"] / cycles["count"] * 1000, 1)
                    run["collections"] = int(cycles["count"])
            runs[mode] = run
            console.print(f"  monitoring {mode}: {run}")
        store = box.state_dir / "monitoring.sqlite3"
        return {
            "apps": apps,
            "window_s": window,
            "traffic_rps": rps,
            "interval_s": Settings().metrics_interval,
            "off": runs["off"],
            "on": runs["on"],
            "api_cpu_percent_added": round(runs["on"]["api_cpu_percent"] - runs["off"]["api_cpu_percent"], 2),
            "api_rss_mib_added": round(runs["on"]["api_rss_mib"] - runs["off"]["api_rss_mib"], 1),
            "store_kib": round(store.stat().st_size / 1024, 1) if store.exists() else 0,
        }
    finally:
        nomad = System(settings).nomad
        for name in names:
            nomad.stop(name)


def _answers(url: str, host: str) -> bool:
    try:
        return httpx.get(url, headers={"Host": host}, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--window", type=float, default=90)
    parser.add_argument("--rps", type=float, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    tools = Toolset.resolve(Settings())
    with tempfile.TemporaryDirectory(prefix="billowin-bench-") as tmp:
        work = Path(tmp)
        box = SingleBox(tools, Ports.free(), work / "stack")
        with box.running(lambda msg: console.print(f"  {msg}")):
            result = bench_monitoring_overhead(box, work, apps=args.apps, window=args.window, rps=args.rps)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
