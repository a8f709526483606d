"""Dockerfile apps on the real stack: built by BuildKit, served on their EXPOSEd port, rebuilt from cache.

One app, one deploy, one rebuild. The fixture (``tests/fixtures/apps/dockerfile/``: a Dockerfile
``FROM`` the stack's python base image, ``EXPOSE 8080``, a Procfile with ``web`` and ``worker``)
is committed to a throwaway repository and deployed with the CLI: the API's pipeline builds it
in its build child with the Engine's BuildKit, Nomad runs it, HAProxy serves it. Then its
worker is scaled up, and a commit that changes only ``web.py`` is built again by the same kind
of builder, which must reuse the steps before the source (``CACHED``).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from billowin.stack.install import docker_image_exists
from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.gitrepo import commit

from .conftest import REPO, Cli, deploy_sample, routed, wait_for

FIXTURE = REPO / "tests" / "fixtures" / "apps" / "dockerfile"
GREETING = "Hello from a Dockerfile on Billowin"


def from_image() -> str:
    for line in (FIXTURE / "Dockerfile").read_text().splitlines():
        if line.upper().startswith("FROM "):
            return line.split()[1]
    raise AssertionError(f"{FIXTURE / 'Dockerfile'} has no FROM line")


def step_ids(lines: list[str], title: str) -> set[str]:
    """The ids BuildKit's plain output gave the step whose title contains ``title``."""
    return {
        m.group(1) for line in lines if (m := re.match(r"^#(\d+) \[.*\] (.*)$", line)) and title in m.group(2)
    }


def test_a_dockerfile_app_builds_with_buildkit_serves_its_exposed_port_and_rebuilds_from_cache(
    stack: SingleBox,
    cli: Cli,
    app_name: str,
    router: httpx.Client,
    tmp_path: Path,
    destroy_after: list[str],
) -> None:
    base = from_image()
    assert docker_image_exists(base), (
        f"the fixture's FROM image {base} is not on this machine: run `make setup`. If "
        "billowin/versions.toml changed the language images' tags, change the FROM line of "
        "tests/fixtures/apps/dockerfile/Dockerfile to the tag Builder.language_image('python') gives now "
        "(`docker images billowin/python`)."
    )
    # Through the real pipeline: BuildKit's own lines are in the build log, as it streamed them.
    repo = tmp_path / "repo"
    job, log = deploy_sample(cli, FIXTURE, repo, app_name, destroy_after)
    assert job["state"] == "live", f"{job}\n{log}"
    sha = job["sha"]
    assert "Building Dockerfile with BuildKit" in log
    assert re.search(r"^#\d+ \[internal\] load build definition from Dockerfile$", log, re.MULTILINE), log
    assert re.search(r"^#\d+ naming to .*/" + app_name + ":" + sha, log, re.MULTILINE), log
    assert "listens on port 8080 (EXPOSE 8080)" in log
    assert "not bounded" not in log
    # The build's steps ran under the Engine's BuildKit cgroup, which now carries the build limits.
    limits = Path("/sys/fs/cgroup/memory/docker/buildkit/memory.limit_in_bytes")
    if not limits.exists():  # the unified hierarchy
        limits = Path("/sys/fs/cgroup/docker/buildkit/memory.max")
    assert int(limits.read_text()) == stack.settings.build_memory_mb * 1024 * 1024

    # Served through the router; inside, the container listens on 8080 and $PORT says so.
    served = wait_for(lambda: routed(router, app_name), 30, "the app to be served")
    assert served == f"{GREETING} port=8080 release=v1\n"
    system = System(stack.settings)
    spec = system.nomad.current(app_name)
    assert spec is not None
    web = next(g for g in spec["TaskGroups"] if g["Name"] == "web")
    assert [p["To"] for p in web["Networks"][0]["DynamicPorts"]] == [8080]

    # The Procfile's worker runs in the same image once scaled up.
    cli("ps:scale", app_name, "worker=1")
    wait_for(
        lambda: any(i["name"] == "worker.1" and i["state"] == "running" for i in cli.json("ps", app_name)),
        60,
        "worker.1 to run",
    )
    wait_for(
        lambda: "worker tick" in cli("logs", app_name, "--process", "worker").stdout,
        30,
        "the worker's output",
    )

    # A source-only change: the steps before COPY come from BuildKit's cache, COPY runs again.
    web_py = repo / "web.py"
    # A change of this run's own: BuildKit's cache outlives test sessions, and an earlier run's
    # identical change would be CACHED too.
    web_py.write_text(web_py.read_text().replace(GREETING, f"{GREETING}, again ({app_name})"))
    sha2 = commit(repo, "source only")
    lines: list[str] = []
    record = system.builder.build(app_name, str(repo), sha2, log=lines.append)
    assert (record.status, record.builder, record.port) == ("succeeded", "dockerfile", 8080)
    run_steps, copy_steps = step_ids(lines, "RUN useradd"), step_ids(lines, "COPY . .")
    assert run_steps and copy_steps, "\n".join(lines)
    assert any(f"#{step} CACHED" in lines for step in run_steps), "\n".join(lines)
    assert not any(f"#{step} CACHED" in lines for step in copy_steps), "the changed source is copied again"
