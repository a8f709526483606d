"""The app verbs (``Platform``) on in-memory fakes, wired by the real ``System``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from billowin.apps.store import App
from billowin.errors import Conflict, InvalidInput, NotFound
from billowin.pipeline.jobs import JobKind, JobState
from billowin.pipeline.worker import Worker
from billowin.platform import Platform, ProcessSummary
from billowin.release.jobspec import Process
from billowin.release.store import Release, ReleaseStatus
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import FakeBuilder, FakeDeployer, FakeScheduler, InMemoryConfig, InMemoryKV, make_alloc

SHA = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class World:
    system: System
    platform: Platform
    kv: InMemoryKV
    nomad: FakeScheduler
    config: InMemoryConfig

    def release(self, job_version: int | None, status: ReleaseStatus = ReleaseStatus.LIVE) -> Release:
        release = self.system.releases.create(
            "shop",
            f"reg/shop:{job_version}",
            [Process(name="web")],
            [],
            job_version=job_version,
        )
        release.status = status
        self.system.releases.save(release)
        return release


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a unit test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    settings = Settings(
        state_dir=tmp_path, cache_dir=tmp_path, pipeline=False, domain="apps.test", router_port=8080
    )
    kv, nomad, config = InMemoryKV(max_wait=0.1), FakeScheduler(), InMemoryConfig()
    system = System(settings, kv=kv, nomad=nomad, config=config, builder=None)
    system.platform.create(
        App(name="shop", repository="https://github.com/acme/shop", github_repo="acme/shop")
    )
    yield World(system, system.platform, kv, nomad, config)
    assert "_consul" not in system.__dict__, "nothing built a real Consul client"


# -- apps ------------------------------------------------------------------------------------
def test_a_new_app_has_a_url_and_nothing_running(w: World) -> None:
    info = w.platform.info("shop")
    assert info.name == "shop"
    assert info.url == "http://shop.apps.test:8080"
    assert (info.github_repo, info.branch, info.deploy_on) == ("acme/shop", "main", "push")
    assert info.release is None and info.processes == [] and info.domains == []


def test_on_port_80_the_url_has_no_port(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path, cache_dir=tmp_path, pipeline=False, domain="apps.test", router_port=80
    )
    system = System(settings, kv=InMemoryKV(), nomad=FakeScheduler(), config=InMemoryConfig(), builder=None)
    assert system.platform.url("shop") == "http://shop.apps.test"


def test_an_app_name_can_be_taken_once(w: World) -> None:
    with pytest.raises(Conflict):
        w.platform.create(App(name="shop", repository="elsewhere"))


def test_billowin_is_not_an_app_name_it_is_the_api_of_a_production_box(w: World) -> None:
    with pytest.raises(InvalidInput, match="reserved"):
        w.platform.create(App(name="billowin", repository="r"))


def test_unknown_and_malformed_app_names_are_refused(w: World) -> None:
    with pytest.raises(NotFound):
        w.platform.info("nope")
    with pytest.raises(InvalidInput):
        w.platform.info("Not_An-App")


def test_info_shows_the_live_release_and_desired_versus_running_instances(w: World) -> None:
    w.release(0)
    w.release(1, ReleaseStatus.FAILED)
    w.nomad.add_job("shop", {"web": 2, "worker": 1})
    w.nomad.allocs = [
        make_alloc("shop", "web", 0, version=0),
        make_alloc("shop", "web", 1, version=0, status="pending"),
        make_alloc("shop", "worker", 0, version=0),
    ]
    info = w.platform.info("shop")
    assert info.release is not None and info.release.name == "v1", "a failed release is not what runs"
    assert info.processes == [
        ProcessSummary(process="web", desired=2, running=1),
        ProcessSummary(process="worker", desired=1, running=1),
    ]


# -- config vars --------------------------------------------------------------------------------
def test_setting_config_writes_a_new_version_and_queues_its_rollout(w: World) -> None:
    job = w.platform.change_config("shop", {"GREETING": "hi", "DEBUG": "1"}, [])
    assert job is not None
    assert (job.kind, job.note, job.source) == (JobKind.CONFIG, "config: set DEBUG, GREETING", "api")
    assert w.config.latest("shop") == (1, {"GREETING": "hi", "DEBUG": "1"})
    shown = w.platform.config_vars("shop")
    assert (shown.version, shown.values) == (1, {"DEBUG": None, "GREETING": None}), "values stay hidden"
    assert w.platform.config_vars("shop", reveal=True).values == {"DEBUG": "1", "GREETING": "hi"}
    job = w.platform.change_config("shop", {"GREETING": "hello"}, ["DEBUG"])
    assert job is not None and job.note == "config: set GREETING; unset DEBUG"
    assert w.config.latest("shop") == (2, {"GREETING": "hello"})
    assert w.config.read("shop", 1) == {"GREETING": "hi", "DEBUG": "1"}, "old versions are kept as they were"


def test_a_config_change_that_changes_nothing_queues_nothing(w: World) -> None:
    w.platform.change_config("shop", {"A": "1"}, [])
    assert w.platform.change_config("shop", {"A": "1"}, []) is None
    assert w.platform.change_config("shop", {}, ["NOT_SET"]) is None
    assert w.config.latest("shop")[0] == 1
    assert len(w.system.jobs.list("shop")) == 1


@pytest.mark.parametrize(
    ("set_", "unset"), [({"1BAD": "x"}, []), ({}, ["has space"]), ({"__billowin_x": "1"}, [])]
)
def test_a_bad_config_var_name_is_refused_before_anything_is_written(
    w: World, set_: dict[str, str], unset: list[str]
) -> None:
    with pytest.raises(InvalidInput):
        w.platform.change_config("shop", set_, unset)
    assert w.config.latest("shop") == (0, {})
    assert w.system.jobs.list("shop") == []


def test_config_of_an_unknown_app_is_not_found(w: World) -> None:
    with pytest.raises(NotFound):
        w.platform.change_config("nope", {"A": "1"}, [])
    with pytest.raises(NotFound):
        w.platform.config_vars("nope")


# -- domains ----------------------------------------------------------------------------------
def test_a_domain_is_stored_as_normalized_and_its_rollout_queued(w: World) -> None:
    job = w.platform.add_domain("shop", "  WWW.Example.COM. ")
    assert w.system.apps.get("shop").domains == ["www.example.com"]
    assert (job.kind, job.note) == (JobKind.DOMAINS, "domains: add www.example.com")


@pytest.mark.parametrize("domain", ["not a domain", "localhost", "exa_mple.com", "-x.example.com", ""])
def test_an_invalid_domain_is_refused(w: World, domain: str) -> None:
    with pytest.raises(InvalidInput):
        w.platform.add_domain("shop", domain)
    assert w.system.apps.get("shop").domains == []
    assert w.system.jobs.list("shop") == []


def test_a_domain_belongs_to_one_app(w: World) -> None:
    w.platform.create(App(name="blog", repository="r"))
    w.platform.add_domain("blog", "www.example.com")
    with pytest.raises(Conflict, match="already belongs to blog"):
        w.platform.add_domain("shop", "WWW.example.com")
    assert w.system.apps.get("shop").domains == []
    assert w.system.jobs.list("shop") == []


def test_removing_a_domain_queues_its_rollout(w: World) -> None:
    w.platform.add_domain("shop", "a.example.com")
    w.platform.add_domain("shop", "b.example.com")
    job = w.platform.remove_domain("shop", "a.example.com")
    assert (job.kind, job.note) == (JobKind.DOMAINS, "domains: remove a.example.com")
    assert w.system.apps.get("shop").domains == ["b.example.com"]


def test_removing_a_domain_the_app_does_not_have_is_not_found(w: World) -> None:
    with pytest.raises(NotFound):
        w.platform.remove_domain("shop", "nope.example.com")
    assert w.system.jobs.list("shop") == []


def test_a_domain_can_be_removed_as_it_was_typed_when_added(w: World) -> None:
    w.platform.add_domain("shop", "WWW.Example.com")
    w.platform.remove_domain("shop", "WWW.Example.com")
    assert w.system.apps.get("shop").domains == []


def test_creating_an_app_with_another_apps_domain_is_refused(w: World) -> None:
    w.platform.add_domain("shop", "www.example.com")
    with pytest.raises(Conflict):
        w.platform.create(App(name="blog", repository="r", domains=["www.example.com"]))


def test_creating_an_app_with_an_invalid_domain_is_refused(w: World) -> None:
    with pytest.raises((InvalidInput, ValueError)):
        w.platform.create(App(name="blog", repository="r", domains=["Not A Domain"]))


# -- scale, restart --------------------------------------------------------------------------------
def test_scaling_an_app_that_was_never_deployed_is_refused(w: World) -> None:
    with pytest.raises(InvalidInput, match="not deployed yet"):
        w.platform.scale("shop", {"web": 2})


def test_scaling_changes_the_schedulers_counts(w: World) -> None:
    w.nomad.add_job("shop", {"web": 1, "worker": 0})
    assert w.platform.scale("shop", {"web": 3, "worker": 1}) == {"web": 3, "worker": 1}
    assert w.nomad.scaled == [
        ("shop", "web", 3, "billowin ps:scale web=3"),
        ("shop", "worker", 1, "billowin ps:scale worker=1"),
    ]
    job = w.nomad.current("shop")
    assert job is not None
    assert {g["Name"]: g["Count"] for g in job["TaskGroups"]} == {"web": 3, "worker": 1}


def test_scaling_an_unknown_process_type_is_not_found_and_scales_nothing(w: World) -> None:
    w.nomad.add_job("shop", {"web": 1})
    with pytest.raises(NotFound, match="no process type 'clock'"):
        w.platform.scale("shop", {"web": 2, "clock": 1})
    assert w.nomad.scaled == []


@pytest.mark.parametrize("count", [-1, 101])
def test_scaling_out_of_range_is_refused(w: World, count: int) -> None:
    w.nomad.add_job("shop", {"web": 1})
    with pytest.raises(InvalidInput):
        w.platform.scale("shop", {"web": count})
    assert w.nomad.scaled == []
    assert w.platform.scale("shop", {"web": 0}) == {"web": 0}, "zero and a hundred are fine"
    assert w.platform.scale("shop", {"web": 100}) == {"web": 100}


def test_restart_restarts_the_running_instances(w: World) -> None:
    w.nomad.add_job("shop", {"web": 2, "worker": 1})
    w.nomad.allocs = [
        make_alloc("shop", "web", 0, version=0),
        make_alloc("shop", "web", 1, version=0),
        make_alloc("shop", "worker", 0, version=0),
        make_alloc("shop", "web", 0, version=0, status="complete", desired="stop"),
        make_alloc("blog", "web", 0, version=0),
    ]
    assert w.platform.restart("shop") == 3
    assert w.platform.restart("shop", "web") == 2
    with pytest.raises(NotFound):
        w.platform.restart("nope")


# -- releases and deploys -------------------------------------------------------------------------
def test_a_rollback_to_a_missing_release_is_not_found_before_anything_is_queued(w: World) -> None:
    w.release(0)
    with pytest.raises(NotFound, match="no release v7"):
        w.platform.rollback("shop", 7)
    assert w.system.jobs.list("shop") == []
    job = w.platform.rollback("shop", 1)
    assert (job.kind, job.rollback_to, job.source) == (JobKind.ROLLBACK, 1, "api")
    assert w.platform.rollback("shop", None).rollback_to is None


def test_a_deploy_needs_exactly_one_of_a_full_sha_or_an_image(w: World) -> None:
    for bad in ({}, {"sha": SHA, "image": "reg/shop:1"}):
        with pytest.raises(InvalidInput):
            w.platform.deploy("shop", **bad)  # type: ignore[arg-type]
    for sha in ("abc1234", SHA.upper(), SHA + "0", f"{SHA[:-1]}g", f" {SHA}"):
        with pytest.raises(InvalidInput, match="not a full 40-character commit SHA"):
            w.platform.deploy("shop", sha=sha)
    for image in ("reg/shop:1 && rm -rf /", "", "x" * 256, "reg/shop:1\tx"):
        with pytest.raises(InvalidInput):
            w.platform.deploy("shop", image=image)
    assert w.system.jobs.list("shop") == []


@pytest.mark.parametrize("target", [{"sha": f"{SHA}\n"}, {"image": "reg/shop:1\n"}])
def test_a_sha_or_image_with_a_trailing_newline_is_refused(w: World, target: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        w.platform.deploy("shop", **target)  # type: ignore[arg-type]


def test_deploying_a_sha_queues_a_build_of_the_apps_branch(w: World) -> None:
    job = w.platform.deploy("shop", sha=SHA)
    assert (job.kind, job.sha, job.branch, job.source, job.state) == (
        JobKind.BUILD,
        SHA,
        "main",
        "api",
        JobState.QUEUED,
    )
    image = w.platform.deploy("shop", image="reg/shop:hotfix")
    assert (image.kind, image.image, image.note) == (
        JobKind.IMAGE,
        "reg/shop:hotfix",
        "deploy reg/shop:hotfix",
    )
    assert [j.id for j in w.system.jobs.list("shop")] == ["00000001", "00000002"]


def test_an_unknown_deploy_is_not_found(w: World) -> None:
    with pytest.raises(NotFound, match="no deploy 00000009"):
        w.platform.job("shop", "00000009")
    with pytest.raises(NotFound):
        w.platform.job("shop", "00000009", wait=0.05)


def test_following_a_deploy_returns_its_next_step(w: World) -> None:
    job = w.platform.deploy("shop", sha=SHA)
    assert w.platform.job("shop", job.id) == job
    started = time.monotonic()
    same = w.platform.job("shop", job.id, steps_seen=1, wait=0.2)
    assert len(same.steps) == 1 and time.monotonic() - started < 3
    assert w.platform.job("shop", job.id, steps_seen=0, wait=30).id == job.id, "it already has a new step"


def test_releases_of_an_unknown_app_are_not_found(w: World) -> None:
    assert w.platform.releases("shop") == []
    with pytest.raises(NotFound):
        w.platform.releases("nope")


# -- ps ------------------------------------------------------------------------------------------
def test_ps_names_instances_and_maps_them_to_releases_by_job_version(w: World) -> None:
    w.release(0)  # v1 registered job version 0
    w.release(2)  # v2 registered version 2; version 1 was a scale of v1
    started = time.time_ns() - 90 * 10**9
    w.nomad.allocs = [
        make_alloc("shop", "web", 1, version=2, alloc_id="bbbbbbbb-2", created_ns=started),
        make_alloc("shop", "web", 0, version=1, alloc_id="aaaaaaaa-1", restarts=3, created_ns=started),
        make_alloc("shop", "worker", 0, version=2, status="pending", alloc_id="cccccccc-3"),
        make_alloc("shop", "web", 2, version=0, status="complete", desired="stop", alloc_id="dddddddd-4"),
        make_alloc("blog", "web", 0, version=9),
    ]
    ps = w.platform.ps("shop")
    assert [(i.name, i.process, i.alloc, i.state, i.release) for i in ps] == [
        ("web.1", "web", "aaaaaaaa", "running", "v1"),
        ("web.2", "web", "bbbbbbbb", "running", "v2"),
        ("worker.1", "worker", "cccccccc", "pending", "v2"),
    ]
    assert ps[0].restarts == 3
    assert ps[0].age_seconds is not None and 85 <= ps[0].age_seconds <= 120


def test_ps_of_an_instance_older_than_every_release_has_no_release(w: World) -> None:
    w.release(3)
    w.nomad.allocs = [make_alloc("shop", "web", 0, version=1)]
    assert [i.release for i in w.platform.ps("shop")] == [None]


def test_ps_after_a_failed_deploy_was_reverted_names_the_release_that_runs(w: World) -> None:
    w.release(0)  # v1 live at job version 0
    failed = w.release(1, ReleaseStatus.FAILED)  # v2 registered version 1, unhealthy...
    failed.reverted_to_version = 2  # ...so Nomad reverted to v1's spec as job version 2
    w.system.releases.save(failed)
    w.nomad.allocs = [make_alloc("shop", "web", 0, version=2)]
    assert [i.release for i in w.platform.ps("shop")] == ["v1"]


# -- destroy ----------------------------------------------------------------------------------------
def test_destroy_removes_the_app_and_everything_it_had(w: World) -> None:
    w.platform.create(App(name="blog", repository="r"))
    w.platform.change_config("shop", {"A": "1"}, [])
    w.platform.change_config("blog", {"B": "2"}, [])
    w.platform.deploy("shop", sha=SHA)
    w.release(0)
    for job_id in ("shop", "blog", "shopping"):
        w.nomad.add_job(job_id)
    for job_id in ("shop-run-0a1b2c3d", "shop-release-4e5f6a7b"):
        w.nomad.add_job(job_id, meta={"billowin.app": "shop"})
    w.nomad.add_job("shop-run-0a1b2c3e", meta={"billowin.app": "shop-run-0a1b2c3e"})  # an app of that name
    w.platform.destroy("shop")
    assert sorted(j for j, _ in w.nomad.stopped) == ["shop", "shop-release-4e5f6a7b", "shop-run-0a1b2c3d"]
    assert all(purge for _, purge in w.nomad.stopped)
    with pytest.raises(NotFound):
        w.platform.info("shop")
    assert w.system.releases.list("shop") == []
    assert w.system.jobs.list("shop") == []
    assert w.config.latest("shop") == (0, {})
    assert w.kv.kv_keys("billowin/apps/shop/") == []
    assert w.kv.kv_keys("billowin/pipeline/shop/") == []
    assert w.kv.kv_keys("billowin/releases/shop/") == []
    # The other app is untouched.
    assert w.platform.info("blog").name == "blog"
    assert w.config.latest("blog") == (1, {"B": "2"})
    assert {j["ID"] for j in w.nomad.jobs()} == {"blog", "shopping", "shop-run-0a1b2c3e"}


def test_destroying_an_unknown_app_stops_nothing(w: World) -> None:
    w.nomad.add_job("nope")
    with pytest.raises(NotFound):
        w.platform.destroy("nope")
    assert w.nomad.stopped == []


def test_destroying_an_app_leaves_apps_with_longer_names_running(w: World) -> None:
    w.platform.create(App(name="blog", repository="r"))
    w.platform.create(App(name="blog-release-notes", repository="r"))
    w.nomad.add_job("blog")
    w.nomad.add_job("blog-release-notes")
    w.platform.destroy("blog")
    assert [j["ID"] for j in w.nomad.jobs()] == ["blog-release-notes"]


# -- the platform and the worker together ------------------------------------------------------------
def test_a_config_change_goes_live_through_the_pipeline(w: World) -> None:
    deployer = FakeDeployer(w.kv, config=w.config)
    worker = Worker(w.kv, w.system.apps, w.system.jobs, FakeBuilder(), deployer)  # type: ignore[arg-type]
    first = w.platform.deploy("shop", image="reg/shop:1")
    worker.run_app("shop")
    assert w.platform.job("shop", first.id).state == JobState.LIVE
    job = w.platform.change_config("shop", {"GREETING": "hi"}, [])
    assert job is not None
    worker.run_app("shop")
    done = w.platform.job("shop", job.id)
    assert (done.state, done.release) == (JobState.LIVE, "v2")
    info = w.platform.info("shop")
    assert info.release is not None and info.release.config_version == 1
    assert info.release.image == "reg/shop:1"


# -- domains: one owner each -------------------------------------------------------------------------
def test_names_under_billowins_own_domain_are_the_apps_own(w: World) -> None:
    """`blog.apps.test` is app blog's name: nobody can take it (nor the bare domain) as a custom one."""
    w.platform.create(App(name="blog", repository="r"))
    for taken in ("blog.apps.test", "apps.test", "x.y.apps.test"):
        with pytest.raises(InvalidInput, match="Billowin's own domain"):
            w.platform.add_domain("shop", taken)
    assert w.platform.info("shop").domains == []


def test_two_apps_racing_for_one_domain_get_one_owner(w: World) -> None:
    w.platform.create(App(name="blog", repository="r"))
    w.platform.add_domain("shop", "www.example.com")
    with pytest.raises(Conflict, match="belongs to shop"):
        w.platform.add_domain("blog", "WWW.example.com.")
    w.platform.remove_domain("shop", "www.example.com")
    w.platform.add_domain("blog", "www.example.com")  # given up, so free
    assert (w.platform.info("shop").domains, w.platform.info("blog").domains) == ([], ["www.example.com"])


def test_a_destroyed_app_gives_its_domains_back(w: World) -> None:
    w.platform.add_domain("shop", "www.example.com")
    w.platform.destroy("shop")
    w.platform.create(App(name="blog", repository="r", domains=["www.example.com"]))
    assert w.platform.info("blog").domains == ["www.example.com"]


def test_concurrent_domain_edits_lose_nothing(w: World) -> None:
    """Every add is a check-and-set update of the app record: none overwrites another."""
    domains = [f"d{i}.example.com" for i in range(12)]
    threads = [threading.Thread(target=w.platform.add_domain, args=("shop", d)) for d in domains]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(w.platform.info("shop").domains) == sorted(domains)


# -- destroy and the pipeline lock -----------------------------------------------------------------------
def test_destroy_waits_for_a_running_deploy_and_gives_up_plainly(w: World, tmp_path: Path) -> None:
    settings = w.system.settings.model_copy(update={"deploy_timeout": 1})
    platform = System(settings, kv=w.kv, nomad=w.nomad, config=w.config, builder=None).platform
    with w.system.platform.lock.hold("shop") as held:  # a worker is deploying shop
        assert held
        with pytest.raises(Conflict, match="still running"):
            platform.destroy("shop")
    assert w.platform.info("shop").name == "shop"  # nothing was taken apart
    platform.destroy("shop")  # the deploy ended: now it goes
    with pytest.raises(NotFound):
        w.platform.info("shop")
