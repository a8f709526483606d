"""Build: any Ruby, Go, Python or Node.js repository becomes an image, via real Packer.

Each sample app in tests/fixtures/apps/ is committed to a throwaway git
repository, built at that exact commit, pushed to the stack's registry, then
run with Docker and asked for its page.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from billowin.build.builder import Builder
from billowin.errors import BuildFailed
from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.gitrepo import commit

from .conftest import wait_for

APPS = Path(__file__).resolve().parents[1] / "fixtures" / "apps"

EXPECTED = {
    "python": "Hello from Python on Billowin\n",
    "node": "Hello from Node.js on Billowin\n",
    "go": "Hello from Go on Billowin\n",
    "ruby": "Hello from Ruby on Billowin\n",
}


def sample(tmp_path: Path, language: str) -> Path:
    repo = tmp_path / f"{language}-repo"
    shutil.copytree(APPS / language, repo)
    return repo


@pytest.fixture
def builder(stack: SingleBox) -> Builder:
    settings = stack.settings
    return System(settings).builder


@pytest.fixture
def run_image() -> Iterator:  # type: ignore[type-arg]
    engine = docker.from_env()
    started = []

    def run(image: str, command: list[str] | None = None) -> str:
        container = engine.containers.run(
            image,
            command=command,
            detach=True,
            environment={"PORT": "5000"},
            ports={"5000/tcp": ("127.0.0.1", None)},
        )
        started.append(container)

        def address() -> str | None:
            container.reload()
            bindings = container.attrs["NetworkSettings"]["Ports"].get("5000/tcp") or []
            return f"http://127.0.0.1:{bindings[0]['HostPort']}/" if bindings else None

        return wait_for(address, 30, "the container's port")

    yield run
    for container in started:
        container.remove(force=True)
    engine.close()


def answer(url: str) -> str | None:
    try:
        resp = httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None


@pytest.mark.parametrize("language", ["python", "node", "go", "ruby"])
def test_a_sample_app_builds_with_packer_and_serves_its_page(
    builder: Builder, stack: SingleBox, tmp_path: Path, run_image, app_name: str, language: str
) -> None:
    repo = sample(tmp_path, language)
    sha = commit(repo)
    lines: list[str] = []
    record = builder.build(app_name, str(repo), sha, log=lines.append)

    assert record.status == "succeeded", record
    assert record.language == language
    assert record.image == f"{stack.settings.registry}/{app_name}:{sha}"
    assert record.digest and record.digest.startswith("sha256:")
    assert sha in System(stack.settings).image_registry.tags(app_name)
    assert "web" in record.processes
    assert any("Pushed" in line for line in lines)  # the log was streamed as it was written
    assert builder.log_path(app_name, sha).read_text().count("\n") == len(lines)

    url = run_image(record.image)
    assert wait_for(lambda: answer(url), 90, f"the {language} app to answer") == EXPECTED[language]


def test_procfile_process_types_are_recorded(builder: Builder, tmp_path: Path, app_name: str) -> None:
    repo = sample(tmp_path, "python")
    record = builder.build(app_name, str(repo), commit(repo))
    assert record.processes == {
        "web": "gunicorn --bind 0.0.0.0:$PORT --workers 2 app:app",
        "worker": "python3 worker.py",
    }


def test_a_syntax_error_fails_the_build_with_a_useful_message(
    builder: Builder, stack: SingleBox, tmp_path: Path, app_name: str
) -> None:
    repo = sample(tmp_path, "python")
    (repo / "app.py").write_text("def index(:\n    return 'oops'\n")
    sha = commit(repo)
    with pytest.raises(BuildFailed) as info:
        builder.build(app_name, str(repo), sha)
    assert "app.py line 1: SyntaxError" in info.value.message, info.value.message
    assert builder.record(app_name, sha).status == "failed"
    assert "SyntaxError" in builder.log_path(app_name, sha).read_text()
    assert System(stack.settings).image_registry.tags(app_name) == []  # nothing was pushed


def test_a_missing_dependency_fails_the_build_and_names_it(
    builder: Builder, tmp_path: Path, app_name: str
) -> None:
    repo = sample(tmp_path, "python")
    (repo / "requirements.txt").write_text("flask==3.0.3\nbillowin-no-such-package-xyz==1.0\n")
    with pytest.raises(BuildFailed) as info:
        builder.build(app_name, str(repo), commit(repo))
    assert "billowin-no-such-package-xyz" in info.value.message, info.value.message


def test_an_unrecognizable_repository_says_what_was_looked_for(
    builder: Builder, tmp_path: Path, app_name: str
) -> None:
    repo = tmp_path / "mystery"
    repo.mkdir()
    (repo / "README").write_text("just words\n")
    with pytest.raises(BuildFailed) as info:
        builder.build(app_name, str(repo), commit(repo))
    for marker in ("Gemfile", "go.mod", "requirements.txt", "package.json"):
        assert marker in info.value.message


def test_images_beyond_the_last_n_builds_are_collected(
    stack: SingleBox, tmp_path: Path, app_name: str
) -> None:
    settings = stack.settings.model_copy(update={"keep_images": 1})
    builder = System(settings).builder
    repo = sample(tmp_path, "go")
    first = builder.build(app_name, str(repo), commit(repo))
    (repo / "VERSION").write_text("2\n")
    second = builder.build(app_name, str(repo), commit(repo, "second"))

    docker_engine = System(settings).docker
    assert first.image and second.image
    assert not docker_engine.image_exists(first.image)
    assert docker_engine.image_exists(second.image)
    assert System(settings).image_registry.tags(app_name) == [second.sha]
    assert builder.record(app_name, first.sha).status == "collected"


@pytest.mark.parametrize("language", ["python", "node"])
def test_a_code_only_change_reuses_the_installed_dependencies(
    builder: Builder, stack: SingleBox, tmp_path: Path, run_image, app_name: str, language: str
) -> None:
    repo = sample(tmp_path, language)
    first: list[str] = []
    builder.build(app_name, str(repo), commit(repo), log=first.append)
    assert any("-----> Installing dependencies from" in line for line in first)

    # The source changes, the dependency files do not: nothing is installed again.
    entry = repo / ("app.py" if language == "python" else "index.js")
    marker = "# a code-only change\n" if language == "python" else "// a code-only change\n"
    entry.write_text(entry.read_text() + marker)
    second: list[str] = []
    record = builder.build(app_name, str(repo), commit(repo, "code only"), log=second.append)
    assert any("-----> Dependencies unchanged" in line for line in second), second
    assert not any("Installing" in line for line in second), second
    assert record.image is not None
    url = run_image(record.image)
    assert wait_for(lambda: answer(url), 90, f"the {language} app to answer") == EXPECTED[language]
    assert marker.strip() in run_image_file(record.image, f"/app/{entry.name}")

    # A dependency file changes: they are installed again, and the previous set is let go.
    manifest = repo / ("requirements.txt" if language == "python" else "package.json")
    if language == "python":
        manifest.write_text(manifest.read_text() + "# pinned as before\n")
    else:
        described = manifest.read_text().replace('"private"', '"description": "changed", "private"', 1)
        manifest.write_text(described)
    third: list[str] = []
    builder.build(app_name, str(repo), commit(repo, "deps changed"), log=third.append)
    assert any("-----> Installing dependencies from" in line for line in third), third


def run_image_file(image: str, path: str) -> str:
    """``path``'s contents inside ``image``."""
    engine = docker.from_env()
    try:
        out = engine.containers.run(image, ["cat", path], entrypoint=[], remove=True)
    finally:
        engine.close()
    return out.decode()
