"""Add-ons (``billowin/addons/``) on in-memory fakes: names, records, ports, the service's
checks, provisioning, destroy, and backups taken through a fake ``TaskExec``."""

from __future__ import annotations

import json
import re
import socket
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from billowin.addons.backups import Backup, Backups
from billowin.addons.images import check_version
from billowin.addons.model import (
    MAX_NAME,
    Addon,
    Attachment,
    Kind,
    State,
    check_addon_name,
    check_attach_var,
    parse_kind,
    view,
)
from billowin.addons.service import Addons
from billowin.addons.store import AddonStore
from billowin.apps.store import App
from billowin.errors import Conflict, InvalidInput, NotFound, ServiceError
from billowin.ports import Instance
from billowin.settings import Settings
from billowin.system import System
from tests.fakes import FakeScheduler, InMemoryConfig, InMemoryKV, make_alloc

PASSWORD = "s3cret-Pa55word-never-shown"
DUMP = b"PGDMP\x00\x01fake custom-format dump"
RDB = b"REDIS0011\xfafake rdb"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a unit test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


# -- fakes -------------------------------------------------------------------------------------
@dataclass
class ExecCall:
    alloc: str
    task: str
    command: list[str]
    stdin: bytes


@dataclass
class FakeExec:
    """The ``TaskExec`` port: answers each command from what a test set, records every call.

    ``fail`` holds the programs (``command[0]``) that exit 1, after writing half a dump."""

    counts: dict[str, int] = field(default_factory=lambda: {"public.users": 3, "public.orders": 12})
    keys: int = 5
    fail: set[str] = field(default_factory=set)
    calls: list[ExecCall] = field(default_factory=list)

    def open(self, alloc_id: str, task: str, command: Sequence[str], *, tty: bool = False) -> Any:
        raise NotImplementedError

    def run(
        self,
        alloc_id: str,
        task: str,
        command: Sequence[str],
        *,
        stdin: Iterable[bytes] = (),
        stdout: IO[bytes] | None = None,
    ) -> tuple[int, str]:
        self.calls.append(ExecCall(alloc_id, task, list(command), b"".join(stdin)))
        if command[0] in self.fail:
            if stdout is not None:
                stdout.write(b"half a dump")
            return 1, f"{command[0]}: error: connection to server failed\n"
        out = self.answer(list(command))
        if stdout is not None:
            stdout.write(out)
        return 0, ""

    def answer(self, command: list[str]) -> bytes:
        if command[0] == "psql":
            return "".join(f"{table}\t{n}\n" for table, n in self.counts.items()).encode()
        if command[0] == "pg_dump":
            return DUMP
        if command[:2] == ["redis-cli", "--no-auth-warning"]:
            return b"PONG\n" if command[-1] == "ping" else f"{self.keys}\n".encode()
        if command[0] == "sh" and "--rdb" in command[-1]:
            return RDB
        return b""

    def programs(self) -> list[str]:
        return [c.command[0] for c in self.calls]


class AddonScheduler(FakeScheduler):
    """``FakeScheduler`` that parses add-on jobspecs (their job id and group) and whose restart
    marks the running allocations' task as started again, as Nomad does."""

    def __init__(self) -> None:
        super().__init__()
        self.parsed: list[str] = []

    def parse(self, hcl: str) -> dict[str, Any]:
        self.parsed.append(hcl)
        job = re.search(r'^job "([^"]+)"', hcl, re.MULTILINE)
        group = re.search(r'^  group "([^"]+)"', hcl, re.MULTILINE)
        assert job is not None and group is not None, hcl
        return {"ID": job[1], "Type": "service", "TaskGroups": [{"Name": group[1], "Count": 1}], "Meta": {}}

    def restart(self, job_id: str, group: str | None = None) -> int:
        count = super().restart(job_id, group)
        with self._lock:
            for alloc in self.allocs:
                if alloc["JobID"] == job_id and alloc["ClientStatus"] == "running":
                    for state in alloc["TaskStates"].values():
                        state["Events"] = [{"Type": "Started", "Time": time.time_ns()}]
        return count


class FakeCatalog:
    """The ``ServiceRegistry`` port: every service asked about is healthy at ``address``."""

    def __init__(self, address: str = "10.0.0.5") -> None:
        self.address = address
        self.waited: list[str] = []

    def healthy_instances(self, service: str) -> list[Instance]:
        return [Instance(service, self.address, 19000)]

    def wait_for_healthy(self, service: str, *, count: int, timeout: float) -> list[Instance]:
        self.waited.append(service)
        return self.healthy_instances(service)[:count]

    def health_checks(self) -> list[dict[str, Any]]:
        return []


class FakeDocker:
    """The parts of the ``ContainerEngine`` port add-ons use."""

    def __init__(self) -> None:
        self.removed_volumes: list[str] = []
        self.removed_labels: list[str] = []
        self.pushed: list[str] = []
        self.volumes: set[str] = set()  # left over from before

    def image_exists(self, ref: str) -> bool:
        return False

    def push(self, ref: str) -> str:
        self.pushed.append(ref)
        return ref

    def running_containers(self, *, label: str) -> int:
        return 0

    def remove_containers(self, *, label: str) -> int:
        self.removed_labels.append(label)
        return 0

    def remove_volume(self, name: str) -> bool:
        self.removed_volumes.append(name)
        self.volumes.discard(name)
        return True

    def volume_exists(self, name: str) -> bool:
        return name in self.volumes


class FakeRegistry:
    """The ``ImageRegistry`` port: the tags each repository has (``present``)."""

    def __init__(self) -> None:
        self.present: dict[str, list[str]] = {}

    def tags(self, repository: str) -> list[str]:
        return list(self.present.get(repository, []))


# -- the world -----------------------------------------------------------------------------------
@dataclass
class World:
    system: System
    addons: Addons
    kv: InMemoryKV
    nomad: AddonScheduler
    config: InMemoryConfig
    exec: FakeExec
    docker: FakeDocker
    registry: FakeRegistry
    catalog: FakeCatalog

    @property
    def store(self) -> AddonStore:
        return AddonStore(self.kv)

    def run(self, addon: Addon) -> None:
        """A running allocation of the add-on's job, on a node."""
        node = self.nomad.add_node("node-1")
        self.nomad.allocs.append(make_alloc(addon.job, addon.kind.value, 0, version=0, node=node))


def settings_for(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(
        state_dir=tmp_path,
        cache_dir=tmp_path,
        pipeline=False,
        domain="apps.test",
        router_port=8080,
        addon_ports="19000-19001",
        deploy_timeout=2,
        **extra,
    )


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    kv, nomad, config = InMemoryKV(max_wait=0.1), AddonScheduler(), InMemoryConfig()
    exec_, docker, registry, catalog = FakeExec(), FakeDocker(), FakeRegistry(), FakeCatalog()
    system = System(
        settings_for(tmp_path),
        kv=kv,
        nomad=nomad,
        config=config,
        builder=None,
        catalog=catalog,
        docker=docker,
        image_registry=registry,
        task_exec=exec_,
    )
    system.platform.create(App(name="shop", repository="https://github.com/acme/shop"))
    system.platform.create(App(name="blog", repository="https://github.com/acme/blog"))
    yield World(system, system.addons, kv, nomad, config, exec_, docker, registry, catalog)
    assert "_consul" not in system.__dict__, "nothing built a real Consul client"


def postgres(name: str = "shop-postgres", **fields: Any) -> Addon:
    values: dict[str, Any] = {
        "name": name,
        "kind": Kind.POSTGRES,
        "version": "15",
        "app": "shop",
        "port": 19000,
        "state": State.READY,
        "address": "10.0.0.5",
        "attachments": [Attachment(app="shop", var="DATABASE_URL", linked=True)],
    }
    return Addon(**(values | fields))


def redis(name: str = "shop-redis", **fields: Any) -> Addon:
    defaults: dict[str, Any] = {"kind": Kind.REDIS, "version": "7", "port": 19001}
    return postgres(name, **(defaults | fields))


# -- names, kinds, config vars ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "kind"),
    [
        ("postgres", Kind.POSTGRES),
        ("postgresql", Kind.POSTGRES),
        ("  PostgreSQL ", Kind.POSTGRES),
        ("heroku-postgresql", Kind.POSTGRES),
        ("redis", Kind.REDIS),
        ("heroku-redis", Kind.REDIS),
    ],
)
def test_postgres_and_redis_are_the_kinds_offered(given: str, kind: Kind) -> None:
    assert parse_kind(given) == kind


@pytest.mark.parametrize("given", ["mysql", "mongodb", "", "pg"])
def test_other_kinds_are_refused_with_a_hint_naming_the_offered_ones(given: str) -> None:
    with pytest.raises(InvalidInput, match="not an add-on") as caught:
        parse_kind(given)
    assert "postgres" in (caught.value.hint or "") and "redis" in (caught.value.hint or "")


def test_a_valid_addon_name_is_returned_as_it_is() -> None:
    assert check_addon_name("shop-postgres") == "shop-postgres"
    assert check_addon_name("a" * MAX_NAME) == "a" * MAX_NAME
    assert MAX_NAME == 57, "addon-<name> must fit a 63-character Nomad job / DNS label"


@pytest.mark.parametrize(
    "bad", ["Shop-postgres", "a" * 58, "1shop", "-shop", "shop-", "shop_db", "shop.db", "", None, 7]
)
def test_bad_addon_names_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInput, match="not a valid add-on name"):
        check_addon_name(bad)


def test_attach_vars_are_upper_case_config_keys() -> None:
    assert check_attach_var("DATABASE_URL") == "DATABASE_URL"
    assert check_attach_var("HEROKU_POSTGRESQL_RED_URL") == "HEROKU_POSTGRESQL_RED_URL"
    for bad in ["database_url", "1URL", "_URL", "DATABASE-URL", "", "A" * 64]:
        with pytest.raises(InvalidInput) as caught:
            check_attach_var(bad)
        assert "DATABASE_URL" in (caught.value.hint or "")


def test_versions_come_from_versions_toml(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert check_version(settings, Kind.POSTGRES, None) == "15"
    assert check_version(settings, Kind.POSTGRES, "17") == "17"
    assert check_version(settings, Kind.REDIS, None) == "7"
    assert check_version(settings, Kind.REDIS, "8") == "8"
    with pytest.raises(InvalidInput, match="not offered") as caught:
        check_version(settings, Kind.POSTGRES, "16")
    assert caught.value.hint == "Give one of: 15, 17."
    with pytest.raises(InvalidInput, match="not offered"):
        check_version(settings, Kind.REDIS, "15")


# -- URLs and views ----------------------------------------------------------------------------------
def test_the_url_carries_the_password_and_the_shown_url_masks_it() -> None:
    pg = postgres(port=19005)
    assert pg.url(PASSWORD) == f"postgres://shop_postgres:{PASSWORD}@10.0.0.5:19005/shop_postgres"
    assert pg.shown_url() == "postgres://shop_postgres:********@10.0.0.5:19005/shop_postgres"
    r = redis()
    assert r.url(PASSWORD) == f"redis://default:{PASSWORD}@10.0.0.5:19001/0"
    assert r.shown_url() == "redis://default:********@10.0.0.5:19001/0"
    assert postgres(address="").shown_url() == "", "no URL to show before it is up"


def test_a_view_never_carries_the_password() -> None:
    shown = view(postgres(), status="up").model_dump_json()
    assert PASSWORD not in shown
    data = json.loads(shown)
    assert data["url"].endswith("********@10.0.0.5:19000/shop_postgres")
    assert (data["job"], data["volume"]) == ("addon-shop-postgres", "billowin-addon-shop-postgres")


# -- the store ------------------------------------------------------------------------------------------
def test_a_name_is_recorded_once_and_its_port_claimed_once(tmp_path: Path) -> None:
    store = AddonStore(InMemoryKV())
    store.create(postgres(port=19000))
    with pytest.raises(Conflict, match="already an add-on 'shop-postgres'") as caught:
        store.create(postgres(port=19001))
    assert "--name" in (caught.value.hint or "")
    assert store.taken_ports() == {19000}, "the failed create claimed no port"
    with pytest.raises(Conflict, match="port 19000"):
        store.create(postgres("other", port=19000))
    assert [a.name for a in store.all()] == ["shop-postgres"]


def test_store_update_and_delete(tmp_path: Path) -> None:
    store = AddonStore(InMemoryKV())
    store.create(postgres(state=State.PROVISIONING))
    store.create(redis(app="blog", attachments=[Attachment(app="blog", var="REDIS_URL")]))
    updated = store.update("shop-postgres", lambda a: setattr(a, "state", State.READY))
    assert updated.state == State.READY and store.get("shop-postgres").state == State.READY
    assert [a.name for a in store.of_app("shop")] == ["shop-postgres"]
    store.delete(store.get("shop-postgres"))
    assert store.taken_ports() == {19001}
    with pytest.raises(NotFound):
        store.get("shop-postgres")
    with pytest.raises(NotFound):
        store.update("shop-postgres", lambda a: None)


# -- creating -------------------------------------------------------------------------------------------
def test_create_records_a_provisioning_addon_with_a_default_name_and_a_port(w: World) -> None:
    made = w.addons.create("shop", "postgres")
    assert made.addon.name == "shop-postgres"
    assert (made.addon.kind, made.addon.version) == (Kind.POSTGRES, "15")
    assert made.addon.state == State.PROVISIONING
    assert made.addon.attachments == [Attachment(app="shop", var="DATABASE_URL")]
    assert made.addon.url == "", "no URL before it is up"
    assert "DATABASE_URL" in made.message
    record = w.store.get("shop-postgres")
    assert (record.app, record.port, record.state) == ("shop", 19000, State.PROVISIONING)
    assert w.store.taken_ports() == {19000}
    assert w.config.latest("shop") == (0, {}), "nothing set on the app before it is up"


def test_a_second_addon_of_an_app_gets_the_next_name_and_port_then_ports_run_out(w: World) -> None:
    w.addons.create("shop", "postgres")
    second = w.addons.create("shop", "postgresql", as_="REPLICA_URL")
    assert second.addon.name == "shop-postgres-2"
    assert w.store.get("shop-postgres-2").port == 19001
    with pytest.raises(Conflict, match="every add-on port from 19000 to 19001 is taken") as caught:
        w.addons.create("blog", "redis")
    assert "BILLOWIN_ADDON_PORTS" in (caught.value.hint or "")
    assert [a.name for a in w.store.all()] == ["shop-postgres", "shop-postgres-2"]


def test_a_redis_addon_sets_redis_url_and_takes_the_version_asked(w: World) -> None:
    made = w.addons.create("shop", "redis", version="8")
    assert (made.addon.name, made.addon.version) == ("shop-redis", "8")
    assert made.addon.attachments[0].var == "REDIS_URL"


def test_a_name_given_is_used_and_can_be_taken_once(w: World) -> None:
    assert w.addons.create("shop", "postgres", name="maindb").addon.name == "maindb"
    with pytest.raises(Conflict, match="already an add-on 'maindb'"):
        w.addons.create("blog", "postgres", name="maindb")
    assert w.store.taken_ports() == {19000}, "the refused create claimed no port"
    with pytest.raises(InvalidInput, match="not a valid add-on name"):
        w.addons.create("blog", "postgres", name="Main_DB")


def test_an_app_with_a_database_url_already_is_refused(w: World) -> None:
    w.config.write("shop", {"DATABASE_URL": "postgres://elsewhere/db"})
    with pytest.raises(Conflict, match="already has a config var DATABASE_URL") as caught:
        w.addons.create("shop", "postgres")
    hint = caught.value.hint or ""
    assert "config:unset shop DATABASE_URL" in hint and "--as" in hint
    assert w.store.all() == []
    assert w.addons.create("shop", "postgres", as_="NEW_DATABASE_URL").addon.name == "shop-postgres"


def test_two_addons_cannot_set_the_same_config_var_on_an_app(w: World) -> None:
    w.addons.create("shop", "postgres")
    with pytest.raises(Conflict, match="shop-postgres already sets DATABASE_URL on shop") as caught:
        w.addons.create("shop", "postgres")
    assert "--as" in (caught.value.hint or "")


def test_create_refuses_unknown_apps_kinds_versions_and_vars(w: World) -> None:
    with pytest.raises(NotFound):
        w.addons.create("nope", "postgres")
    with pytest.raises(InvalidInput, match="not an add-on"):
        w.addons.create("shop", "mysql")
    with pytest.raises(InvalidInput, match="not offered") as caught:
        w.addons.create("shop", "postgres", version="16")
    assert "15, 17" in (caught.value.hint or "")
    with pytest.raises(InvalidInput, match="not a config var"):
        w.addons.create("shop", "postgres", as_="database_url")
    assert w.store.all() == [] and w.store.taken_ports() == set()


def test_app_names_starting_with_addon_are_refused(w: World) -> None:
    with pytest.raises(InvalidInput, match="addon-"):
        w.system.platform.create(App(name="addon-shop-postgres", repository="r"))


def test_an_app_with_a_long_name_still_gets_a_default_addon_name(w: World) -> None:
    long = "a" * 53
    w.system.platform.create(App(name=long, repository="r"))
    made = w.addons.create(long, "postgres")
    assert len(made.addon.name) <= MAX_NAME


def test_create_again_retries_a_failed_addon(w: World) -> None:
    w.addons.create("shop", "postgres")
    w.store.update("shop-postgres", lambda a: setattr(a, "state", State.FAILED))
    w.addons.create("shop", "postgres")
    assert w.store.get("shop-postgres").state == State.PROVISIONING


# -- provisioning ------------------------------------------------------------------------------------
def test_provisioning_starts_the_job_and_sets_the_url_on_the_app(w: World) -> None:
    w.addons.create("shop", "postgres")
    tag = w.addons.images.tag(Kind.POSTGRES, "15")
    w.registry.present["billowin/addon-postgres"] = [tag]  # built already: nothing is built
    node = w.nomad.add_node("node-1")
    w.nomad.allocs.append(make_alloc("addon-shop-postgres", "postgres", 0, version=0, node=node))

    addon = w.addons.provision("shop-postgres")

    assert addon.state == State.READY and addon.node == node["ID"] and addon.address == "10.0.0.5"
    assert addon.image == f"{w.system.settings.registry}/billowin/addon-postgres:{tag}"
    assert addon.attachments[0].linked and addon.attachments[0].job
    password = w.config.latest("addon-shop-postgres")[1]["PASSWORD"]
    assert w.config.latest("shop")[1] == {"DATABASE_URL": addon.url(password)}
    assert w.nomad.current("addon-shop-postgres") is not None
    assert all(password not in hcl for hcl in w.nomad.parsed), "the jobspec never holds the password"
    shown = w.addons.info("shop-postgres")
    assert shown.status == "up" and shown.url == addon.shown_url()
    assert password not in shown.model_dump_json()
    assert all(password not in v.model_dump_json() for v in w.addons.listing("shop"))


def test_a_link_that_fails_once_is_retried_by_the_worker(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w.addons.create("shop", "postgres")
    w.registry.present["billowin/addon-postgres"] = [w.addons.images.tag(Kind.POSTGRES, "15")]
    w.nomad.allocs.append(make_alloc("addon-shop-postgres", "postgres", 0, version=0))
    change_config, calls = w.system.platform.change_config, []

    def flaky(app: str, set_: Any, unset: list[str]) -> Any:
        calls.append(app)
        if len(calls) == 1:
            raise ServiceError("consul", "a blip")
        return change_config(app, set_, unset)

    monkeypatch.setattr(w.system.platform, "change_config", flaky)
    w.addons.run_once()  # the job is up; setting DATABASE_URL fails
    w.addons.run_once()
    addon = w.store.get("shop-postgres")
    assert addon.state == State.READY and addon.attachments[0].linked


def test_a_volume_left_from_an_add_on_never_destroyed_is_never_handed_out(w: World) -> None:
    w.addons.create("shop", "postgres")
    w.registry.present["billowin/addon-postgres"] = [w.addons.images.tag(Kind.POSTGRES, "15")]
    w.docker.volumes.add("billowin-addon-shop-postgres")
    with pytest.raises(Conflict, match="already there") as caught:
        w.addons.provision("shop-postgres")
    assert "docker volume rm billowin-addon-shop-postgres" in (caught.value.hint or "")
    assert w.store.get("shop-postgres").state == State.FAILED
    assert w.config.latest("shop")[1] == {}, "no DATABASE_URL to somebody else's data"


# -- destroying --------------------------------------------------------------------------------------
def test_destroy_needs_the_name_as_confirmation(w: World) -> None:
    w.addons.create("shop", "postgres")
    for confirm in ["", "shop", "shop-postgres-2"]:
        with pytest.raises(InvalidInput, match="for good") as caught:
            w.addons.destroy("shop-postgres", confirm=confirm)
        assert "--confirm shop-postgres" in (caught.value.hint or "")
    assert w.store.get("shop-postgres")
    with pytest.raises(NotFound):
        w.addons.destroy("nope", confirm="nope")


def test_destroy_removes_the_job_volume_credentials_backups_and_port(w: World) -> None:
    addon = postgres()
    w.store.create(addon)
    w.config.write("addon-shop-postgres", {"PASSWORD": PASSWORD})
    w.config.write("shop", {"DATABASE_URL": addon.url(PASSWORD), "OTHER": "kept"})
    w.run(addon)
    w.addons.backups.capture(addon)

    jobs = w.addons.destroy("shop-postgres", confirm="shop-postgres")

    assert len(jobs) == 1, "the app's config changes: a new release without DATABASE_URL"
    assert w.config.latest("shop")[1] == {"OTHER": "kept"}
    assert ("addon-shop-postgres", True) in w.nomad.stopped
    assert w.docker.removed_volumes == ["billowin-addon-shop-postgres"]
    assert w.config.latest("addon-shop-postgres") == (0, {})
    assert not w.addons.backups.directory(addon).exists()
    assert w.store.all() == [] and w.store.taken_ports() == set()


def test_an_apps_addons_go_with_it(w: World) -> None:
    w.addons.create("shop", "postgres")
    w.addons.create("blog", "redis")
    w.addons.attach("blog-redis", "shop", as_="CACHE_URL")
    assert [a.app for a in w.store.get("blog-redis").attachments] == ["blog", "shop"]
    w.system.platform.destroy("shop")
    assert [a.name for a in w.store.all()] == ["blog-redis"]
    assert [a.app for a in w.store.get("blog-redis").attachments] == ["blog"]


# -- backups -----------------------------------------------------------------------------------------
@pytest.fixture
def pg(w: World) -> Addon:
    addon = postgres()
    w.store.create(addon)
    w.run(addon)
    return addon


def test_capture_writes_a_private_dump_and_its_record(w: World, pg: Addon) -> None:
    backups = w.addons.backups
    first = backups.capture(pg)
    second = backups.capture(pg, trigger="scheduled")
    assert (first.id, second.id) == ("b001", "b002")
    directory = backups.directory(pg)
    assert sorted(p.name for p in directory.iterdir()) == ["b001.dump", "b001.json", "b002.dump", "b002.json"]
    dump = directory / "b001.dump"
    assert dump.read_bytes() == DUMP
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0
    assert (first.size, first.trigger, first.kind) == (len(DUMP), "manual", Kind.POSTGRES)
    assert first.counts == {"public.users": 3, "public.orders": 12}
    assert Backup.model_validate_json((directory / "b001.json").read_text()) == first
    assert [b.id for b in backups.of(pg)] == ["b001", "b002"]
    alloc = w.nomad.allocs[0]["ID"]
    assert {(c.alloc, c.task) for c in w.exec.calls} == {(alloc, "postgres")}
    assert w.exec.programs() == ["psql", "pg_dump", "psql", "pg_dump"]


def test_ids_keep_counting_past_ten_and_list_in_order(w: World, pg: Addon) -> None:
    for _ in range(11):
        w.addons.backups.capture(pg)
    assert [b.id for b in w.addons.backups.of(pg)][-3:] == ["b009", "b010", "b011"]


def test_a_redis_backup_is_its_rdb_file(w: World) -> None:
    addon = redis()
    w.store.create(addon)
    w.run(addon)
    backup = w.addons.backups.capture(addon)
    assert backup.counts == {"keys": 5}
    assert (w.addons.backups.directory(addon) / "b001.rdb").read_bytes() == RDB


def test_a_failing_dump_leaves_no_file_and_no_backup(w: World, pg: Addon) -> None:
    w.exec.fail = {"pg_dump"}
    with pytest.raises(ServiceError, match=r"pg_dump in shop-postgres failed \(exit 1\)"):
        w.addons.backups.capture(pg)
    assert list(w.addons.backups.directory(pg).iterdir()) == []
    assert w.addons.backups.of(pg) == []
    w.exec.fail = set()
    assert w.addons.backups.capture(pg).id == "b001"


def test_no_backup_of_an_addon_that_is_not_running(w: World) -> None:
    addon = postgres("blog-postgres", app="blog")
    with pytest.raises(ServiceError, match="not running"):
        w.addons.backups.capture(addon)
    w.nomad.allocs.append(make_alloc(addon.job, "postgres", 0, version=0, status="complete"))
    with pytest.raises(ServiceError, match="not running"):
        w.addons.backups.capture(addon)
    assert w.exec.calls == []


def test_prune_keeps_the_newest_of_each_trigger(tmp_path: Path) -> None:
    nomad, exec_ = FakeScheduler(), FakeExec()
    backups = Backups(settings_for(tmp_path, addon_backup_keep=2), nomad, exec_)
    addon = postgres()
    nomad.allocs.append(make_alloc(addon.job, "postgres", 0, version=0))
    for trigger in ["manual", "scheduled", "manual", "scheduled", "manual", "scheduled", "scheduled"]:
        backups.capture(addon, trigger=trigger)
    assert backups.prune(addon) == ["b002", "b004", "b001"]
    assert [(b.id, b.trigger) for b in backups.of(addon)] == [
        ("b003", "manual"),
        ("b005", "manual"),
        ("b006", "scheduled"),
        ("b007", "scheduled"),
    ]
    assert not (backups.directory(addon) / "b001.dump").exists()
    assert backups.prune(addon) == []
    assert backups.capture(addon).id == "b008", "ids are never reused"


def test_a_scheduled_backup_is_due_once_per_interval(tmp_path: Path) -> None:
    nomad = FakeScheduler()
    backups = Backups(settings_for(tmp_path, addon_backup_interval=3600), nomad, FakeExec())
    addon = postgres()
    nomad.allocs.append(make_alloc(addon.job, "postgres", 0, version=0))
    assert backups.due(addon), "never backed up"
    backups.capture(addon, trigger="manual")
    assert backups.due(addon), "a manual backup is not the schedule's"
    backup = backups.capture(addon, trigger="scheduled")
    assert not backups.due(addon)
    old = backup.model_copy(update={"created_at": datetime.now(UTC) - timedelta(seconds=3601)})
    (backups.directory(addon) / f"{backup.id}.json").write_text(old.model_dump_json())
    assert backups.due(addon)

    never = Backups(settings_for(tmp_path / "off", addon_backup_interval=0), nomad, FakeExec())
    assert not never.due(addon)


def test_get_finds_a_backup_by_id_or_the_newest(w: World, pg: Addon) -> None:
    backups = w.addons.backups
    with pytest.raises(NotFound, match="no backups") as caught:
        backups.get(pg, None)
    assert "pg:backups:capture shop" in (caught.value.hint or "")
    backups.capture(pg)
    backups.capture(pg)
    assert backups.get(pg, None).id == "b002"
    assert backups.get(pg, "b001").id == "b001"
    for bad in ["nope", "1", "b1", "../b001", "b001.json"]:
        with pytest.raises(InvalidInput, match="not a backup id"):
            backups.get(pg, bad)
    with pytest.raises(NotFound, match="no backup b009"):
        backups.get(pg, "b009")


def test_restore_feeds_the_dump_back_and_checks_the_counts(w: World, pg: Addon) -> None:
    backup = w.addons.backups.capture(pg)
    w.exec.calls.clear()
    result = w.addons.backups.restore(pg, backup, pg)
    assert (result.backup, result.into, result.verified) == ("b001", "shop-postgres", True)
    assert result.counts == result.expected == backup.counts
    restore = w.exec.calls[0]
    assert restore.command[0] == "pg_restore" and "--single-transaction" in restore.command
    assert restore.stdin == DUMP
    w.exec.counts = {"public.users": 0}
    assert not w.addons.backups.restore(pg, backup, pg).verified


def test_a_redis_restore_restarts_the_task_and_waits_for_it(w: World) -> None:
    addon = redis()
    w.store.create(addon)
    w.run(addon)
    backup = w.addons.backups.capture(addon)
    result = w.addons.backups.restore(addon, backup, addon)
    assert result.verified
    assert [r[0] for r in w.nomad.restarted] == ["addon-shop-redis"]
    assert any(c.stdin == RDB for c in w.exec.calls)


def test_a_backup_cannot_go_into_an_addon_of_another_kind(w: World, pg: Addon) -> None:
    other = redis()
    w.store.create(other)
    w.run(other)
    backup = w.addons.backups.capture(pg)
    w.exec.calls.clear()
    with pytest.raises(InvalidInput, match="a postgres backup cannot go into shop-redis"):
        w.addons.backups.restore(pg, backup, other)
    assert w.exec.calls == []
    with pytest.raises(InvalidInput, match="cannot go into"):
        w.addons.restore("shop", "shop-postgres", "b001", into="shop-redis")


def test_capture_through_the_service_takes_the_apps_only_addon(w: World, pg: Addon) -> None:
    assert w.addons.capture("shop", None).id == "b001"
    with pytest.raises(NotFound, match="blog has no add-on"):
        w.addons.capture("blog", None)
    w.store.update("shop-postgres", lambda a: setattr(a, "state", State.PROVISIONING))
    with pytest.raises(Conflict, match="shop-postgres is provisioning"):
        w.addons.capture("shop", None)
