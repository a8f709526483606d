"""The webhooks' app list (``AppCache``): from memory while a blocking query vouches for it, else read.

Runs the real store and cache on the in-memory KV, whose ``kv_list_wait`` really blocks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from billowin.adapters.consul import ConsulRegistry
from billowin.apps.store import App, AppCache, AppStore
from billowin.errors import ServiceError
from billowin.ports import KVEntry
from billowin.settings import Settings
from tests.fakes import InMemoryKV


def _app(name: str, repo: str = "acme/shop") -> App:
    return App(name=name, repository=f"https://github.com/{repo}", github_repo=repo)


def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.005)


class CountingKV(InMemoryKV):
    """Counts direct reads of the tree; ``broken`` makes every watch fail like an unreachable Consul."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.broken = False

    def kv_list(self, prefix: str) -> list[tuple[str, bytes]]:
        self.reads += 1
        return super().kv_list(prefix)

    def kv_list_wait(self, prefix: str, index: int | None, wait: str = "30s") -> tuple[int, list[KVEntry]]:
        if self.broken:
            raise ServiceError("consul", "watch of billowin/apps/ failed: cannot reach http://127.0.0.1:8500")
        return super().kv_list_wait(prefix, index, wait)


class ScriptedKV(CountingKV):
    """The watcher thread's queries are answered by the test: each query's index goes to
    ``asked``, and its answer is the next one put in ``answers`` (``now()``: the tree as it is
    now). Everyone else's calls are answered at once."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: queue.Queue[int | None] = queue.Queue()
        self.answers: queue.Queue[tuple[int, list[KVEntry]] | None] = queue.Queue()

    def kv_list_wait(self, prefix: str, index: int | None, wait: str = "30s") -> tuple[int, list[KVEntry]]:
        if threading.current_thread().name != "billowin-app-cache":
            return super().kv_list_wait(prefix, index, wait)
        self.asked.put(index)
        answer = self.answers.get(timeout=10)
        if answer is None:
            raise ServiceError("consul", "watch of billowin/apps/ failed: the test is over")
        return answer

    def now(self) -> tuple[int, list[KVEntry]]:
        return InMemoryKV.kv_list_wait(self, "billowin/apps/", None)

    def next_query(self) -> int | None:
        return self.asked.get(timeout=5)


@pytest.fixture
def kv() -> CountingKV:
    return CountingKV()


@pytest.fixture
def cache(kv: CountingKV) -> Iterator[AppCache]:
    made = AppCache(AppStore(kv), kv, wait=5, retry=0.01)
    yield made
    made.stop()


def _names(apps: list[App]) -> list[str]:
    return sorted(a.name for a in apps)


def test_while_watching_it_answers_from_memory_and_sees_an_app_another_process_writes(
    kv: CountingKV, cache: AppCache
) -> None:
    cache.store.create(_app("shop"))
    cache.start()
    until(lambda: cache.serving)
    reads = kv.reads
    assert _names(cache.all()) == ["shop"] and _names(cache.following("acme/shop")) == ["shop"]
    assert kv.reads == reads, "served from memory: no read of Consul"

    elsewhere = AppStore(kv)  # another API process, or the CLI's own System
    elsewhere.create(_app("blog", "acme/blog"))
    until(lambda: _names(cache.all()) == ["blog", "shop"])
    assert _names(cache.following("acme/blog")) == ["blog"]
    elsewhere.delete("shop")
    until(lambda: _names(cache.all()) == ["blog"])
    assert cache.following("acme/shop") == []
    until(lambda: cache.serving)
    reads = kv.reads
    cache.all()
    assert kv.reads == reads


def test_its_own_processes_writes_are_seen_at_once(kv: CountingKV, cache: AppCache) -> None:
    cache.start()
    until(lambda: cache.serving)
    store = cache.store
    store.create(_app("shop"))
    assert _names(cache.all()) == ["shop"], "no waiting for the watcher after our own write"
    store.update("shop", lambda app: setattr(app, "github_repo", "acme/moved"))
    assert _names(cache.following("acme/moved")) == ["shop"] and cache.following("acme/shop") == []
    store.delete("shop")
    assert cache.all() == []
    assert cache.serving, "the write read the tree again, so memory serves at once"


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedKV, AppCache]]:
    kv = ScriptedKV()
    cache = AppCache(AppStore(kv), kv, wait=5, retry=0.01)
    cache.start()
    assert kv.next_query() is None, "the first query asks at once"
    kv.answers.put(kv.now())
    until(lambda: cache.serving)
    yield kv, cache
    cache.stop()
    for _ in range(3):
        kv.answers.put(None)


@pytest.mark.parametrize("reread_fails", [False, True], ids=["read-again", "read-again-fails"])
def test_an_answer_from_before_our_own_write_is_never_served_over_it(
    scripted: tuple[ScriptedKV, AppCache], reread_fails: bool
) -> None:
    """The watcher's answer (no apps yet) is still in transit while this process writes an app;
    when it arrives, the write is still what every reader gets, also when reading the tree
    again right after the write failed."""
    kv, cache = scripted
    assert kv.next_query(), "the watcher waits on a blocking query"
    in_transit = kv.now()
    kv.broken = reread_fails
    cache.store.create(_app("shop"))
    kv.broken = False
    assert _names(cache.all()) == ["shop"]
    kv.answers.put(in_transit)
    assert kv.next_query() is None, "an answer to a query sent before our write: asked again at once"
    assert _names(cache.all()) == ["shop"], "the old answer is not served"
    kv.answers.put(kv.now())
    until(lambda: cache.serving)
    assert _names(cache.all()) == ["shop"]


def test_a_list_older_than_an_answer_already_received_is_not_served(
    scripted: tuple[ScriptedKV, AppCache],
) -> None:
    """Our write's re-read installs shop; another process then adds blog; the watcher's
    answer with blog in it arrives but is dropped (asked before our write): until it is
    asked again, readers read, and get blog."""
    kv, cache = scripted
    assert kv.next_query()
    cache.store.create(_app("shop"))
    assert cache.serving and _names(cache.all()) == ["shop"]
    AppStore(kv).create(_app("blog", "acme/blog"))
    kv.answers.put(kv.now())
    assert kv.next_query() is None
    assert not cache.serving and _names(cache.all()) == ["blog", "shop"]
    kv.answers.put(kv.now())
    until(lambda: cache.serving)
    assert _names(cache.all()) == ["blog", "shop"]


def test_a_consul_that_lost_its_state_is_believed(scripted: tuple[ScriptedKV, AppCache]) -> None:
    kv, cache = scripted
    AppStore(kv).create(_app("shop"))
    asked = kv.next_query()
    assert asked
    kv.answers.put(kv.now())
    until(lambda: _names(cache.all()) == ["shop"] and cache.serving)
    assert kv.next_query()
    kv.answers.put((1, []))  # a -dev Consul restarted: its index starts again, its KV is empty
    until(lambda: cache.serving and cache.all() == [])


def test_a_query_unanswered_past_its_wait_is_not_trusted() -> None:
    """A blocking query that Consul should have answered by now (a dropped connection) stops
    vouching for the list: readers read until an answer comes."""
    now = [0.0]
    kv = ScriptedKV()
    cache = AppCache(AppStore(kv), kv, wait=5, grace=1, clock=lambda: now[0])
    try:
        cache.start()
        assert kv.next_query() is None
        kv.answers.put(kv.now())
        assert kv.next_query(), "the watcher waits on its blocking query"
        assert cache.serving
        now[0] = 5 * 17 / 16 + 0.5
        assert cache.serving
        now[0] = 5 * 17 / 16 + 1.5
        assert not cache.serving
        AppStore(kv).create(_app("shop"))
        assert _names(cache.all()) == ["shop"]
    finally:
        cache.stop()
        kv.answers.put(None)


def test_without_a_watcher_it_reads_every_time(kv: CountingKV, cache: AppCache) -> None:
    AppStore(kv).create(_app("shop"))
    reads = kv.reads
    assert _names(cache.all()) == ["shop"] and not cache.serving
    assert kv.reads == reads + 1
    AppStore(kv).create(_app("blog", "acme/blog"))
    assert _names(cache.following("acme/blog")) == ["blog"], "a direct read sees every write at once"


def test_when_the_watcher_fails_it_reads_and_serves_again_once_consul_answers(
    kv: CountingKV, cache: AppCache
) -> None:
    cache.start()
    until(lambda: cache.serving)
    kv.broken = True
    AppStore(kv).create(_app("shop"))  # wakes the watch, whose next call fails
    until(lambda: not cache.serving)
    reads = kv.reads
    assert _names(cache.all()) == ["shop"] and kv.reads == reads + 1, "read directly meanwhile"
    kv.broken = False
    until(lambda: cache.serving)
    assert _names(cache.all()) == ["shop"]


def test_after_stop_it_reads_at_once(kv: CountingKV, cache: AppCache) -> None:
    cache.start()
    until(lambda: cache.serving)
    cache.stop()
    assert not cache.serving
    AppStore(kv).create(_app("shop"))
    assert _names(cache.all()) == ["shop"]
    cache.start()  # started again (a second lifespan on the same System)
    until(lambda: cache.serving)
    assert _names(cache.all()) == ["shop"]


# -- the Consul adapter reads requests' environment once ----------------------------------------
def test_the_consul_session_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/billowin/consul-ca.pem")
    consul = ConsulRegistry(Settings(consul_addr="http://consul.example:8500"))
    http = consul._client.http
    assert http.session.trust_env is False, "not looked up again on every call"
    assert http.session.proxies.get("http") == "http://proxy.example:3128"
    assert http.verify == "/etc/billowin/consul-ca.pem"

    monkeypatch.setenv("NO_PROXY", "consul.example")
    bypassed = ConsulRegistry(Settings(consul_addr="http://consul.example:8500"))._client.http
    assert "http" not in bypassed.session.proxies
