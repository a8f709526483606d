"""Run: releases become Nomad jobs, routed by stable names, with zero-downtime deploys.

Everything here goes through the real Nomad, Consul, consul-template, HAProxy
and Docker of the session's stack.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import docker
import httpx

from billowin.apps.store import App
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.store import Release, ReleaseStatus
from billowin.router.reload import servers_per_app
from billowin.stack.single_box import SingleBox
from billowin.system import System

from .conftest import Load, wait_for

WEB = [Process(name="web")]
# A bad release is given up on sooner than the defaults, to keep the suite quick.
IMPATIENT = {"healthy_deadline": "15s", "progress_deadline": "20s"}


def get(router: httpx.Client, app: str) -> httpx.Response:
    return router.get("/", headers={"Host": f"{app}.localhost"})


def serving(router: httpx.Client, app: str, text: str) -> bool:
    resp = get(router, app)
    return resp.status_code == 200 and resp.text.startswith(text)


def deploy_live(deployer: Deployer, make_image, router: httpx.Client, app: str, greeting: str) -> Release:  # type: ignore[no-untyped-def]
    """Deploy a new release of the sample image and wait until the router serves it."""
    release = deployer.deploy(app, make_image(app, f"r{uuid.uuid4().hex[:6]}", greeting=greeting), WEB)
    assert release.status == ReleaseStatus.LIVE, release.description
    wait_for(
        lambda: serving(router, app, f"{greeting} release={release.name}"), 30, f"{release.name} to be served"
    )
    return release


def test_deploy_routes_by_name_and_scaling_balances_across_instances(
    stack: SingleBox, make_image, deployer: Deployer, app_name: str, router: httpx.Client, cleanup_apps
) -> None:
    cleanup_apps.append(app_name)
    image = make_image(app_name, "v1", greeting="scaled")
    started = time.monotonic()
    release = deployer.deploy(app_name, image, WEB, domains=[f"www.{app_name}.example.com"])
    assert release.status == ReleaseStatus.LIVE, release.description
    wait_for(lambda: serving(router, app_name, "scaled release=v1"), 30, "v1 to be served")
    print(f"deploy: job registered -> serving in {time.monotonic() - started:.1f}s")

    # Custom domains are routed too.
    resp = router.get("/", headers={"Host": f"www.{app_name}.example.com"})
    assert resp.status_code == 200 and resp.text.startswith("scaled")

    # Scale web to 3: three healthy instances, and the router spreads requests over all of them.
    deployer.nomad.scale(app_name, "web", 3)
    assert len(System(stack.settings).catalog.wait_for_healthy(app_name, count=3, timeout=60)) == 3

    def allocs_seen() -> set[str]:
        seen = set()
        for _ in range(30):
            resp = get(router, app_name)
            if resp.status_code == 200:
                seen.add(resp.text.split("alloc=")[1].strip())
        return seen if len(seen) == 3 else set()

    assert len(wait_for(allocs_seen, 30, "requests to reach all 3 instances")) == 3

    # The scale survives the next deploy, as on Heroku.
    release2 = deployer.deploy(app_name, make_image(app_name, "v2", greeting="scaled"), WEB)
    assert release2.status == ReleaseStatus.LIVE, release2.description
    assert [p.count for p in release2.processes] == [3]


def test_a_killed_instance_is_restarted_and_served_again(
    stack: SingleBox, make_image, deployer: Deployer, app_name: str, router: httpx.Client, cleanup_apps
) -> None:
    cleanup_apps.append(app_name)
    deploy_live(deployer, make_image, router, app_name, "sturdy")

    engine = docker.DockerClient(base_url=stack.settings.docker_host)
    try:
        (container,) = engine.containers.list(filters={"label": f"billowin.app={app_name}"})
        container.kill()
    finally:
        engine.close()
    killed = time.monotonic()

    wait_for(lambda: serving(router, app_name, "sturdy"), 60, "the app to be served again after the kill")
    print(f"recovery: docker kill -> serving again in {time.monotonic() - killed:.1f}s")
    (alloc,) = [a for a in deployer.nomad.allocations(app_name) if a["ClientStatus"] == "running"]
    assert alloc["TaskStates"]["web"]["Restarts"] >= 1  # Nomad restarted it in place


def router_reloads(stack: SingleBox) -> int:
    """How often the router's reload step has reloaded HAProxy (it says so in consul-template's log)."""
    log = (stack.state_dir / "consul-template.log").read_text(errors="replace")
    return log.count("and reloaded HAProxy")


def router_quiet(stack: SingleBox, quiet_for: float = 3.0) -> None:
    """Wait until the live router configuration has not changed for ``quiet_for`` seconds (an
    earlier test's app still going away re-renders it)."""
    live = stack.router_dir / "haproxy.cfg"
    text, since = live.read_bytes(), time.monotonic()

    def settled() -> bool:
        nonlocal text, since
        if (now := live.read_bytes()) != text:
            text, since = now, time.monotonic()
        return time.monotonic() - since >= quiet_for

    wait_for(settled, 60, "the router configuration to settle")


def test_a_rollout_under_constant_load_fails_no_request_and_reloads_nothing(
    stack: SingleBox, make_image, deployer: Deployer, app_name: str, router: httpx.Client, cleanup_apps
) -> None:
    """Instances come and go (a rolling deploy, scaling up and down) without a reload: HAProxy
    resolves them from Consul's DNS."""
    cleanup_apps.append(app_name)
    deploy_live(deployer, make_image, router, app_name, "blue")
    green = make_image(app_name, "v2", greeting="green")
    router_quiet(stack)
    reloads = router_reloads(stack)

    with Load(stack, f"{app_name}.localhost") as load:
        time.sleep(1)  # some traffic on v1 before the rollout starts
        release = deployer.deploy(app_name, green, WEB)
        assert release.status == ReleaseStatus.LIVE, release.description
        wait_for(lambda: serving(router, app_name, "green"), 30, "v2 to be served")
        time.sleep(8)  # and traffic while the old instance drains and stops
        catalog = System(stack.settings).catalog
        deployer.nomad.scale(app_name, "web", 3)
        catalog.wait_for_healthy(app_name, count=3, timeout=60)
        # Nomad refuses to scale while the scale-up's deployment runs.
        assert deployer.nomad.wait_for_deployment(app_name, timeout=120).status == "successful"
        deployer.nomad.scale(app_name, "web", 1)
        wait_for(lambda: len(catalog.healthy_instances(app_name)) == 1, 60, "back to 1 instance")
        time.sleep(3)  # traffic while the two instances scaled away drain and stop
    assert router_reloads(stack) == reloads, "an instance moving reloaded HAProxy"
    result = load.result
    print(f"rolling deploy under load: {result}")
    assert result["failures"] == {}, result
    assert result["bodies"].get("blue release=v1", 0) > 0 and result["bodies"].get("green release=v2", 0) > 0
    assert result["total"] > 50


def test_a_bad_release_fails_auto_reverts_and_the_previous_one_keeps_serving(
    stack: SingleBox, make_image, deployer: Deployer, app_name: str, router: httpx.Client, cleanup_apps
) -> None:
    cleanup_apps.append(app_name)
    good = deploy_live(deployer, make_image, router, app_name, "good")

    with Load(stack, f"{app_name}.localhost") as load:
        crash = make_image(app_name, "crash", kind="crash")
        crashing = deployer.deploy(app_name, crash, WEB, deadlines=IMPATIENT, timeout=150)
        unhealthy = deployer.deploy(
            app_name, make_image(app_name, "sick", kind="unhealthy"), WEB, timeout=150
        )
    for bad in (crashing, unhealthy):
        assert bad.status == ReleaseStatus.FAILED, bad
        assert bad.description  # Nomad's reason, e.g. "Failed due to unhealthy allocations"
    # Nomad rolled the job back to the good release...
    job = System(stack.settings).nomad.current(app_name)
    assert job is not None and job["Meta"]["billowin.release"] == good.name
    assert job["Stable"] is True
    # ...and it served every request throughout, never the bad instances.
    assert load.result["failures"] == {}, load.result
    assert set(load.result["bodies"]) == {"good release=v1"}, load.result
    history = deployer.releases.list(app_name)
    assert [(r.name, r.status) for r in history] == [("v1", "live"), ("v2", "failed"), ("v3", "failed")]
    # What the crashed instances printed is still there for `billowin logs`: their containers
    # stay (with Docker's copy of their output) after Nomad gave up on them.
    said = [line for line in System(stack.settings).logs.stream(app_name, lines=200)]
    boom = [line for line in said if "boom: cannot connect to the database" in line.text]
    assert boom and {line.stream for line in boom} == {"stderr"}, [line.render() for line in said]
    assert [line.at for line in said] == sorted(line.at for line in said)  # one stream, in time order
    # Once they have been stopped for longer than BILLOWIN_KEEP_STOPPED_CONTAINERS, the clean-up
    # removes those containers, and their lines with them; the running instance stays.
    system = System(stack.settings)
    assert system.docker.remove_exited(label=f"billowin.app={app_name}", finished_before=time.time() + 1) >= 1
    after = [line.text for line in system.logs.stream(app_name, lines=200)]
    assert not [text for text in after if "boom" in text]
    assert serving(router, app_name, "good")


def test_restarting_consul_never_breaks_or_empties_the_router(
    stack: SingleBox, make_image, deployer: Deployer, app_name: str, router: httpx.Client, cleanup_apps
) -> None:
    cleanup_apps.append(app_name)
    deploy_live(deployer, make_image, router, app_name, "steady")

    live = stack.router_dir / "haproxy.cfg"
    seen: dict[str, int] = {}  # every distinct live config, and how many servers it gave the app
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            text = live.read_text()
            seen.setdefault(text, servers_per_app(text).get(app_name, 0))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with Load(stack, f"{app_name}.localhost") as load:
            stack.restart("consul")
            # Nomad re-registers the service in the new (empty, -dev) Consul.
            System(stack.settings).catalog.wait_for_healthy(app_name, count=1, timeout=120)
            wait_for(lambda: serving(router, app_name, "steady"), 30, "the app to be served")
            time.sleep(5)  # consul-template renders from the repopulated catalog
    finally:
        stop.set()
        watcher.join()

    assert all(servers > 0 for servers in seen.values()), "a live config lost the app's instances"
    for text in seen:
        candidate = stack.router_dir / "check.cfg"
        candidate.write_text(text)
        assert System(stack.settings).router.check_config(candidate) is None
    assert load.result["failures"] == {}, load.result
    # The API reports everything green again.
    assert httpx.get(f"http://127.0.0.1:{stack.ports.api}/health", timeout=20).status_code == 200


def test_an_app_with_no_healthy_instance_gets_a_clear_503_page(
    stack: SingleBox, make_image, deployer: Deployer, app_name: str, router: httpx.Client, cleanup_apps
) -> None:
    cleanup_apps.append(app_name)
    sick = make_image(app_name, "sick", kind="unhealthy")
    # Don't wait for Nomad to give up on the deployment: the router's answer is what matters here.
    release = deployer.deploy(app_name, sick, WEB, timeout=1)
    assert release.status == ReleaseStatus.FAILED

    def unavailable() -> httpx.Response | None:
        resp = get(router, app_name)
        return resp if resp.status_code == 503 else None

    resp = wait_for(unavailable, 60, "the router to answer 503")
    assert f"{app_name} has no healthy instance" in resp.text
    assert "billowin logs" in resp.text


def test_rollback_restores_the_earlier_image_as_a_new_release(
    stack: SingleBox, make_image, deployer: Deployer, app_name: str, router: httpx.Client, cleanup_apps
) -> None:
    cleanup_apps.append(app_name)
    assert deployer.deploy(app_name, make_image(app_name, "v1", greeting="first"), WEB).status == "live"
    assert deployer.deploy(app_name, make_image(app_name, "v2", greeting="second"), WEB).status == "live"
    wait_for(lambda: serving(router, app_name, "second release=v2"), 30, "v2 to be served")

    # What a user types; the CLI talks to the stack's API with a token.
    System(stack.settings).apps.create(App(name=app_name, repository="/nonexistent"))
    env = {
        **os.environ,
        "BILLOWIN_API_URL": f"http://127.0.0.1:{stack.ports.api}",
        "BILLOWIN_API_TOKEN": System(stack.settings).tokens.create("rollback test"),
        "COLUMNS": "200",  # a wide table, as on a laptop terminal
    }
    done = subprocess.run(
        [sys.executable, "-m", "billowin.cli", "rollback", app_name],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "v3 is live" in done.stderr, done.stderr

    # The old image answers again, under a new release number.
    wait_for(lambda: serving(router, app_name, "first release=v3"), 30, "the rolled-back image to be served")
    history = deployer.releases.list(app_name)
    assert [(r.name, r.status.value, r.rollback_of) for r in history] == [
        ("v1", "live", None),
        ("v2", "live", None),
        ("v3", "live", "v1"),
    ]
    assert history[2].image == history[0].image
    listing = subprocess.run(
        [sys.executable, "-m", "billowin.cli", "releases", app_name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "rollback to v1" in listing.stdout
