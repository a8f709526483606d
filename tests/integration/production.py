"""A production box for the tests that need one: durable state, ACLs, its own Docker Engine.

Each test module starts its own box under a temporary root, on free ports, with a Docker
Engine of its own (so a power cut can kill it without touching the session's engine). App
images are built with the session's engine and pushed to the box's registry. ``World`` puts
three apps on a box the way a user would, through the API with an admin token, and
``observe`` reads back everything a user would expect to find after a crash or a restore.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

from billowin.adapters.docker import registry_auth
from billowin.settings import Settings
from billowin.stack.acl import nomad_client
from billowin.stack.production import ProductionBox
from billowin.stack.single_box import Ports
from billowin.stack.tools import Toolset
from billowin.system import System

from .conftest import STARTS, wait_for

DOMAIN = "prod.test"
TERMINAL = {"live", "failed", "superseded"}


def new_box(root: Path, **api_env: str) -> ProductionBox:
    tools = Toolset.resolve(Settings())  # fails (never skips) when a binary is missing
    return ProductionBox(
        tools,
        root,
        domain=DOMAIN,
        public_address="127.0.0.1",
        ports=Ports.free(),
        own_docker=True,
        # No CA is reachable from a test box: it keeps plain HTTP (the HTTPS tests use pebble).
        api_env={
            "BILLOWIN_DEPLOY_TIMEOUT": "120",
            "BILLOWIN_METRICS_INTERVAL": "2",
            "BILLOWIN_ACME_AUTO": "false",
            **api_env,
        },
    )


@contextlib.contextmanager
def running(box: ProductionBox) -> Iterator[ProductionBox]:
    """The box, started; then stopped, with nothing of it left on the host (see ``tidy``)."""
    bridges: list[str] = []
    try:
        box.start()
        bridges = box_bridges(box)
        yield box
    finally:
        box.stop()
        tidy(box, bridges)


def tidy(box: ProductionBox, bridges: list[str]) -> None:
    """Remove what a stopped box leaves on the host: its engine's bridges and its mounts.

    A stopped engine leaves its networks' bridges on the host, and an engine run with
    ``--iptables=false`` beside others takes each network from Docker's default pools (31 of
    them) only when no interface of the host uses that range yet: every box started under a
    new temporary root would take two ranges for good, until no box could make its networks.
    A stopped Nomad keeps its allocations' secrets directories mounted (to recover them).
    """
    for bridge in [*bridges, box.engine_bridge]:
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
    unmount_under(box.root)


def push_image(
    session_settings: Settings, base_image: str, box: ProductionBox, app: str, tag: str, context: Path
) -> str:
    """Build a sample release with the session's engine and push it to the box's registry."""
    settings = session_settings.model_copy(update={"registry": f"127.0.0.1:{box.ports.registry}"})
    return push_sample(settings, base_image, app, tag, context)


def push_sample(
    settings: Settings, base_image: str, app: str, tag: str, context: Path, greeting: str = "hello"
) -> str:
    """Build a sample release (``STARTS['ok']``) with ``settings``' engine and push it to its
    registry (with that registry's credentials, if it has any)."""
    docker = System(settings).docker
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN mkdir -p /srv/www\nENV GREETING={greeting}\n"
        f"CMD {json.dumps(['sh', '-c', STARTS['ok']])}\n"
    )
    ref = f"{settings.registry}/{app}:{tag}"
    docker.build(context, ref)
    docker.push(ref)
    return ref


def copy_image(session_settings: Settings, ref: str, registry: str) -> str:
    """``ref`` (an image in the session's registry) tagged into ``registry`` and pushed there.

    The session's engine may no longer hold ``ref`` (image clean-up runs in other tests), so it
    is pulled from the session's registry first when it is missing."""
    engine = docker.DockerClient(base_url=session_settings.docker_host)
    repository, _, tag = ref.rpartition(":")
    try:
        image = engine.images.get(ref)
    except docker.errors.ImageNotFound:
        image = engine.images.pull(repository, tag=tag, auth_config=registry_auth(session_settings))
    target = f"{registry}/{ref.split('/', 1)[1]}"
    target_repository, _, target_tag = target.rpartition(":")
    image.tag(target_repository, target_tag)
    System(session_settings.model_copy(update={"registry": registry})).docker.push(target)
    return target


def api_client(box: ProductionBox, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{box.ports.api}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def router_client(box: ProductionBox) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{box.ports.router_http}", timeout=5)


def finished(api: httpx.Client, app: str, job: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    """Follow a queued rollout (long-polls, like `deploy --wait`) until it ends."""
    deadline = time.monotonic() + timeout
    while job["state"] not in TERMINAL:
        assert time.monotonic() < deadline, f"job {job['id']} still {job['state']}: {job['steps'][-1]}"
        try:
            resp = api.get(f"/apps/{app}/deploys/{job['id']}", params={"wait": 10, "seen": len(job["steps"])})
        except httpx.TransportError:  # the API is restarting
            time.sleep(0.5)
            continue
        if resp.status_code != 200:
            time.sleep(0.5)
            continue
        job = resp.json()
    return job


def live(api: httpx.Client, app: str, job: dict[str, Any]) -> dict[str, Any]:
    done = finished(api, app, job)
    assert done["state"] == "live", (done["reason"], done["steps"][-3:])
    return done


def page(router: httpx.Client, host: str) -> str:
    try:
        resp = router.get("/", headers={"Host": host})
    except httpx.TransportError as exc:
        return f"transport error {exc}"
    return resp.text if resp.status_code == 200 else f"HTTP {resp.status_code}"


@dataclass
class World:
    """Three apps, as a user leaves them: ``a`` with config vars and two releases, ``b`` with a
    custom domain, ``c`` plain; plus the admin token the tests drive the API with."""

    box: ProductionBox
    token: str
    a: str
    b: str
    c: str
    images: dict[str, str]

    @property
    def apps(self) -> list[str]:
        return [self.a, self.b, self.c]

    @property
    def domain_of_b(self) -> str:
        return f"www.{self.b}.example"

    def hosts(self) -> dict[str, str]:
        return {
            self.a: f"{self.a}.{DOMAIN}",
            self.b: self.domain_of_b,
            self.c: f"{self.c}.{DOMAIN}",
        }


def populate(
    box: ProductionBox, session_settings: Settings, base_image: str, work: Path, prefix: str
) -> World:
    token = System(box.settings).tokens.create(f"{prefix} admin")
    names = [f"{prefix}a", f"{prefix}b", f"{prefix}c"]
    images = {name: push_image(session_settings, base_image, box, name, "v1", work / name) for name in names}
    world = World(box, token, *names, images=images)
    with api_client(box, token) as api:
        for name in names:
            resp = api.post("/apps", json={"name": name, "repository": "/nonexistent"})
            assert resp.status_code == 201, resp.text
        # Each app has its own pipeline worker: the three roll out at once.
        deploys = {
            name: _accepted(api.post(f"/apps/{name}/deploys", json={"image": images[name]})) for name in names
        }
        for name, job in deploys.items():
            live(api, name, job)
        # a: config vars (a second release), b: a custom domain (its second release).
        changed = api.patch(f"/apps/{world.a}/config", json={"set": {"GREETING": "bonjour"}})
        added = api.post(f"/apps/{world.b}/domains", json={"domain": world.domain_of_b})
        live(api, world.a, _accepted(changed)["job"])
        live(api, world.b, _accepted(added))
    settle(world, {world.a: "bonjour release=v2", world.b: "hello release=v2", world.c: "hello release=v1"})
    return world


def settle(world: World, expected: dict[str, str], times: int = 5) -> None:
    """Wait until each app serves only its newest release (its old instance has drained)."""
    with router_client(world.box) as router:
        for app, host in world.hosts().items():
            want = expected[app]

            def only_newest(host: str = host, want: str = want) -> bool:
                return all(page(router, host).startswith(want) for _ in range(times))

            wait_for(only_newest, 60, f"{host} to serve only {want}")


def _accepted(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 202, resp.text
    job: dict[str, Any] = resp.json()
    return job


def observe(world: World) -> dict[str, Any]:
    """What a user sees of the world: each app's page, releases, domains and config, and the tokens."""
    seen: dict[str, Any] = {}
    with api_client(world.box, world.token) as api, router_client(world.box) as router:
        for app in world.apps:
            releases = api.get(f"/apps/{app}/releases")
            assert releases.status_code == 200, releases.text
            config = api.get(f"/apps/{app}/config", params={"reveal": "true"})
            assert config.status_code == 200, config.text
            seen[app] = {
                "page": answer(router, world.hosts()[app]).split(" alloc=")[0],
                "releases": [
                    (r["number"], r["image"], r["config_version"], r["status"]) for r in releases.json()
                ],
                "domains": api.get(f"/apps/{app}/domains").json(),
                "config": config.json()["values"],
            }
        tokens = api.get("/tokens")
        assert tokens.status_code == 200, tokens.text
        seen["tokens"] = sorted(t["id"] for t in tokens.json())
    return seen


def answer(router: httpx.Client, host: str) -> str:
    """The page at ``host``; a 503 is a moment without a passing health check on a slow
    machine, so look again, as a user would, for up to 30 s."""
    text: str = wait_for(lambda: (t := page(router, host)) != "HTTP 503" and t, 30, f"{host} to answer")
    return text


def all_serving(world: World) -> bool:
    """Does every app answer through the router with its own page?"""
    with router_client(world.box) as router:
        return all(
            page(router, host).startswith("hello") or page(router, host).startswith("bonjour")
            for host in world.hosts().values()
        )


def wait_all_serving(world: World, timeout: float) -> float:
    """Seconds until every app answers through the router; after ``timeout``, fails with what
    each app answered and what Nomad says of its instances."""
    start = time.monotonic()
    try:
        wait_for(lambda: all_serving(world), timeout, "every app to answer through the router")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{serving_report(world)}") from None
    return time.monotonic() - start


def serving_report(world: World) -> str:
    """What each app answers through the router, and its allocations' states, for a failure."""
    lines = []
    with router_client(world.box) as router:
        for app, host in world.hosts().items():
            lines.append(f"  {app} ({host}): {page(router, host)[:200]!r}")
    try:
        box = world.box
        nomad = nomad_client(f"http://127.0.0.1:{box.ports.nomad_http}", box.secrets.get("nomad-bootstrap"))
        for app in world.hosts():
            for alloc in nomad.job.get_allocations(app):
                events = [
                    e.get("DisplayMessage", "")
                    for state in (alloc.get("TaskStates") or {}).values()
                    for e in (state.get("Events") or [])[-3:]
                ]
                lines.append(
                    f"  {app} alloc {alloc['ID'][:8]}: {alloc['ClientStatus']} "
                    f"(desired {alloc['DesiredStatus']}); last events: {events}"
                )
    except Exception as exc:  # the report must not hide the failure it reports
        lines.append(f"  (Nomad's allocations unreadable: {exc})")
    return "\n".join(lines)


# -- a power cut ----------------------------------------------------------------------
def box_pids(box: ProductionBox) -> list[int]:
    """Every process of the box: each supervised process's group, Docker's shims and the apps' containers.

    Found through /proc: a process belongs to the box when its command line names the box's
    root (the root is a unique temporary directory), or when it descends from one that does.
    """
    root = str(box.root)
    parents: dict[int, int] = {}
    ours: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if root in cmdline:
            ours.add(pid)
    for proc in box.plan():
        if (pid := proc.pid()) is not None:
            ours.add(pid)
    changed = True
    while changed:  # descendants: Nomad's executors and loggers, the containers' processes
        changed = False
        for pid, ppid in parents.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                changed = True
    ours.discard(os.getpid())
    return sorted(ours)


def power_cut(box: ProductionBox) -> int:
    """SIGKILL every process of the box at once, as a power cut would; returns how many."""
    pids = box_pids(box)
    assert pids, "the box has no processes"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for proc in box.processes:  # our children: reap them, or their zombies would look alive
        proc.reap()
    wait_for(lambda: not any(_alive(pid) for pid in pids), 30, "every killed process to be gone")
    box.processes.clear()
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- one app, and a box that leaves no bridge behind ---------------------------------
def put_app(
    box: ProductionBox,
    session_settings: Settings,
    base_image: str,
    work: Path,
    token: str,
    name: str,
    config: dict[str, str] | None = None,
) -> str:
    """One app, live through the API with the sample release (then ``config`` set, its second
    release); returns its image."""
    image = push_image(session_settings, base_image, box, name, "v1", work / name)
    with api_client(box, token) as api:
        resp = api.post("/apps", json={"name": name, "repository": "/nonexistent"})
        assert resp.status_code == 201, resp.text
        live(api, name, _accepted(api.post(f"/apps/{name}/deploys", json={"image": image})))
        if config:
            live(api, name, _accepted(api.patch(f"/apps/{name}/config", json={"set": config}))["job"])
    return image


def box_bridges(box: ProductionBox) -> list[str]:
    """The host's bridge interfaces of the box's own engine's networks (``br-<id>``)."""
    proc = subprocess.run(
        ["docker", "network", "ls", "--quiet", "--no-trunc", "--filter", "driver=bridge"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DOCKER_HOST": box.docker_host},
    )
    return [f"br-{network_id[:12]}" for network_id in proc.stdout.split()]


running_tidily = running  # the name some tests use


# -- what a stopped box leaves mounted -----------------------------------------------
def mounts_under(path: Path) -> list[str]:
    """Mount points under ``path``, deepest first (Nomad's alloc secrets, Docker's overlays)."""
    prefix = str(path.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def unmount_under(path: Path) -> None:
    """Unmount what the box's Nomad and Docker left mounted under ``path``: a stopped Nomad
    keeps its allocations' secrets directories mounted, as it must to recover them."""
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    assert not mounts_under(path), mounts_under(path)


def wipe(path: Path) -> None:
    """Delete ``path`` whole, as a dead disk would lose it (after unmounting what is under it)."""
    unmount_under(path)
    shutil.rmtree(path)
