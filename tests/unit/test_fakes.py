"""The in-memory fakes keep the promises of the real systems the unit tests stand them in for."""

from __future__ import annotations

import threading
import time

import pytest

from billowin.errors import Conflict, NotFound, ServiceError
from tests.fakes import FakeScheduler, InMemoryConfig, InMemoryKV, make_alloc, parse_wait


def test_cas_zero_writes_only_a_key_that_does_not_exist() -> None:
    kv = InMemoryKV()
    assert kv.kv_put("a/b", b"1", cas=0)
    assert not kv.kv_put("a/b", b"2", cas=0)
    assert kv.kv_get("a/b")[1] == b"1"


def test_cas_writes_only_over_the_index_it_read() -> None:
    kv = InMemoryKV()
    kv.kv_put("k", b"1")
    index, _ = kv.kv_get("k")
    assert kv.kv_put("k", b"2", cas=index)
    assert not kv.kv_put("k", b"3", cas=index), "a second writer with the same stale index loses"
    assert kv.kv_get("k")[1] == b"2"
    assert not kv.kv_put("missing", b"x", cas=index), "cas=N on an absent key fails"


def test_every_write_advances_one_global_index_and_keys_remember_create_and_modify() -> None:
    kv = InMemoryKV()
    kv.kv_put("a", b"1")
    kv.kv_put("b", b"1")
    kv.kv_put("a", b"2")
    a, b = kv.entry("a"), kv.entry("b")
    assert a is not None and b is not None
    assert a["CreateIndex"] < b["CreateIndex"] < a["ModifyIndex"] == kv.index
    assert kv.kv_get("a")[0] == a["ModifyIndex"]
    assert kv.kv_get("nope") == (0, None)


def test_listing_is_in_key_order_under_the_prefix_only() -> None:
    kv = InMemoryKV()
    for key in ("p/b", "p/a", "q/a", "p/c/d"):
        kv.kv_put(key, key.encode())
    assert kv.kv_keys("p/") == ["p/a", "p/b", "p/c/d"]
    assert [k for k, _ in kv.kv_list("p/")] == ["p/a", "p/b", "p/c/d"]
    assert [(e.key, e.value) for e in kv.kv_entries("q/")] == [("q/a", b"q/a")]
    kv.kv_delete_tree("p/")
    assert kv.kv_keys("") == ["q/a"]


def test_values_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        InMemoryKV().kv_put("k", "text")  # type: ignore[arg-type]


def test_a_first_wait_answers_at_once_with_the_current_index() -> None:
    kv = InMemoryKV()
    kv.kv_put("x", b"1")
    started = time.monotonic()
    assert kv.kv_wait("x", None, wait="30s") == kv.index
    assert time.monotonic() - started < 0.5


def test_a_blocking_wait_wakes_on_a_write_under_its_prefix_from_another_thread() -> None:
    kv = InMemoryKV()
    index = kv.kv_wait("jobs/", None)
    kv.kv_put("other/x", b"not mine")  # a change elsewhere does not wake it
    writer = threading.Timer(0.05, kv.kv_put, args=("jobs/1", b"new"))
    started = time.monotonic()
    writer.start()
    new_index = kv.kv_wait("jobs/", index, wait="10s")
    elapsed = time.monotonic() - started
    writer.join()
    assert elapsed < 5, "the wait returned on the write, not at its timeout"
    assert new_index > index
    assert kv.kv_get("jobs/1")[1] == b"new"


def test_a_blocking_wait_also_wakes_on_a_deletion() -> None:
    kv = InMemoryKV()
    kv.kv_put("jobs/1", b"x")
    index = kv.kv_wait("jobs/", None)
    deleter = threading.Timer(0.05, kv.kv_delete_tree, args=("jobs/",))
    deleter.start()
    started = time.monotonic()
    assert kv.kv_wait("jobs/", index, wait="10s") > index
    deleter.join()
    assert time.monotonic() - started < 5


def test_a_wait_without_changes_returns_at_its_wait_or_the_cap() -> None:
    kv = InMemoryKV(max_wait=0.05)
    index = kv.kv_wait("jobs/", None)
    started = time.monotonic()
    assert kv.kv_wait("jobs/", index, wait="30s") == index
    assert 0.04 <= time.monotonic() - started < 1
    assert parse_wait("500ms") == 0.5 and parse_wait("2m") == 120


def test_only_one_session_holds_a_lock() -> None:
    kv = InMemoryKV()
    first, second = kv.session_create("a"), kv.session_create("b")
    assert kv.kv_acquire("lock", first)
    assert not kv.kv_acquire("lock", second)
    assert kv.kv_acquire("lock", first), "the holder may acquire again"
    assert kv.holder("lock") == first
    kv.kv_release("lock", second)  # not the holder: nothing happens
    assert kv.holder("lock") == first
    kv.kv_release("lock", first)
    assert kv.kv_acquire("lock", second)


def test_destroying_a_session_deletes_the_keys_it_held() -> None:
    kv = InMemoryKV()
    session = kv.session_create("worker")
    assert kv.kv_acquire("lock", session, b"me")
    kv.session_destroy(session)
    assert kv.kv_get("lock") == (0, None)
    assert not kv.session_renew(session)
    other = kv.session_create("next")
    assert kv.kv_acquire("lock", other)


def test_an_expired_session_loses_its_lock_and_cannot_acquire() -> None:
    kv = InMemoryKV()
    session = kv.session_create("worker")
    assert kv.session_renew(session)
    kv.kv_acquire("lock", session)
    kv.expire(session)
    assert kv.holder("lock") is None
    with pytest.raises(ServiceError):
        kv.kv_acquire("lock", session)


def test_the_scheduler_scales_restarts_and_stops() -> None:
    nomad = FakeScheduler()
    nomad.add_job("shop", {"web": 1, "worker": 0})
    before = nomad.current("shop")
    assert before is not None
    nomad.scale("shop", "web", 3)
    after = nomad.current("shop")
    assert after is not None
    assert after["TaskGroups"][0]["Count"] == 3
    assert after["Version"] == before["Version"] + 1
    assert after["JobModifyIndex"] > before["JobModifyIndex"]
    nomad.allocs = [
        make_alloc("shop", "web", 0, version=1),
        make_alloc("shop", "web", 1, version=1, status="pending"),
        make_alloc("other", "web", 0, version=1),
    ]
    assert nomad.restart("shop") == 1
    assert len(nomad.live_allocations()) == 3
    with pytest.raises(Conflict):
        nomad.submit({"ID": "shop"}, expect_modify_index=0)
    nomad.stop("shop")
    assert nomad.current("shop") is None
    with pytest.raises(NotFound):
        nomad.scale("shop", "web", 1)


def test_config_versions_are_numbered_and_immutable() -> None:
    config = InMemoryConfig()
    assert config.latest("shop") == (0, {})
    assert config.write("shop", {"A": "1"}) == 1
    assert config.write("shop", {"A": "2"}) == 2
    assert config.read("shop", 1) == {"A": "1"}
    assert config.latest("shop") == (2, {"A": "2"})
    with pytest.raises(NotFound):
        config.read("shop", 3)
    config.delete("shop")
    assert config.latest("shop") == (0, {})
