"""Real-world apps on the real stack: runtime versions, package managers and build steps.

Each fixture app in tests/fixtures/apps/ is committed to a throwaway git repository and
deployed with the CLI: the API's pipeline builds it (the runtime its version files ask for →
dependency image → app image), Nomad runs it, HAProxy serves it. Then its pages are asked for
through the router, the runtime is checked in ``releases``, and the image for what the build
step left:

- ``django``: Python 3.14 (``.python-version``; Debian forky's), uv.lock (``uv sync --frozen
  --no-dev``), then ``collectstatic``: WhiteNoise serves the collected file; no ``dev`` group.
- ``pnpm``: Node.js 22 (``engines.node``; not a version Debian ships: the npm registry's),
  pnpm through corepack at packageManager's version; the ``build`` script renders its page with
  a devDependency, which is then pruned from node_modules.
- ``govendor``: Go 1.25 (``go.mod``; the Go proxy's toolchain), a vendor/ directory (its own module, no
  download) and two main packages, one binary each; the Procfile runs each.
- ``rack``: Ruby 3.1 (``.ruby-version``; Debian bookworm's), Bundler frozen to Gemfile.lock with
  the base image's gems, without the development group; ``rake assets:precompile`` writes a
  file the app serves.

And an app whose ``.python-version`` no provider satisfies fails its build at once, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import docker
import httpx
import pytest

from billowin.build.builder import Builder
from billowin.stack.single_box import SingleBox
from tests.gitrepo import commit

from .conftest import REPO, Cli, deploy_sample, routed, wait_for
from .test_build import APPS, answer, builder, run_image, sample  # noqa: F401 (fixtures)

PAGES = {
    "django": {
        "": "Hello from Django on Billowin\n",
        "static/hello.txt": "collected by manage.py collectstatic\n",
    },
    "pnpm": {"": "<h1>Hello from pnpm on Billowin</h1>\n"},
    "govendor": {"": "Hello from vendored Go on Billowin\n"},
    "rack": {
        "": "Hello from Rack on Billowin\n",
        "assets/application.txt": "precompiled for production\n",
    },
}
# The runtime each asks for, as `releases` shows it, and the file that asked.
RUNTIMES = {
    "django": ("python 3.14.", "debian forky", ".python-version asks for '3.14'"),
    "pnpm": ("node 22.", "npm registry", "package.json (engines.node) asks for '22.x'"),
    "govendor": ("go 1.25.", "Go module proxy", "go.mod (go) asks for '1.25.0'"),
    "rack": ("ruby 3.1.", "debian bookworm", ".ruby-version asks for '3.1'"),
}
# What the build log shows each one did.
STEPS = {
    "django": ["Installing dependencies from uv.lock", "Django: python manage.py collectstatic"],
    "pnpm": ["pnpm 9.15.9 (corepack, packageManager pnpm@9.15.9)", "Running the build script", "Pruning"],
    "govendor": ["Using the vendor directory", "/app/bin/web", "/app/bin/worker"],
    "rack": ["Installing gems", "Running: rake assets:precompile"],
}


def in_image(image: str, script: str) -> str:
    """What ``sh -c script`` prints inside ``image`` (no network: nothing is fetched at run time)."""
    engine = docker.from_env()
    try:
        out = engine.containers.run(
            image, ["sh", "-c", script], entrypoint=[], network_mode="none", remove=True, stderr=True
        )
    finally:
        engine.close()
    return bytes(out).decode()


def serves(run: Callable[[str], str], image: str, pages: dict[str, str], what: str) -> None:
    url = run(image)
    for path, text in pages.items():
        assert wait_for(lambda p=path: answer(url + p), 90, f"{what} to answer /{path}") == text


@pytest.mark.parametrize("fixture", ["django", "pnpm", "govendor", "rack"])
def test_a_real_world_app_gets_its_runtime_and_package_manager_and_serves_through_the_router(
    stack: SingleBox,
    cli: Cli,
    router: httpx.Client,
    tmp_path: Path,
    app_name: str,
    destroy_after: list[str],
    fixture: str,
) -> None:
    job, log = deploy_sample(cli, APPS / fixture, tmp_path / "repo", app_name, destroy_after)
    assert job["state"] == "live", f"{job}\n{log}"
    for step in STEPS[fixture]:
        assert step in log, f"{step!r} not in the build log:\n{log}"

    version, source, asked = RUNTIMES[fixture]
    assert f"-----> Runtime: {version}" in log and f"({source}); {asked}" in log, log
    (release,) = cli.json("releases", app_name)
    assert release["runtime"].startswith(version) and release["runtime"].endswith(f"({source})"), release

    for path, text in PAGES[fixture].items():
        assert wait_for(lambda p=path: routed(router, app_name, p), 60, f"/{path} through the router") == text

    image = release["image"]
    if fixture == "django":
        assert in_image(image, "python3 -c 'import sys; print(sys.version_info[:2])'") == "(3, 14)\n"
        packages = in_image(image, "ls /app/.venv/lib/python3*/site-packages")
        assert "whitenoise" in packages and "pytest" not in packages  # --no-dev
    elif fixture == "pnpm":
        assert in_image(image, "node --version").startswith("v22.")
        # The dependency stays; marked, the devDependency the build used, is gone.
        assert in_image(image, "ls /app/node_modules").split() == ["escape-html"]
        assert in_image(image, "find /app/node_modules -name '*marked*'") == ""
    elif fixture == "govendor":
        assert "Downloading modules" not in log
        assert in_image(image, "/app/bin/worker --once").startswith("worker ")
        assert in_image(image, "go version").startswith("go version go1.25.")
    elif fixture == "rack":
        assert "BUNDLE_WITHOUT" in in_image(image, "cat /app/.bundle/config")


def test_a_version_no_provider_offers_fails_the_build_at_once_naming_the_file_and_the_offer(
    cli: Cli, tmp_path: Path, app_name: str, destroy_after: list[str]
) -> None:
    too_old = REPO / "tests" / "fixtures" / "unbuildable" / "python-too-old"
    job, log = deploy_sample(cli, too_old, tmp_path / "repo", app_name, destroy_after)
    assert job["state"] == "failed", job
    assert (
        ".python-version asks for python '3.9', which no runtime provider offers; on offer: "
        in (job["reason"])
    ), job
    assert "3.13." in job["reason"] and "3.14." in job["reason"], job
    assert "packer" not in log.lower(), "it fails before any image is built"
    assert cli.json("releases", app_name) == []


@pytest.mark.parametrize("fixture", ["pnpm"])  # Django's collectstatic reruns the same way
def test_a_code_only_change_reuses_the_dependency_image_and_reruns_the_build_step(
    builder: Builder,  # noqa: F811
    tmp_path: Path,
    run_image: Callable[[str], str],  # noqa: F811
    app_name: str,
    fixture: str,
) -> None:
    """The build step needs the source: it runs in the app step, on the reused dependencies."""
    repo = sample(tmp_path, fixture)
    first: list[str] = []
    builder.build(app_name, str(repo), commit(repo), log=first.append)
    assert any("-----> Installing dependencies from" in line for line in first), first

    pages = dict(PAGES[fixture])
    if fixture == "pnpm":
        (repo / "page.md").write_text("# Changed on Billowin\n")
        pages[""] = "<h1>Changed on Billowin</h1>\n"
    else:
        (repo / "static" / "hello.txt").write_text("collected again\n")
        pages["static/hello.txt"] = "collected again\n"
    second: list[str] = []
    record = builder.build(app_name, str(repo), commit(repo, "code only"), log=second.append)
    assert record.image is not None
    assert any("-----> Dependencies unchanged" in line for line in second), second
    assert not any("Installing dependencies" in line for line in second), second
    serves(run_image, record.image, pages, f"the changed {fixture} app")
    if fixture == "pnpm":
        assert in_image(record.image, "find /app/node_modules -name '*marked*'") == ""
