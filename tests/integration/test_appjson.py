"""app.json on the real stack: the first deploy's formation, the deploy scripts, the web check.

One app, one deploy. The fixture (``tests/fixtures/apps/appjson/``: a standard-library web server
with a ``/health`` path) has an app.json asking for two web instances, a predeploy, Dokku's and
Heroku's postdeploy, and a ``healthchecks`` entry; it is deployed with the CLI, so the API's
pipeline builds it (detect reads the app.json), runs the scripts in one-offs of the new image and
rolls it out on Nomad, whose service check Consul runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.gitrepo import commit

from .conftest import REPO, wait_for
from .test_apps_cli import Cli

FIXTURE = REPO / "tests" / "fixtures" / "apps" / "appjson"
SECOND = 1_000_000_000  # Nomad's durations are nanoseconds


@pytest.fixture
def cli(stack: SingleBox, tmp_path: Path) -> Cli:
    return Cli(stack, tmp_path / "config")


@pytest.fixture
def destroy_after(cli: Cli) -> Iterator[list[str]]:
    apps: list[str] = []
    yield apps
    for app in apps:
        cli("apps:destroy", app, "--confirm", app, ok=False)


def page(router: httpx.Client, app: str) -> str | None:
    try:
        resp = router.get("/", headers={"Host": f"{app}.localhost"})
    except httpx.TransportError:
        return None
    return resp.text if resp.status_code == 200 else None


def test_app_json_scales_runs_its_scripts_around_the_rollout_and_sets_the_web_check(
    stack: SingleBox,
    cli: Cli,
    app_name: str,
    router: httpx.Client,
    tmp_path: Path,
    destroy_after: list[str],
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURE, repo)
    sha = commit(repo)
    destroy_after.append(app_name)
    cli.json("apps:create", app_name, "--repository", str(repo))
    job = cli.json("deploy", app_name, "--sha", sha, "--wait")
    assert job["state"] == "live", job

    # The scripts ran in one-offs of v1, in Dokku's order around the rollout: the job's steps.
    log = cli("builds:output", app_name, job["id"]).stdout
    steps = log.split("--- build log ---")[0]
    order = [
        "predeploy: appjson-predeploy for v1",
        "registered as job version",
        "v1: live (deployed)",
        "postdeploy: appjson-first-deploy setup for v1",  # Heroku's: the first deploy only
        "postdeploy: appjson-postdeploy for v1",  # Dokku's
        "v1 is live",
    ]
    at = [steps.find(text) for text in order]
    assert -1 not in at and at == sorted(at), steps
    assert "Warning: formation.web.size is not applied" in log, "what is not applied says so"

    # formation: two web instances, both passing Consul's check of the app.json path.
    system = System(stack.settings)
    assert len(system.catalog.wait_for_healthy(app_name, count=2, timeout=60)) == 2
    checks = [c for c in system.catalog.health_checks() if c.get("ServiceName") == app_name]
    assert len(checks) == 2 and all(c["Status"] == "passing" for c in checks), checks
    assert all("/health: 200" in c["Output"] for c in checks), [c["Output"] for c in checks]
    spec = system.nomad.current(app_name)
    assert spec is not None
    (web,) = spec["TaskGroups"]
    assert (web["Name"], web["Count"]) == ("web", 2)
    (check,) = web["Services"][0]["Checks"]
    assert (check["Path"], check["Interval"], check["Timeout"]) == ("/health", 2 * SECOND, 3 * SECOND)
    assert (check["CheckRestart"]["Limit"], check["CheckRestart"]["Grace"]) == (5, 2 * SECOND)
    assert wait_for(lambda: page(router, app_name), 30, "the app to be served") == (
        "Hello from app.json on Billowin\n"
    )
