"""Build hygiene: what image collection never removes, pruning of records, logs and caches,
the registry collector's refusal to run beside a live registry, and build isolation
(limits, networks) as the templates and the builder pass them on."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests

from billowin.build import hygiene
from billowin.build.builder import Builder, BuildRecord
from billowin.errors import BuildFailed, Conflict, ServiceError
from billowin.ports import ComponentHealth
from billowin.release.jobspec import AppJob, Process, render
from billowin.release.store import Release, ReleaseStatus
from billowin.settings import REPO_DIR, Settings
from billowin.stack import install
from tests.gitrepo import commit

REGISTRY = "127.0.0.1:5000"
DAY = 86400.0


class FakeDocker:
    """Images by reference; an image in ``in_use`` is refused as Docker refuses it (409)."""

    def __init__(self, images: set[str], in_use: set[str] | None = None) -> None:
        self.images = set(images)
        self.in_use = in_use or set()
        self.broken = False
        self.removed_containers: list[str] = []

    def health(self) -> ComponentHealth:
        return ComponentHealth("docker", True)

    def image_exists(self, ref: str) -> bool:
        return ref in self.images or ref.startswith("billowin/")  # language base images: made

    def push(self, ref: str) -> str:
        return "sha256:" + "0" * 64

    def remove_image(self, ref: str) -> None:
        if self.broken:
            raise ServiceError("docker", "removal failed: the engine fell over")
        if ref in self.in_use:
            raise Conflict(f"{ref} is in use by a container")
        self.images.discard(ref)

    def running_containers(self, *, label: str) -> int:
        return 0

    def remove_containers(self, *, label: str) -> int:
        self.removed_containers.append(label)
        return 0


class FakeRegistry:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []

    def health(self) -> ComponentHealth:
        return ComponentHealth("registry", True)

    def delete(self, repository: str, digest: str) -> None:
        self.deleted.append((repository, digest))

    def tags(self, repository: str) -> list[str]:
        return []


class FakePacker:
    def __init__(self, fail: bool = False) -> None:
        self.variables: list[dict[str, str]] = []
        self.fail = fail

    def version(self) -> str:
        return "1.6.6"

    def build(self, template: str, variables: dict[str, str], *, log: Any, timeout: float = 900) -> list[str]:
        self.variables.append(variables)
        if self.fail:
            raise BuildFailed(f"packer build {template} timed out after {timeout:.0f}s")
        return []


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", registry=REGISTRY, **overrides
    )


def sha(n: int) -> str:
    return f"{n:040x}"


def image(app: str, n: int) -> str:
    return f"{REGISTRY}/{app}:{sha(n)}"


def record(
    builder: Builder, app: str, n: int, *, status: str = "succeeded", age_days: float = 0
) -> BuildRecord:
    """A build record (and its log) of build ``n``; a larger ``n`` started later."""
    started = datetime.now(UTC) - timedelta(days=age_days, seconds=1000 - n)
    rec = BuildRecord(
        app=app,
        sha=sha(n),
        status=status,
        image=image(app, n) if status in ("succeeded", "collected") else None,
        digest=f"sha256:{n:064x}" if status in ("succeeded", "collected") else None,
        started_at=started,
        finished_at=None if status == "building" else started + timedelta(seconds=30),
    )
    builder._save(rec)
    builder.log_path(app, rec.sha).write_text(f"build {n}\n")
    return rec


def release(app: str, number: int, img: str, status: ReleaseStatus) -> Release:
    return Release(app=app, number=number, image=img, processes=[Process(name="web")], status=status)


# -- which images are protected ---------------------------------------------------------------------
def test_protected_images_are_the_newest_live_releases_and_one_rolling_out() -> None:
    history = [
        release("shop", 1, "i1", ReleaseStatus.LIVE),
        release("shop", 2, "i2", ReleaseStatus.LIVE),
        release("shop", 3, "i3", ReleaseStatus.FAILED),
        release("shop", 4, "i4", ReleaseStatus.LIVE),
        release("shop", 5, "i5", ReleaseStatus.DEPLOYING),
    ]
    assert hygiene.protected_images(history, keep=2) == {"i2", "i4", "i5"}
    assert hygiene.protected_images(history, keep=1) == {"i4", "i5"}
    assert hygiene.protected_images(history[:2], keep=1) == {"i2"}
    assert hygiene.protected_images([], keep=3) == set()


def test_an_image_is_protected_by_tag_or_by_digest(tmp_path: Path) -> None:
    builder = Builder(settings(tmp_path), FakePacker(), FakeDocker(set()), FakeRegistry())
    rec = record(builder, "shop", 1)
    assert hygiene.is_protected(rec, {rec.image or ""})
    assert hygiene.is_protected(rec, {f"{REGISTRY}/shop@{rec.digest}"})
    assert not hygiene.is_protected(rec, {image("shop", 2)})


# -- image collection -----------------------------------------------------------------------------
def test_collection_keeps_the_live_image_and_images_in_use(tmp_path: Path) -> None:
    app = "shop"
    live, in_use, free, newest = image(app, 1), image(app, 2), image(app, 3), image(app, 4)
    docker_ = FakeDocker({live, in_use, free, newest}, in_use={in_use})
    registry = FakeRegistry()
    builder = Builder(
        settings(tmp_path, keep_images=1), FakePacker(), docker_, registry, protected_images=lambda _a: {live}
    )
    for n in (1, 2, 3, 4):
        record(builder, app, n)
    lines: list[str] = []

    assert builder.collect_garbage(app, log=lines.append) == [free]

    assert docker_.images == {live, in_use, newest}
    assert registry.deleted == [(app, f"sha256:{3:064x}")]
    assert builder.record(app, sha(3)).status == "collected"
    assert builder.record(app, sha(2)).status == "succeeded"  # tried again next time
    assert builder.record(app, sha(1)).status == "succeeded"
    assert any("Keeping" in line and in_use in line for line in lines)

    docker_.in_use.clear()  # the container went away
    assert builder.collect_garbage(app) == [in_use]


def test_nothing_is_collected_while_the_releases_cannot_be_read(tmp_path: Path) -> None:
    def unreadable(_app: str) -> set[str]:
        raise ServiceError("consul", "cannot reach 127.0.0.1:8500")

    docker_ = FakeDocker({image("shop", 1), image("shop", 2)})
    builder = Builder(
        settings(tmp_path, keep_images=1), FakePacker(), docker_, FakeRegistry(), protected_images=unreadable
    )
    record(builder, "shop", 1)
    record(builder, "shop", 2)
    assert builder.collect_garbage("shop") == []
    assert docker_.images == {image("shop", 1), image("shop", 2)}


def test_a_failing_clean_up_never_fails_a_build(tmp_path: Path) -> None:
    docker_ = FakeDocker({image("shop", 1), image("shop", 2)})
    docker_.broken = True
    builder = Builder(settings(tmp_path, keep_images=1), FakePacker(), docker_, FakeRegistry())
    record(builder, "shop", 1)
    record(builder, "shop", 2)
    lines: list[str] = []
    builder.tidy("shop", log=lines.append)  # does not raise
    assert any("Clean-up" in line and "fell over" in line for line in lines)
    assert builder.record("shop", sha(1)).status == "succeeded"


def test_forget_removes_manifests_even_of_images_in_use(tmp_path: Path) -> None:
    docker_ = FakeDocker({image("shop", 1)}, in_use={image("shop", 1)})
    registry = FakeRegistry()
    builder = Builder(settings(tmp_path), FakePacker(), docker_, registry)
    record(builder, "shop", 1)
    builder.forget("shop")
    assert registry.deleted == [("shop", f"sha256:{1:064x}")]
    assert not (tmp_path / "state" / "builds" / "shop").exists()


def test_docker_refusing_to_remove_an_image_in_use_becomes_a_conflict() -> None:
    from billowin.adapters.docker import DockerEngine, ImageInUse

    response = requests.Response()
    response.status_code = 409

    class Images:
        def remove(self, ref: str, noprune: bool = False) -> None:
            raise docker.errors.APIError(
                "409 Client Error", response=response, explanation="container 1a2b is using its image"
            )

    class Client:
        images = Images()

    engine = DockerEngine(settings(Path("/nonexistent")))
    engine._client_obj = Client()  # type: ignore[assignment]
    with pytest.raises(ImageInUse, match="1a2b") as info:
        engine.remove_image(image("shop", 1))
    assert isinstance(info.value, Conflict)


# -- records and logs ---------------------------------------------------------------------------------
def test_old_failed_and_collected_builds_are_pruned_but_never_live_ones(tmp_path: Path) -> None:
    builder = Builder(settings(tmp_path), FakePacker(), FakeDocker(set()), FakeRegistry())
    app = "shop"
    old_failed = record(builder, app, 1, status="failed", age_days=40)
    old_collected = record(builder, app, 2, status="collected", age_days=40)
    old_live = record(builder, app, 3, status="collected", age_days=40)  # collected before this fix
    old_succeeded = record(builder, app, 4, status="succeeded", age_days=40)
    stale_building = record(builder, app, 5, status="building", age_days=40)
    new_failed = record(builder, app, 6, status="failed")
    building = record(builder, app, 7, status="building")
    (builder.log_path(app, old_failed.sha).with_suffix(".src")).mkdir()

    gone = hygiene.prune_build_records(
        tmp_path / "state" / "builds",
        retention=30 * DAY,
        max_bytes=10**9,
        protected=lambda _a: {old_live.image or ""},
        now=time.time(),
        stale_after=3600,
    )

    assert sorted(gone) == sorted(f"{app}/{r.sha}" for r in (old_failed, old_collected, stale_building))
    left = {p.name for p in (tmp_path / "state" / "builds" / app).iterdir()}
    assert left == {
        f"{r.sha}{ext}" for r in (old_live, old_succeeded, new_failed, building) for ext in (".json", ".log")
    }


def test_over_the_size_cap_the_oldest_prunable_builds_go_first(tmp_path: Path) -> None:
    builder = Builder(settings(tmp_path), FakePacker(), FakeDocker(set()), FakeRegistry())
    for n in range(1, 6):
        rec = record(builder, "shop", n, status="failed" if n != 1 else "succeeded")
        builder.log_path("shop", rec.sha).write_text("x" * 10_000)
    busy = {("shop", sha(2))}  # a build of this SHA is running in this process
    gone = hygiene.prune_build_records(
        tmp_path / "state" / "builds",
        retention=30 * DAY,
        max_bytes=32_000,  # five builds of ~10.4 kB: two must go
        protected=lambda _a: set(),
        busy=busy,
        now=time.time(),
        stale_after=3600,
    )
    assert gone == ["shop/" + sha(3), "shop/" + sha(4)]  # 1 is succeeded, 2 is busy


def test_an_unreadable_release_history_protects_every_record_of_the_app(tmp_path: Path) -> None:
    builder = Builder(settings(tmp_path), FakePacker(), FakeDocker(set()), FakeRegistry())
    record(builder, "shop", 1, status="failed", age_days=40)

    def unreadable(_app: str) -> set[str]:
        raise ServiceError("consul", "down")

    gone = hygiene.prune_build_records(
        tmp_path / "state" / "builds",
        retention=DAY,
        max_bytes=10**9,
        protected=unreadable,
        now=time.time(),
        stale_after=3600,
    )
    assert gone == []


# -- dependency caches ---------------------------------------------------------------------------------
def test_caches_go_whole_when_unused_or_over_the_cap_least_recently_used_first(tmp_path: Path) -> None:
    root = tmp_path / "build-cache"
    now = time.time()
    for app, age_days, size in (
        ("old", 40, 10),
        ("lru", 5, 10**5),
        ("recent", 1, 10**5),
        ("busy", 50, 10**5),
    ):
        cache = root / app
        (cache / "go" / "mod").mkdir(parents=True)
        (cache / "go" / "mod" / "blob").write_bytes(b"x" * size)
        (cache / "go" / "mod").chmod(0o555)  # Go's module cache is read-only
        hygiene.mark_cache_used(cache)
        os.utime(cache / hygiene.CACHE_MARK, (now - age_days * DAY, now - age_days * DAY))

    removed = hygiene.prune_build_caches(root, max_age=30 * DAY, max_bytes=250_000, busy={"busy"}, now=now)

    assert removed == ["old", "lru"]
    assert sorted(p.name for p in root.iterdir()) == ["busy", "recent"]


def test_a_build_marks_its_cache_used(tmp_path: Path) -> None:
    cache = tmp_path / "build-cache" / "shop"
    hygiene.mark_cache_used(cache)
    assert time.time() - (cache / hygiene.CACHE_MARK).stat().st_mtime < 60


# -- the registry's collector ---------------------------------------------------------------------------
def test_registry_garbage_collection_refuses_while_the_registry_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hygiene, "registry_answers", lambda _address: True)
    ran: list[object] = []
    monkeypatch.setattr(hygiene.subprocess, "run", lambda *a, **k: ran.append(a))
    (tmp_path / "registry").mkdir()
    with pytest.raises(ServiceError, match="while the registry"):
        hygiene.collect_registry_garbage("docker-registry", tmp_path / "registry", address=REGISTRY)
    assert ran == []


def test_registry_garbage_collection_runs_the_collector_on_a_stopped_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hygiene, "registry_answers", lambda _address: False)
    seen: list[tuple[list[str], dict[str, Any]]] = []

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append((argv, json.loads(Path(argv[2]).read_text())))
        return subprocess.CompletedProcess(argv, 0, "blob eligible for deletion\n", "")

    monkeypatch.setattr(hygiene.subprocess, "run", run)
    (tmp_path / "registry").mkdir()
    out = hygiene.collect_registry_garbage("docker-registry", tmp_path / "registry", address=REGISTRY)
    assert out == ["blob eligible for deletion"]
    ((argv, config),) = seen
    assert argv[:2] == ["docker-registry", "garbage-collect"] and "--delete-untagged" not in argv
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "registry")


# -- isolation: limits and networks ------------------------------------------------------------------------
def test_build_limits_and_network_reach_packer(tmp_path: Path) -> None:
    packer = FakePacker()
    s = settings(tmp_path, build_memory_mb=512, build_pids_limit=128, build_network="builds-net")
    docker_ = FakeDocker(set())
    builder = Builder(s, packer, docker_, FakeRegistry())
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "requirements.txt").write_text("")
    (repo / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    builder.build("shop", str(repo), commit(repo))
    assert [v["stage"] for v in packer.variables] == ["deps", "app"]  # dependencies, then the source
    for variables in packer.variables:
        assert {k: variables[k] for k in ("memory_mb", "pids_limit", "network", "owner", "cpu_shares")} == {
            "memory_mb": "512",
            "pids_limit": "128",
            "network": "builds-net",
            "owner": builder.owner,
            "cpu_shares": "256",
        }
        assert len(variables["build_id"]) == 32
    other = Builder(settings(tmp_path / "other"), packer, FakeDocker(set()), FakeRegistry())
    assert other.owner != builder.owner  # each control plane removes only its own stale containers
    for template in ("app.json", "base.json"):
        spec = json.loads((REPO_DIR / "packer" / template).read_text())
        run = spec["builders"][0]["run_command"]
        for flag in (
            "--network={{user `network`}}",
            "--memory={{user `memory_mb`}}m",
            "--memory-swap={{user `memory_mb`}}m",
            "--pids-limit={{user `pids_limit`}}",
            "--cpu-shares={{user `cpu_shares`}}",
            "billowin.build.owner={{user `owner`}}",
        ):
            assert flag in run, (template, flag)
        assert run.index("--") > run.index("--pids-limit={{user `pids_limit`}}")
        assert {"memory_mb", "pids_limit", "network", "owner"} <= set(spec["variables"])


def test_a_build_packer_gave_up_on_removes_its_container_and_says_why(tmp_path: Path) -> None:
    packer, docker_ = FakePacker(fail=True), FakeDocker(set())
    builder = Builder(settings(tmp_path, build_timeout=60), packer, docker_, FakeRegistry())
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "requirements.txt").write_text("")
    (repo / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    with pytest.raises(BuildFailed, match="longer than its 60s limit"):
        builder.build("shop", str(repo), commit(repo))
    assert docker_.removed_containers == [f"billowin.build.id={packer.variables[0]['build_id']}"]


def test_a_build_killed_for_memory_says_so(tmp_path: Path) -> None:
    builder = Builder(
        settings(tmp_path, build_memory_mb=256), FakePacker(), FakeDocker(set()), FakeRegistry()
    )
    tail = "    docker: Killed\n==> docker: Script exited with non-zero exit status: 137."
    reason = builder._failure_reason(BuildFailed("packer build app.json exited 1", log_tail=tail))
    assert "256 MB memory limit" in reason
    timed_out = builder._failure_reason(BuildFailed("packer build app.json timed out after 900s"))
    assert "BILLOWIN_BUILD_TIMEOUT" in timed_out


def test_app_instances_and_runs_join_the_apps_network_and_advertise_the_host_port() -> None:
    jobspecs = Settings().jobspecs_dir
    hcl = render(
        jobspecs,
        "app.nomad.hcl",
        AppJob(app="shop", release="v1", image="i", processes=[Process(name="web"), Process(name="worker")]),
    )
    assert hcl.count('network_mode = "billowin-apps"') == 2
    assert 'address_mode = "host"' in hcl
    custom = AppJob(app="shop", release="v1", image="i", processes=[Process(name="web")], network_mode="n1")
    assert 'network_mode = "n1"' in render(jobspecs, "app.nomad.hcl", custom)
    with pytest.raises(ValueError, match="pattern"):
        AppJob(app="shop", release="v1", image="i", processes=[], network_mode='x" privileged = true')

    from billowin.release.oneoff import RunJob

    run = render(
        jobspecs,
        "run.nomad.hcl",
        RunJob(job_id="shop-run-1", app="shop", release="v1", kind="run", image="i", script="true"),
    )
    assert 'network_mode = "billowin-apps"' in run


def test_the_stack_makes_both_networks_with_inter_container_traffic_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def docker_cli(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if argv[:3] == ["docker", "network", "inspect"]:
            if argv[-1] == "billowin-apps":
                return subprocess.CompletedProcess(argv, 1, "", "Error: No such network: billowin-apps")
            return subprocess.CompletedProcess(argv, 0, json.dumps({install.ICC: "false"}), "")
        return subprocess.CompletedProcess(argv, 0, "id\n", "")

    monkeypatch.setattr(install.subprocess, "run", docker_cli)
    assert install.ensure_docker_networks(settings(tmp_path)) == ["billowin-apps"]
    create = next(c for c in calls if c[:3] == ["docker", "network", "create"])
    assert create[-1] == "billowin-apps" and f"{install.ICC}=false" in create

    def icc_on(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, json.dumps({}), "")

    monkeypatch.setattr(install.subprocess, "run", icc_on)
    with pytest.raises(Exception, match="inter-container traffic on"):
        install.ensure_docker_networks(settings(tmp_path))
