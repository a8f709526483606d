"""Dockerfile builds on fakes: which apps get them, which Dockerfiles are refused, the web port
an image says it listens on, the recipe around BuildKit, the BuildKit adapter's process handling
(on a stand-in CLI script), and how the release renders a Dockerfile app's processes and port.

The real thing (BuildKit in the Engine, its cache, the router) is
``tests/integration/test_dockerfile_apps.py``.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from billowin.adapters import buildkit as buildkit_adapter
from billowin.adapters.buildkit import BuildKit, bound_builds
from billowin.apps.store import App, AppStore
from billowin.build.builder import Builder, BuildRecord
from billowin.build.detect import detect
from billowin.build.dockerfile import (
    DockerfileImages,
    dockerfile_path,
    failure_reason,
    instructions,
    stated_ports,
    web_port,
)
from billowin.errors import BuildFailed, InvalidInput
from billowin.pipeline.jobs import JobKind, JobStore
from billowin.pipeline.worker import Worker
from billowin.ports import ComponentHealth, ImageJob
from billowin.release.jobspec import AppJob, Process, render
from billowin.settings import Settings
from tests.fakes import FakeBuilder, FakeBuildKit, FakeDeployer, InMemoryKV, RecordingStatuses
from tests.gitrepo import commit

APPS = Path(__file__).resolve().parents[1] / "fixtures" / "apps"
SHA = "a" * 40


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", registry="127.0.0.1:5000", **overrides
    )


def tree(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# -- detect ------------------------------------------------------------------------------------------
def test_a_dockerfile_at_the_root_makes_a_dockerfile_app_whose_web_is_the_images_cmd(tmp_path: Path) -> None:
    spec = detect(tree(tmp_path, {"Dockerfile": "FROM x\n"}))
    assert (spec.builder, spec.language, spec.dockerfile) == ("dockerfile", "docker", "Dockerfile")
    assert spec.processes == {"web": ""}, "an empty command: the image's own CMD/ENTRYPOINT"
    assert spec.web_command is None


def test_the_procfile_still_names_a_dockerfile_apps_process_types(tmp_path: Path) -> None:
    src = tree(tmp_path / "a", {"Dockerfile": "FROM x\n", "Procfile": "web: ./serve\nworker: ./work\n"})
    assert detect(src).processes == {"web": "./serve", "worker": "./work"}
    # Without a web line, web is still the image's CMD; the worker is the Procfile's.
    src = tree(tmp_path / "b", {"Dockerfile": "FROM x\n", "Procfile": "worker: ./work\nrelease: ./migrate\n"})
    assert detect(src).processes == {"web": "", "worker": "./work", "release": "./migrate"}


def test_the_fixture_app_is_a_dockerfile_app_with_a_web_and_a_worker() -> None:
    spec = detect(APPS / "dockerfile")
    assert spec.builder == "dockerfile"
    assert set(spec.processes) == {"web", "worker"}


def test_a_dockerfile_wins_over_marker_files_unless_billowin_toml_says_packer(tmp_path: Path) -> None:
    files = {"Dockerfile": "FROM x\n", "requirements.txt": "", "app.py": "print()\n"}
    assert detect(tree(tmp_path / "a", files)).builder == "dockerfile"
    spec = detect(tree(tmp_path / "b", {**files, "billowin.toml": 'builder = "packer"\n'}))
    assert (spec.builder, spec.language, spec.processes) == ("packer", "python", {"web": "python3 app.py"})


def test_billowin_toml_names_a_dockerfile_elsewhere_in_the_tree(tmp_path: Path) -> None:
    src = tree(
        tmp_path,
        {
            "docker/web.Dockerfile": "FROM x\n",
            "billowin.toml": 'dockerfile = "docker/web.Dockerfile"\n[processes]\nworker = "./work"\n',
        },
    )
    spec = detect(src)
    assert (spec.builder, spec.dockerfile) == ("dockerfile", "docker/web.Dockerfile")
    assert spec.processes == {"web": "", "worker": "./work"}


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ('builder = "kaniko"\n', "kaniko"),
        ('builder = "dockerfile"\n', "no Dockerfile"),
        ("dockerfile = 3\n", "must be a path"),
        ('dockerfile = "missing.Dockerfile"\n', "no Dockerfile 'missing.Dockerfile'"),
        ('dockerfile = "../outside/Dockerfile"\n', r"leads out of the repository \('..'\)"),
        ('dockerfile = "docker/../../outside/Dockerfile"\n', "leads out"),
        ('dockerfile = "/etc/hostname"\n', "not a path inside the repository"),
        ('dockerfile = ""\n', "not a path inside the repository"),
    ],
)
def test_dockerfiles_outside_the_tree_or_missing_are_refused(tmp_path: Path, toml: str, match: str) -> None:
    tree(tmp_path / "outside", {"Dockerfile": "FROM x\n"})
    src = tree(tmp_path / "src", {"billowin.toml": toml, "requirements.txt": ""})
    with pytest.raises(InvalidInput, match=match) as caught:
        detect(src)
    assert caught.value.hint


def test_a_dockerfile_symlink_that_leads_out_is_refused_one_inside_is_not(tmp_path: Path) -> None:
    outside = tree(tmp_path / "outside", {"Dockerfile": "FROM x\n"}) / "Dockerfile"
    src = tree(tmp_path / "src", {})
    (src / "Dockerfile").symlink_to(outside)
    with pytest.raises(InvalidInput, match="symlink that leads out"):
        detect(src)
    (src / "Dockerfile").unlink()
    (src / "docker").symlink_to(outside.parent, target_is_directory=True)  # a directory link out
    (src / "billowin.toml").write_text('dockerfile = "docker/Dockerfile"\n')
    with pytest.raises(InvalidInput, match="symlink that leads out"):
        detect(src)
    inside = tree(tmp_path / "ok", {"build/Dockerfile": "FROM x\n"})
    (inside / "Dockerfile").symlink_to("build/Dockerfile")
    assert dockerfile_path(inside) == (inside / "build" / "Dockerfile").resolve()
    assert detect(inside).builder == "dockerfile"


def test_the_packer_apps_are_detected_as_before() -> None:
    for language in ("python", "node", "go", "ruby"):
        spec = detect(APPS / language)
        assert (spec.builder, spec.language, spec.dockerfile) == ("packer", language, None)


# -- EXPOSE and the web port -------------------------------------------------------------------------
def test_instructions_join_continuations_and_drop_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM base AS build\n"
        "RUN apt-get update && \\\n"
        "    # a comment inside the instruction\n"
        "    apt-get install -y curl\n"
        "\n"
        "expose 80\n"
    )
    assert instructions(text) == [
        ("FROM", "base AS build"),
        ("RUN", "apt-get update &&  apt-get install -y curl"),
        ("EXPOSE", "80"),
    ]
    backtick = "# escape=`\nFROM base\nEXPOSE 8080 `\n  9090\n"
    assert instructions(backtick)[-1] == ("EXPOSE", "8080  9090")


def test_the_last_stages_tcp_exposes_in_the_dockerfiles_order() -> None:
    text = (
        "FROM golang AS build\nEXPOSE 1234\n"
        "FROM debian\n"
        "EXPOSE 53/udp 9090/tcp\n"
        "EXPOSE 8080 $METRICS_PORT 9000-9002\n"
        "EXPOSE 9090\n"
    )
    assert stated_ports(text) == [9090, 8080, 9000, 9001, 9002]
    assert stated_ports("FROM x\n") == []


def test_the_web_port_is_the_first_exposed_tcp_port_in_the_dockerfiles_order() -> None:
    # Docker keeps ExposedPorts as a map (JSON sorts it: "443/tcp" before "80/tcp").
    config = {"ExposedPorts": {"443/tcp": {}, "53/udp": {}, "80/tcp": {}}, "Env": ["PORT=3000"]}
    assert web_port(config, "FROM x\nEXPOSE 80 443\n") == (80, "EXPOSE 80")
    assert web_port(config, "FROM x\nEXPOSE 443\nEXPOSE 80\n") == (443, "EXPOSE 443")
    # Ports only the base image exposes (or ones behind a variable): the lowest.
    assert web_port(config, "FROM x\n") == (80, "EXPOSE 80")


def test_without_a_tcp_expose_the_images_port_env_then_nothing() -> None:
    env = {"ExposedPorts": {"53/udp": {}}, "Env": ["PATH=/usr/bin", "PORT=3000"]}
    assert web_port(env, "FROM x\nEXPOSE 53/udp\n") == (3000, "PORT=3000 in the image's environment")
    assert web_port({"Env": ["PORT=$X", "PORTS=1"]}) == (None, "")
    assert web_port({"ExposedPorts": None, "Env": None}) == (None, "")
    assert web_port({}) == (None, "")


# -- the recipe ----------------------------------------------------------------------------------------
def image_job(tmp_path: Path, src: Path) -> ImageJob:
    return ImageJob(
        app="shop",
        sha=SHA,
        src=src,
        spec=detect(src),
        repository="127.0.0.1:5000/shop",
        tag=SHA,
        cache=tmp_path / "cache",
        scratch=tmp_path / "scratch",
    )


BUILDKIT_OUTPUT = [
    "#1 [internal] load build definition from Dockerfile",
    "#1 DONE 0.0s",
    "#5 [2/3] RUN useradd web",
    "#5 CACHED",
]


def test_the_recipe_builds_the_tree_without_git_labelled_and_reports_the_exposed_port(
    tmp_path: Path,
) -> None:
    src = tree(tmp_path / "src", {"Dockerfile": "FROM x\nEXPOSE 8080\n", "app.py": "", ".git/HEAD": "x"})
    buildkit = FakeBuildKit({"ExposedPorts": {"8080/tcp": {}}}, output=BUILDKIT_OUTPUT)
    lines: list[str] = []
    built = DockerfileImages(settings(tmp_path), buildkit).build_image(image_job(tmp_path, src), lines.append)
    assert built.port == 8080
    (call,) = buildkit.calls
    assert call.context == str(src) and call.dockerfile == str((src / "Dockerfile").resolve())
    assert call.tag == f"127.0.0.1:5000/shop:{SHA}"
    assert call.labels == {"billowin.app": "shop", "billowin.sha": SHA}
    assert call.files == ("Dockerfile", "app.py"), "the fetch's .git is not part of the context"
    assert lines[1:5] == BUILDKIT_OUTPUT, "BuildKit's lines reach the log as they come"
    assert "port 8080 (EXPOSE 8080)" in lines[-1]


def test_a_failed_step_is_named_with_buildkits_error_and_the_steps_own_words(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"Dockerfile": "FROM x\nRUN pip install nope\n"})
    buildkit = FakeBuildKit(
        output=[
            "#5 [2/2] RUN pip install nope",
            "#5 0.512 Collecting nope",
            "#5 1.020 ERROR: No matching distribution found for nope",
            "#5 1.100 done",
            "#5 ERROR: executor failed running [/bin/sh -c pip install nope]: exit code: 1",
            "------",
            " > [2/2] RUN pip install nope:",
            "------",
            "error: failed to solve: executor failed running [/bin/sh -c pip install nope]: exit code: 1",
        ]
    )
    buildkit.error = BuildFailed("docker build exited 1", log_tail="tail")
    with pytest.raises(BuildFailed) as caught:
        DockerfileImages(settings(tmp_path), buildkit).build_image(image_job(tmp_path, src), lambda _: None)
    assert caught.value.message == (
        f"build of shop {SHA[:12]} failed: [2/2] RUN pip install nope failed: executor failed running "
        "[/bin/sh -c pip install nope]: exit code: 1 (ERROR: No matching distribution found for nope)"
    )
    assert caught.value.log_tail == "tail"


def test_a_missing_from_image_says_where_images_must_be(tmp_path: Path) -> None:
    lines = [
        "#3 [internal] load metadata for docker.io/billowin/python:9-nope",
        "#3 ERROR: pull access denied, repository does not exist or may require authorization",
        "error: failed to solve: billowin/python:9-nope: pull access denied",
    ]
    assert failure_reason(lines).startswith("[internal] load metadata for docker.io/billowin/python:9-nope")
    src = tree(tmp_path / "src", {"Dockerfile": "FROM billowin/python:9-nope\n"})
    buildkit = FakeBuildKit(output=lines)
    buildkit.error = BuildFailed("docker build exited 1")
    with pytest.raises(BuildFailed) as caught:
        DockerfileImages(settings(tmp_path), buildkit).build_image(image_job(tmp_path, src), lambda _: None)
    assert "FROM image could not be found" in caught.value.hint
    # A Dockerfile BuildKit cannot read: no step failed, the final error says why.
    assert failure_reason(["#1 DONE 0.0s", "error: failed to solve: dockerfile parse error line 3"]) == (
        "error: failed to solve: dockerfile parse error line 3"
    )


def test_a_build_that_ran_too_long_says_which_limit(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"Dockerfile": "FROM x\n"})
    buildkit = FakeBuildKit()
    buildkit.error = BuildFailed("docker build timed out after 60s")
    with pytest.raises(BuildFailed, match=r"longer than its 60s limit \(BILLOWIN_BUILD_TIMEOUT\)"):
        DockerfileImages(settings(tmp_path, build_timeout=60), buildkit).build_image(
            image_job(tmp_path, src), lambda _: None
        )


class FakeEngine:
    """Enough of the ``ContainerEngine`` port for ``Builder.build``: pushes, nothing to collect."""

    def __init__(self) -> None:
        self.pushed: list[str] = []

    def health(self) -> ComponentHealth:
        return ComponentHealth("docker", True)

    def image_exists(self, ref: str) -> bool:
        return True

    def push(self, ref: str) -> str:
        self.pushed.append(ref)
        return "sha256:" + "1" * 64

    def remove_image(self, ref: str) -> None:
        return None

    def remove_containers(self, *, label: str) -> int:
        return 0


class NoRegistry:
    def delete(self, repository: str, digest: str) -> None:
        return None


def test_the_builder_records_a_dockerfile_build_with_its_port_and_log(tmp_path: Path) -> None:
    s = settings(tmp_path)
    buildkit = FakeBuildKit({"ExposedPorts": {"8080/tcp": {}}}, output=BUILDKIT_OUTPUT)
    engine = FakeEngine()
    builder = Builder(
        s,
        None,  # type: ignore[arg-type]  # Packer: never called for a Dockerfile app
        engine,  # type: ignore[arg-type]
        NoRegistry(),  # type: ignore[arg-type]
        recipes=[DockerfileImages(s, buildkit)],
    )
    repo = tree(tmp_path / "repo", {"Dockerfile": "FROM x\nEXPOSE 8080\n", "Procfile": "worker: ./work\n"})
    sha = commit(repo)
    record = builder.build("shop", str(repo), sha)
    assert (record.status, record.builder, record.language, record.port) == (
        "succeeded",
        "dockerfile",
        "docker",
        8080,
    )
    assert record.processes == {"web": "", "worker": "./work"}
    assert engine.pushed == [f"127.0.0.1:5000/shop:{sha}"]
    log = builder.log_path("shop", sha).read_text()
    assert "#5 CACHED" in log and "Building Dockerfile with BuildKit" in log
    assert builder.record("shop", sha).port == 8080


# -- the BuildKit adapter, on a stand-in CLI ------------------------------------------------------------
def fake_cli(tmp_path: Path, body: str) -> str:
    script = tmp_path / "docker"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_the_adapter_runs_the_cli_by_path_with_buildkit_and_streams_its_lines(tmp_path: Path) -> None:
    out = tmp_path / "argv"
    cli = fake_cli(
        tmp_path,
        f'for a in "$@"; do echo "$a"; done > {out}\n'
        'echo "buildkit=$DOCKER_BUILDKIT host=$DOCKER_HOST token=${BILLOWIN_GITHUB_TOKEN:-none}"\n'
        'echo "#5 CACHED" >&2\n',
    )
    context = tree(tmp_path / "ctx", {"Dockerfile": "FROM x\n"})
    os.environ["BILLOWIN_GITHUB_TOKEN"] = "ghp_secret"
    try:
        kit = BuildKit(settings(tmp_path, docker_cli=cli, docker_host="unix:///run/x.sock"))
        lines: list[str] = []
        kit.build(
            context,
            dockerfile=context / "Dockerfile",
            tag="r/shop:1",
            labels={"billowin.app": "shop"},
            log=lines.append,
        )
    finally:
        del os.environ["BILLOWIN_GITHUB_TOKEN"]
    assert lines == ["buildkit=1 host=unix:///run/x.sock token=none", "#5 CACHED"]
    assert out.read_text().splitlines() == [
        "build",
        "--progress=plain",
        "-f",
        str(context / "Dockerfile"),
        "-t",
        "r/shop:1",
        "--label",
        "billowin.app=shop",
        str(context),
    ]
    assert "--no-cache" not in out.read_text()


def test_a_failing_cli_is_a_build_failure_with_its_tail(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path, 'echo "#5 ERROR: boom"\nexit 3\n')
    kit = BuildKit(settings(tmp_path, docker_cli=cli))
    with pytest.raises(BuildFailed, match="exited 3") as caught:
        kit.build(tmp_path, dockerfile=tmp_path / "Dockerfile", tag="t", labels={}, log=lambda _: None)
    assert caught.value.log_tail == "#5 ERROR: boom"


def test_a_build_past_its_time_limit_is_killed_with_everything_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(buildkit_adapter, "GRACE", 0.5)  # SIGTERM, then SIGKILL half a second later
    pidfile = tmp_path / "child.pid"
    # The CLI ignores SIGTERM (as a stuck one might); its child would outlive a plain kill.
    cli = fake_cli(tmp_path, f"trap '' TERM\nsleep 300 &\necho $! > {pidfile}\necho started\nwait\n")
    kit = BuildKit(settings(tmp_path, docker_cli=cli, build_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(BuildFailed, match=r"timed out after 0s|timed out after 1s"):
        kit.build(tmp_path, dockerfile=tmp_path / "Dockerfile", tag="t", labels={}, log=lambda _: None)
    assert time.monotonic() - started < 30
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{child}").exists():
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    gone = not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"
    assert gone, "the whole process group is killed"


def test_inspect_reads_the_images_config(tmp_path: Path) -> None:
    cli = fake_cli(tmp_path, 'echo \'{"ExposedPorts": {"8080/tcp": {}}, "Env": ["PORT=1"]}\'\n')
    assert BuildKit(settings(tmp_path, docker_cli=cli)).inspect("r/shop:1")["ExposedPorts"] == {
        "8080/tcp": {}
    }


def test_a_missing_cli_says_what_to_install(tmp_path: Path) -> None:
    kit = BuildKit(settings(tmp_path, docker_cli=str(tmp_path / "nope")))
    with pytest.raises(Exception, match="cannot run") as caught:
        kit.inspect("x")
    assert "docker.io" in getattr(caught.value, "hint", "")


# -- the release: processes and the port ---------------------------------------------------------------
def test_a_dockerfile_apps_web_listens_on_its_exposed_port_and_runs_the_images_cmd() -> None:
    hcl = render(
        Settings().jobspecs_dir,
        "app.nomad.hcl",
        AppJob(
            app="shop",
            release="v1",
            image="127.0.0.1:5000/shop:abc",
            processes=[
                Process(name="web", port=8080),
                Process(name="worker", command=["sh", "-c", "./work"]),
            ],
        ),
    )
    web = hcl[hcl.index('group "web"') : hcl.index('group "worker"')]
    assert 'port "http" {\n        to = 8080\n      }' in web
    assert 'PORT = "${NOMAD_PORT_http}"' in web, "Nomad's NOMAD_PORT_http is the `to` port: PORT=8080"
    assert "args" not in web, "no command: Docker runs the image's own CMD"
    assert 'args  = ["sh", "-c", "./work"]' in hcl
    packer_app = render(
        Settings().jobspecs_dir,
        "app.nomad.hcl",
        AppJob(app="shop", release="v1", image="i", processes=[Process(name="web")]),
    )
    assert 'port "http" {}' in packer_app and "to =" not in packer_app


class PortBuilder(FakeBuilder):
    """A builder whose image says it listens on 8080 (a Dockerfile's EXPOSE)."""

    def build(self, app: str, repository: str, sha: str, **kw: object) -> BuildRecord:
        return (
            super()
            .build(app, repository, sha, **kw)
            .model_copy(update={"port": 8080, "builder": "dockerfile"})
        )


def test_a_build_rolls_out_the_images_port_on_web_and_the_images_cmd_where_no_command() -> None:
    kv = InMemoryKV(max_wait=0.1)
    apps = AppStore(kv)
    apps.create(App(name="shop", repository="https://github.com/acme/shop", github_repo="acme/shop"))
    jobs = JobStore(kv)
    deployer = FakeDeployer(kv)
    builder = PortBuilder({"web": "", "worker": "./work"})
    worker = Worker(
        kv,
        apps,
        jobs,
        builder,
        deployer,  # type: ignore[arg-type]
        statuses=RecordingStatuses(),
        public_url="https://billowin.example/",
        deploy_timeout=42,
    )
    jobs.create("shop", SHA, kind=JobKind.BUILD, repository="acme/shop")
    worker.run_app("shop")
    (deploy,) = deployer.deploys
    assert [(p.name, p.command, p.port, p.count) for p in deploy.processes] == [
        ("web", None, 8080, 1),
        ("worker", ["sh", "-c", "./work"], None, 0),
    ]


# -- limits: BuildKit's own cgroup ------------------------------------------------------------
def test_buildkit_steps_are_bounded_through_the_engines_buildkit_cgroup_v1(tmp_path: Path) -> None:
    for controller in ("memory", "pids", "cpu"):
        (tmp_path / controller / "docker").mkdir(parents=True)
    why = bound_builds(
        memory_mb=512, pids=128, cpu_shares=256, docker_host="unix:///var/run/docker.sock", root=tmp_path
    )
    assert why is None
    group = "docker/buildkit"
    assert (tmp_path / "memory" / group / "memory.limit_in_bytes").read_text() == str(512 * 1024 * 1024)
    assert (tmp_path / "pids" / group / "pids.max").read_text() == "128"
    assert (tmp_path / "cpu" / group / "cpu.shares").read_text() == "256"


def test_buildkit_steps_are_bounded_on_the_unified_hierarchy_too(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "docker").mkdir()
    assert (
        bound_builds(memory_mb=256, pids=64, cpu_shares=256, docker_host="unix:///x.sock", root=tmp_path)
        is None
    )
    group = tmp_path / "docker" / "buildkit"
    assert (group / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert (group / "pids.max").read_text() == "64"
    assert (group / "cpu.weight").read_text() == "10"


def test_an_engine_elsewhere_is_not_bounded_and_the_build_log_says_so(tmp_path: Path) -> None:
    why = bound_builds(
        memory_mb=256, pids=64, cpu_shares=256, docker_host="tcp://10.0.0.5:2375", root=tmp_path
    )
    assert why == "the Docker Engine at tcp://10.0.0.5:2375 is not on this machine"
    missing = bound_builds(
        memory_mb=256, pids=64, cpu_shares=256, docker_host="unix:///x.sock", root=tmp_path
    )
    assert missing is not None and "does not exist" in missing


def test_a_dockerfile_build_is_bounded_first_and_a_step_killed_for_memory_says_so(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"Dockerfile": "FROM x\nRUN make\n"})
    buildkit = FakeBuildKit(
        output=[
            "#5 [2/2] RUN make",
            "#5 0.270 Killed",
            "#5 ERROR: executor failed running [/bin/sh -c make]: exit code: 137",
        ]
    )
    buildkit.error = BuildFailed("docker build exited 1")
    with pytest.raises(BuildFailed, match=r"more than the 4096 MB memory limit \(BILLOWIN_BUILD_MEMORY_MB\)"):
        DockerfileImages(settings(tmp_path), buildkit).build_image(image_job(tmp_path, src), lambda _: None)
    assert buildkit.bounds == [{"memory_mb": 4096, "pids": 4096, "cpu_shares": 256}]


def test_an_engine_that_cannot_be_bounded_is_named_in_the_build_log(tmp_path: Path) -> None:
    src = tree(tmp_path / "src", {"Dockerfile": "FROM x\n"})
    buildkit = FakeBuildKit()
    buildkit.unbounded = "the Docker Engine at tcp://10.0.0.5:2375 is not on this machine"
    lines: list[str] = []
    DockerfileImages(settings(tmp_path), buildkit).build_image(image_job(tmp_path, src), lines.append)
    assert lines[0] == (
        "-----> Warning: this build's memory and processes are not bounded: "
        "the Docker Engine at tcp://10.0.0.5:2375 is not on this machine"
    )
