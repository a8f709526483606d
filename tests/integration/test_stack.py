"""The foundation: the real stack is wired end to end.

A trivial image built locally and pushed to the local registry runs as a
Nomad service job, appears healthy in Consul, and HAProxy — configured by
consul-template from Consul — routes ``<name>.localhost`` to it.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from billowin.release.jobspec import AppJob, Process, render
from billowin.settings import Settings
from billowin.stack.single_box import SingleBox
from billowin.stack.tools import load_versions
from billowin.system import System

from .conftest import wait_for, write_hello_app


def test_health_reports_every_component_green_with_versions(stack: SingleBox) -> None:
    admin = System(stack.settings).tokens.create("health check")  # the detail is for admins only
    resp = httpx.get(
        f"http://127.0.0.1:{stack.ports.api}/health", headers={"Authorization": f"Bearer {admin}"}, timeout=20
    )
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["ok"] is True
    assert set(body["components"]) == {"nomad", "consul", "docker", "registry", "haproxy"}
    for name, comp in body["components"].items():
        assert comp["ok"], f"{name}: {comp}"
        assert comp["version"], f"{name} reported no version"
    pinned = load_versions(Settings().versions_file)
    assert body["components"]["nomad"]["version"] == pinned["nomad"]["version"]
    assert body["components"]["consul"]["version"] == pinned["consul"]["version"]
    assert body["components"]["haproxy"]["version"].startswith("2.")


def test_unknown_app_name_gets_a_clear_404(stack: SingleBox, router: httpx.Client) -> None:
    resp = router.get("/", headers={"Host": "no-such-app.localhost"})
    assert resp.status_code == 404
    assert "No such app" in resp.text


def test_local_image_runs_on_nomad_is_healthy_in_consul_and_routed_by_haproxy(
    stack: SingleBox, base_image: str, app_name: str, tmp_path: Path, router: httpx.Client
) -> None:
    settings = stack.settings
    greeting = f"hello from {app_name}"

    # Build the image locally and push it to the stack's registry.
    docker = System(settings).docker
    ref = f"{settings.registry}/{app_name}:v1"
    docker.build(write_hello_app(tmp_path / "app", base_image, greeting), ref)
    digest = docker.push(ref)
    assert digest.startswith("sha256:")
    assert "v1" in System(settings).image_registry.tags(app_name)

    # Render the jobspec, let Nomad parse it, and register it with check-and-set.
    nomad = System(settings).nomad
    hcl = render(
        settings.jobspecs_dir,
        "app.nomad.hcl",
        AppJob(app=app_name, release="v1", image=ref, processes=[Process(name="web")]),
    )
    job = nomad.parse(hcl)
    assert job["Meta"] == {"billowin.app": app_name, "billowin.release": "v1"}
    nomad.submit(job, expect_modify_index=0)
    try:
        result = nomad.wait_for_deployment(app_name, timeout=120)
        assert result.status == "successful", result

        # Consul knows one healthy instance, tagged for the router.
        instances = System(settings).catalog.wait_for_healthy(app_name, count=1, timeout=30)
        assert len(instances) == 1
        assert "billowin.web" in instances[0].tags

        # HAProxy routes <app>.localhost to it (consul-template re-renders within seconds).
        resp = wait_for(
            lambda: (
                (r := router.get("/", headers={"Host": f"{app_name}.localhost"})).status_code == 200 and r
            ),
            timeout=30,
            what=f"{app_name}.localhost to be routed",
        )
        assert resp.text == greeting
        # The Host header's port and case do not matter.
        resp = router.get("/", headers={"Host": f"{app_name.upper()}.LOCALHOST:{stack.ports.router_http}"})
        assert resp.text == greeting

        # What it prints (busybox httpd -v logs each request on stderr) reaches `billowin logs`
        # through Docker, and Nomad runs no logging process of its own beside the instance.
        logs = System(settings).logs
        wait_for(
            lambda: any("response:200" in line.text for line in logs.stream(app_name, lines=20)),
            timeout=30,
            what="the request to show in the app's logs",
        )
        assert nomad_children(stack, ("logmon", "docker_logger")) == []
    finally:
        nomad.stop(app_name)

    # Once the job is gone, the name is no longer routed.
    wait_for(
        lambda: router.get("/", headers={"Host": f"{app_name}.localhost"}).status_code == 404,
        timeout=30,
        what=f"{app_name} to leave the router",
    )


def nomad_children(stack: SingleBox, words: tuple[str, ...]) -> list[str]:
    """The command lines of the stack's Nomad agent's child processes that name one of ``words``."""
    agent = int((stack.state_dir / "nomad.pid").read_text().split()[0])
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if parent == agent and any(word in argv for word in words):
            found.append(argv)
    return found
