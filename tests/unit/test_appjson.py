"""app.json: parsing and its messages, detection, and what the pipeline does with it.

The pipeline tests run the real worker on the fakes (``tests/fakes.py``); the deploy-task tests
run the real ``Deployer`` on a scheduler that renders and registers, and a runner that records
each one-off, so the order of predeploy, release, rollout and postdeploy is the real one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billowin.apps.store import App, AppStore
from billowin.build.appjson import AppManifest, parse
from billowin.build.builder import BuildRecord
from billowin.build.detect import detect
from billowin.errors import InvalidInput
from billowin.pipeline.jobs import Job, JobKind, JobState, JobStore
from billowin.pipeline.reporting import JobOutput
from billowin.pipeline.worker import Worker
from billowin.ports import DeployResult
from billowin.release.deploy import Deployer
from billowin.release.jobspec import Process
from billowin.release.oneoff import RunEvent
from billowin.release.store import ReleaseStatus, ReleaseStore
from billowin.settings import Settings
from tests.fakes import FakeBuilder, FakeDeployer, FakeScheduler, InMemoryKV

SHA1, SHA2 = "1" * 40, "2" * 40
PROCFILE = {"web": "python3 app.py", "worker": "python3 worker.py", "release": "migrate"}
FULL = {
    "name": "shop",
    "env": {"SECRET": {"value": "x"}},
    "formation": {"web": {"quantity": 2, "size": "standard-1x"}, "worker": {"quantity": 1}},
    "scripts": {
        "dokku": {"predeploy": "echo pre", "postdeploy": "echo post"},
        "postdeploy": "echo seed",
    },
    "healthchecks": {
        "web": [
            {
                "type": "startup",
                "name": "web check",
                "path": "/health",
                "attempts": 3,
                "timeout": 5,
                "wait": 2,
                "initialDelay": 1,
            }
        ]
    },
}


def manifest(data: dict[str, Any]) -> AppManifest:
    return parse(json.dumps(data))


# -- parsing -------------------------------------------------------------------------------------
def test_the_keys_billowin_honours_are_read() -> None:
    m = manifest(FULL)
    assert m.initial_scale() == {"web": 2, "worker": 1}
    assert m.web_check_settings() == {
        "health_path": "/health",
        "health_timeout": 5,
        "health_interval": 2,
        "health_restart_after": 3,
        "health_grace": 1,
    }
    assert [(t.name, t.command) for t in m.predeploy()] == [("predeploy", "echo pre")]
    assert [(t.name, t.command, t.source) for t in m.postdeploy(first_deploy=True)] == [
        ("postdeploy", "echo seed", "app.json scripts.postdeploy"),
        ("postdeploy", "echo post", "app.json scripts.dokku.postdeploy"),
    ], "Heroku's postdeploy on the first deploy, then Dokku's"
    assert [t.command for t in m.postdeploy(first_deploy=False)] == ["echo post"]


def test_what_is_understood_but_not_applied_is_warned_about_never_silently_dropped() -> None:
    data = {
        **FULL,
        "addons": ["heroku-postgresql"],
        "formation": {"web": {"quantity": 2, "size": "standard-1x", "max_parallel": 2}},
        "scripts": {"dokku": {"predeploy": "x", "later": "y"}, "pr-predestroy": "z"},
        "healthchecks": {
            "web": [
                {"type": "uptime", "uptime": 10},
                {"path": "/health", "content": "ok", "port": 8080},
                {"path": "/other"},
            ],
            "worker": [{"type": "startup", "command": ["true"]}],
        },
    }
    warnings = manifest(data).warnings
    for expected in (
        "app.json env is not applied: set config vars",
        "app.json addons is not applied",
        "formation.web.size is not applied",
        "formation.web.max_parallel is not applied",
        "scripts.dokku.later is not run",
        "scripts.pr-predestroy is not run",
        "healthchecks.web[0]: only HTTP checks (with a path) are supported",
        "healthchecks.web[0].type 'uptime' is not one of startup, readiness, liveness",
        "healthchecks.web[1].content is not applied: Consul's HTTP check passes on any 2xx",
        "healthchecks.web[1].port is not applied",
        "healthchecks.web[2]: Billowin renders one check, the first with a path",
        "healthchecks.worker: Billowin checks the web process only",
    ):
        assert any(w.startswith(expected) for w in warnings), (expected, warnings)
    assert manifest(data).web_check_settings() == {"health_path": "/health"}


def test_unknown_keys_are_allowed_and_descriptive_ones_pass_in_silence() -> None:
    m = manifest({"name": "shop", "description": "a shop", "logo": "x.png", "keywords": ["a"], "x-own": {}})
    assert m.warnings == []
    assert (m.initial_scale(), m.web_check_settings(), m.predeploy()) == ({}, {}, [])


def test_an_empty_script_is_no_script() -> None:
    m = manifest({"scripts": {"dokku": {"predeploy": "  ", "postdeploy": ""}, "postdeploy": ""}})
    assert m.predeploy() == [] and m.postdeploy(first_deploy=True) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"formation": {"web": {"quantity": "2"}}},
            'formation.web.quantity should be a whole number (got "2")',
        ),
        (
            {"formation": {"web": {"quantity": 101}}},
            "formation.web.quantity should be less than or equal to 100",
        ),
        (
            {"formation": {"web": {"quantity": -1}}},
            "formation.web.quantity should be greater than or equal to 0",
        ),
        ({"formation": {"web": 2}}, "formation.web should be an object ({...}) (got 2)"),
        ({"formation": [{"process": "web"}]}, "formation should be an object"),
        ({"scripts": {"dokku": {"predeploy": 5}}}, "scripts.dokku.predeploy should be a string (got 5)"),
        ({"scripts": {"postdeploy": ["a"]}}, "scripts.postdeploy should be a string"),
        (
            {"scripts": {"dokku": {"postdeploy": "x" * 5000}}},
            "scripts.dokku.postdeploy should have at most 4096",
        ),
        (
            {"scripts": {"dokku": {"postdeploy": "a\x00b"}}},
            "scripts.dokku.postdeploy should not contain a NUL",
        ),
        ({"healthchecks": {"web": {"path": "/"}}}, "healthchecks.web should be a list ([...])"),
        ({"healthchecks": {"web": [{"path": "health"}]}}, "healthchecks.web[0].path should start with '/'"),
        ({"healthchecks": {"web": [{"path": "/a?b=1"}]}}, "healthchecks.web[0].path should start with '/'"),
        ({"healthchecks": {"web": [{"path": 1}]}}, "healthchecks.web[0].path should be a string (got 1)"),
        (
            {"healthchecks": {"web": [{"timeout": 0}]}},
            "healthchecks.web[0].timeout should be greater than or",
        ),
        ({"healthchecks": {"web": [{"timeout": 601}]}}, "healthchecks.web[0].timeout should be less than or"),
        (
            {"healthchecks": {"web": [{"timeout": 2.5}]}},
            "healthchecks.web[0].timeout should be a whole number",
        ),
        ({"healthchecks": {"web": [{"attempts": 0}]}}, "healthchecks.web[0].attempts should be greater than"),
        ({"healthchecks": {"web": [{"attempts": 101}]}}, "healthchecks.web[0].attempts should be less than"),
        (
            {"healthchecks": {"web": [{"attempts": True}]}},
            "healthchecks.web[0].attempts should be a whole number",
        ),
        (
            {"healthchecks": {"web": [{"wait": "5"}]}},
            'healthchecks.web[0].wait should be a whole number (got "5")',
        ),
        (
            {"healthchecks": {"web": [{"initialDelay": -1}]}},
            "healthchecks.web[0].initialDelay should be greater",
        ),
        ({"billowin": {"language": 3}}, "billowin.language should be a string"),
    ],
)
def test_a_key_billowin_honours_with_a_wrong_value_is_refused_by_its_path(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        manifest(data)
    assert info.value.message.startswith("app.json ")
    assert message in info.value.message
    assert "Fix app.json" in info.value.hint


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(InvalidInput) as info:
        manifest({"formation": {"web": {"quantity": "2"}}, "healthchecks": {"web": [{"timeout": 0}]}})
    assert "formation.web.quantity" in info.value.message
    assert "; healthchecks.web[0].timeout" in info.value.message


@pytest.mark.parametrize(
    ("text", "message"), [("{", "app.json is not valid JSON"), ("[1]", "app.json should hold a JSON object")]
)
def test_app_json_must_be_a_json_object(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse(text)


def test_the_manifest_survives_the_build_record_without_its_warnings() -> None:
    m = manifest(FULL)
    assert m.warnings
    record = BuildRecord(
        app="shop", sha=SHA1, status="succeeded", started_at="2024-01-01T00:00:00Z", manifest=m
    )
    again = BuildRecord.model_validate_json(record.model_dump_json())
    assert again.manifest is not None and again.manifest.warnings == []
    assert again.manifest.web_check_settings() == m.web_check_settings()
    assert again.manifest.postdeploy(first_deploy=True) == m.postdeploy(first_deploy=True)


# -- detection ------------------------------------------------------------------------------------
def tree(tmp_path: Path, app_json: object, procfile: str = "web: python3 app.py\n") -> Path:
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "Procfile").write_text(procfile)
    (tmp_path / "app.json").write_text(app_json if isinstance(app_json, str) else json.dumps(app_json))
    return tmp_path


def test_detect_reads_app_json_once_for_the_language_and_the_deploy(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{}")
    spec = detect(tree(tmp_path, {**FULL, "billowin": {"language": "node"}}))
    assert spec.language == "node"
    assert spec.manifest is not None and spec.manifest.initial_scale() == {"web": 2, "worker": 1}


def test_detect_warns_about_a_formation_for_a_process_the_app_does_not_have(tmp_path: Path) -> None:
    spec = detect(tree(tmp_path, {"formation": {"web": {"quantity": 2}, "clock": {"quantity": 1}}}))
    assert spec.manifest is not None
    assert spec.manifest.warnings == ["formation.clock: the app has no clock process type (web); ignored"]


def test_detect_refuses_a_bad_app_json_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"app\.json healthchecks\.web\[0\]\.attempts"):
        detect(tree(tmp_path, {"healthchecks": {"web": [{"path": "/", "attempts": 0}]}}))


def test_an_app_without_app_json_has_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "app.py").write_text("")
    assert detect(tmp_path).manifest is None


def test_an_app_json_linking_outside_the_tree_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.json"
    outside.write_text('{"formation": {"web": {"quantity": "secret value"}}}')
    src = tmp_path / "src"
    src.mkdir()
    (src / "requirements.txt").write_text("")
    (src / "app.json").symlink_to(outside)
    with pytest.raises(InvalidInput, match="outside the repository"):
        detect(src)


# -- the pipeline, on the fakes ------------------------------------------------------------------
class ManifestBuilder(FakeBuilder):
    """The fake builder, with app.json's manifest on its records, as detect puts it there."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(PROCFILE)
        self.manifest = manifest(data)

    def build(self, app: str, repository: str, sha: str, **kw: object) -> BuildRecord:
        return super().build(app, repository, sha, **kw).model_copy(update={"manifest": self.manifest})


def pipeline(kv: InMemoryKV, builder: FakeBuilder, deployer: Any) -> tuple[JobStore, Worker]:
    AppStore(kv).create(App(name="shop", repository="https://github.com/acme/shop", github_repo="acme/shop"))
    jobs = JobStore(kv)
    return jobs, Worker(kv, AppStore(kv), jobs, builder, deployer, output=JobOutput(None))  # type: ignore[arg-type]


def deploy(jobs: JobStore, worker: Worker, sha: str) -> Job:
    job = jobs.create("shop", sha, kind=JobKind.BUILD, repository="acme/shop")
    worker.run_app("shop")
    done = jobs.get("shop", job.id)
    assert done is not None
    return done


def test_the_first_deploy_takes_app_json_s_formation_scripts_and_check() -> None:
    kv = InMemoryKV(max_wait=0.1)
    deployer = FakeDeployer(kv)
    jobs, worker = pipeline(kv, ManifestBuilder(FULL), deployer)
    assert deploy(jobs, worker, SHA1).state == JobState.LIVE
    (first,) = deployer.deploys
    assert {p.name: p.count for p in first.processes} == {"web": 2, "worker": 1}
    web = next(p for p in first.processes if p.name == "web")
    assert (web.health_path, web.health_timeout, web.health_interval) == ("/health", 5, 2)
    assert (web.health_restart_after, web.health_grace) == (3, 1)
    worker_process = next(p for p in first.processes if p.name == "worker")
    assert (worker_process.health_path, worker_process.health_restart_after) == ("/", None)
    assert [t.command for t in first.predeploy] == ["echo pre"]
    assert first.release_command == "migrate"
    assert [t.command for t in first.postdeploy] == ["echo seed", "echo post"]


def test_later_deploys_keep_the_scale_and_run_heroku_s_postdeploy_no_more() -> None:
    kv = InMemoryKV(max_wait=0.1)
    deployer = FakeDeployer(kv)
    jobs, worker = pipeline(kv, ManifestBuilder(FULL), deployer)
    deploy(jobs, worker, SHA1)
    # The user scales (the release record follows the job, as Platform.scale leaves it).
    live = deployer.releases.current("shop")
    assert live is not None
    live.processes = [p.model_copy(update={"count": 5 if p.name == "web" else 0}) for p in live.processes]
    deployer.releases.save(live)
    assert deploy(jobs, worker, SHA2).state == JobState.LIVE
    second = deployer.deploys[-1]
    assert {p.name: p.count for p in second.processes} == {"web": 5, "worker": 0}, "the user's scale wins"
    assert [t.command for t in second.predeploy] == ["echo pre"], "predeploy runs on every deploy"
    assert [t.command for t in second.postdeploy] == ["echo post"], "scripts.postdeploy ran with the first"


def test_a_first_deploy_that_failed_leaves_heroku_s_postdeploy_for_the_next() -> None:
    kv = InMemoryKV(max_wait=0.1)
    deployer = FakeDeployer(kv)
    jobs, worker = pipeline(kv, ManifestBuilder(FULL), deployer)
    deployer.unhealthy = "Failed due to unhealthy allocations"
    assert deploy(jobs, worker, SHA1).state == JobState.FAILED
    deployer.unhealthy = None
    assert deploy(jobs, worker, SHA2).state == JobState.LIVE
    assert [t.command for t in deployer.deploys[-1].postdeploy] == ["echo seed", "echo post"]
    assert {p.name: p.count for p in deployer.deploys[-1].processes} == {"web": 2, "worker": 1}


def test_without_app_json_nothing_changes() -> None:
    kv = InMemoryKV(max_wait=0.1)
    deployer = FakeDeployer(kv)
    jobs, worker = pipeline(kv, FakeBuilder(PROCFILE), deployer)
    deploy(jobs, worker, SHA1)
    (call,) = deployer.deploys
    assert {p.name: p.count for p in call.processes} == {"web": 1, "worker": 0}
    assert (call.predeploy, call.postdeploy) == ((), ())
    assert next(p for p in call.processes if p.name == "web") == Process(
        name="web", command=["sh", "-c", "python3 app.py"]
    )


# -- deploy tasks, on the real Deployer -----------------------------------------------------------
class RenderingScheduler(FakeScheduler):
    """Takes the rendered jobspec as the job (its HCL kept), and every deployment succeeds."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events
        self.hcl: list[str] = []

    def parse(self, hcl: str) -> dict[str, Any]:
        self.hcl.append(hcl)
        groups = re.findall(r'group "([^"]+)" \{\n    count = (\d+)', hcl)
        app = re.search(r'job "([^"]+)"', hcl)
        assert app is not None
        return {"ID": app[1], "TaskGroups": [{"Name": n, "Count": int(c)} for n, c in groups]}

    def plan(self, job: dict[str, Any]) -> dict[str, Any]:
        return {}

    def submit(self, job: dict[str, Any], *, expect_modify_index: int | None = None) -> str:
        self.events.append("register")
        return super().submit(job, expect_modify_index=expect_modify_index)

    def wait_for_deployment(
        self, job_id: str, *, timeout: float, after_version: int | None = None
    ) -> DeployResult:
        self.events.append("live")
        return DeployResult(job_id, "successful")


class RecordingRunner:
    """Each one-off prints two lines and exits with ``codes[command]`` (0 by default)."""

    def __init__(self, events: list[str], codes: dict[str, int]) -> None:
        self.events = events
        self.codes = codes

    def spec(self, app: str, release: str, image: str, command: str, **_: object) -> str:
        return command

    def run(self, spec: str, *, timeout: float) -> Iterator[RunEvent]:
        self.events.append(spec)
        yield RunEvent("stdout", f"{spec}: working")
        yield RunEvent("stderr", f"{spec}: done")
        yield RunEvent(exit_code=self.codes.get(spec, 0))


def real_deployer(tmp_path: Path, kv: InMemoryKV, codes: dict[str, int]) -> tuple[Deployer, list[str]]:
    events: list[str] = []
    settings = Settings(state_dir=tmp_path, cache_dir=tmp_path, pipeline=False)
    runner = RecordingRunner(events, codes)
    scheduler = RenderingScheduler(events)
    return Deployer(settings, scheduler, ReleaseStore(kv), runner=runner), events  # type: ignore[arg-type]


def test_predeploy_then_release_then_the_rollout_then_postdeploy(tmp_path: Path) -> None:
    kv = InMemoryKV(max_wait=0.1)
    deployer, events = real_deployer(tmp_path, kv, {})
    jobs, worker = pipeline(kv, ManifestBuilder(FULL), deployer)
    done = deploy(jobs, worker, SHA1)
    assert done.state == JobState.LIVE, done.reason
    assert events == ["echo pre", "migrate", "register", "live", "echo seed", "echo post"]
    steps = [s.message for s in done.steps]
    assert "  predeploy: echo pre: working\n  predeploy: echo pre: done" in steps
    assert "  postdeploy: echo post: working\n  postdeploy: echo post: done" in steps
    (hcl,) = deployer.nomad.hcl  # type: ignore[attr-defined]
    assert 'path     = "/health"' in hcl and 'interval = "2s"' in hcl and 'timeout  = "5s"' in hcl
    assert 'check_restart {\n          limit = 3\n          grace = "1s"' in hcl
    assert hcl.count("check_restart") == 1, "only web has a check"
    assert re.search(r'group "web" \{\n    count = 2', hcl)


def test_a_failing_predeploy_rolls_nothing_out(tmp_path: Path) -> None:
    kv = InMemoryKV(max_wait=0.1)
    deployer, events = real_deployer(tmp_path, kv, {"echo pre": 3})
    jobs, worker = pipeline(kv, ManifestBuilder(FULL), deployer)
    done = deploy(jobs, worker, SHA1)
    assert done.state == JobState.FAILED
    assert done.reason == "the predeploy command failed (exit 3); nothing was rolled out"
    assert events == ["echo pre"], "no release phase, no rollout"
    assert deployer.nomad.current("shop") is None
    assert [r.status for r in deployer.releases.list("shop")] == [ReleaseStatus.FAILED]


def test_a_failing_postdeploy_fails_the_job_with_its_output_and_the_release_stays_live(
    tmp_path: Path,
) -> None:
    kv = InMemoryKV(max_wait=0.1)
    deployer, events = real_deployer(tmp_path, kv, {"echo seed": 4})
    jobs, worker = pipeline(kv, ManifestBuilder(FULL), deployer)
    done = deploy(jobs, worker, SHA1)
    assert done.state == JobState.FAILED
    assert done.reason == (
        "v1 is live, but its postdeploy command failed (exit 4): echo seed: working / echo seed: done"
    )
    assert events == ["echo pre", "migrate", "register", "live", "echo seed"], "the next script is not run"
    current = deployer.releases.current("shop")
    assert current is not None and current.name == "v1", "nothing was rolled back"
    assert deployer.nomad.current("shop") is not None
    assert deployer.nomad.stopped == []  # type: ignore[attr-defined]
    # The next deploy is no first deploy: Heroku's postdeploy is not tried again (as on Dokku).
    events.clear()
    assert deploy(jobs, worker, SHA2).state == JobState.LIVE
    assert events == ["echo pre", "migrate", "register", "live", "echo post"]


def test_a_failed_first_deploy_setup_says_how_to_run_it_again(tmp_path: Path) -> None:
    kv = InMemoryKV(max_wait=0.1)
    deployer, _ = real_deployer(tmp_path, kv, {"echo seed": 1})
    tasks = manifest(FULL).postdeploy(first_deploy=True)
    with pytest.raises(InvalidInput) as info:
        deployer.deploy("shop", "reg/shop:1", [Process(name="web")], postdeploy=tasks)
    assert info.value.message.startswith("v1 is live, but its postdeploy command failed (exit 1)")
    assert "by hand with `billowin run`" in info.value.hint
    assert "v1 keeps running" in info.value.hint
