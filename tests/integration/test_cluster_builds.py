"""Builds on a cluster run as Nomad batch jobs on a build node (billowin/build/on_nomad.py).

The cluster's API runs with ``BILLOWIN_BUILD_RUNNER=nomad``; its first node is the build node
(meta ``billowin.build``, the ``billowin-build-cache`` host volume, raw_exec), building with the
machine's Docker Engine, which has the base images. A Dockerfile app whose build takes a few
seconds is deployed by commit; while the batch job runs, its log reaches ``builds:output`` on
the API; then the API is killed, as a crash would, and started again: the pipeline follows the
same batch job to its end instead of building again, and the app goes live.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from billowin.stack.single_box import SingleBox
from tests.gitrepo import commit

from .cluster import DOMAIN, Fleet, new_cluster, running
from .conftest import Cli, wait_for
from .production import finished


@pytest.fixture
def fleet(stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = Path(tmp_path_factory.mktemp("cluster"))
    cluster = new_cluster(root, build_docker_host=stack.settings.docker_host, BILLOWIN_BUILD_RUNNER="nomad")
    with running(cluster):
        yield Fleet.of(cluster, stack.settings, base_image, root / "images")


def slow_dockerfile_app(repo: Path, base_image: str, marker: str) -> str:
    """A Dockerfile app whose build prints ``marker`` and then takes about ten seconds."""
    repo.mkdir(parents=True)
    (repo / "index.html").write_text(f"built by {marker}\n")
    (repo / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        # The marker through a variable: BuildKit's step title (the line itself) must not match.
        f'RUN m={marker} && echo "$m is starting" && sleep 10 && echo "$m has finished"\n'
        "COPY index.html /srv/www/index.html\n"
        'CMD ["sh", "-c", "exec busybox httpd -f -p \\"$PORT\\" -h /srv/www"]\n'
    )
    return commit(repo)


def test_a_build_runs_as_a_nomad_batch_job_streams_its_log_and_survives_the_api(
    fleet: Fleet, tmp_path: Path
) -> None:
    app = f"nb{uuid.uuid4().hex[:8]}"
    marker = f"marker-{uuid.uuid4().hex}"  # unique: BuildKit's cache outlives test sessions
    sha = slow_dockerfile_app(tmp_path / "repo", fleet.base_image, marker)
    cli = Cli(None, tmp_path / "config", api=fleet.cluster.api_url, token=fleet.token)
    cli("apps:create", app, "--repository", str(tmp_path / "repo"))
    queued = cli.json("deploy", app, "--sha", sha)
    build_job = f"billowin-build-{app}-{sha[:12]}"

    def running_on() -> str:
        allocs = [a for a in fleet.nomad().allocations(build_job) if a["ClientStatus"] == "running"]
        return allocs[0]["NodeName"] if allocs else ""

    assert wait_for(running_on, 60, f"the batch job {build_job} to run") == "n1"  # the build node
    # The build's output reaches the API's build log while the job runs.
    wait_for(lambda: f"{marker} is starting" in cli("builds:output", app, queued["id"]).stdout, 60, "the log")
    so_far = cli("builds:output", app, queued["id"]).stdout
    assert f"{marker} has finished" not in so_far, "the build ended before the API could be killed"

    fleet.cluster.first.restart("api", crash=True)  # killed mid-build, then started again
    with fleet.api() as api:
        done = finished(api, app, queued)
    assert done["state"] == "live", (done["reason"], done["steps"][-4:])
    log = cli("builds:output", app, queued["id"]).stdout
    assert f"Following the build {build_job} already running" in log
    assert log.count(f"{marker} is starting") == 1 and f"{marker} has finished" in log
    assert fleet.nomad().current(build_job) is None, "the finished build job was not purged"
    assert wait_for(lambda: fleet.serves("n2", app).startswith(f"built by {marker}"), 60, f"{app}.{DOMAIN}")
