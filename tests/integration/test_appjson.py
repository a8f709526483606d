"""app.json on the real stack: the first deploy's formation, the deploy scripts, the web check.

One app, one deploy. The fixture (``tests/fixtures/apps/appjson/``: a standard-library web server
with a ``/health`` path) has an app.json asking for two web instances, a predeploy, Dokku's and
Heroku's postdeploy, and a ``healthchecks`` entry; it is deployed with the CLI, so the API's
pipeline builds it (detect reads the app.json), runs the scripts in one-offs of the new image and
rolls it out on Nomad, whose service check Consul runs.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from billowin.stack.single_box import SingleBox
from billowin.system import System

from .conftest import REPO, Cli, deploy_sample, routed, wait_for

FIXTURE = REPO / "tests" / "fixtures" / "apps" / "appjson"
SECOND = 1_000_000_000  # Nomad's durations are nanoseconds


def test_app_json_scales_runs_its_scripts_around_the_rollout_and_sets_the_web_check(
    stack: SingleBox,
    cli: Cli,
    app_name: str,
    router: httpx.Client,
    tmp_path: Path,
    destroy_after: list[str],
) -> None:
    job, log = deploy_sample(cli, FIXTURE, tmp_path / "repo", app_name, destroy_after)
    assert job["state"] == "live", f"{job}\n{log}"

    # The scripts ran in one-offs of v1, in Dokku's order around the rollout: the job's steps.
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
    assert wait_for(lambda: routed(router, app_name), 30, "the app to be served") == (
        "Hello from app.json on Billowin\n"
    )
