"""Apps and their deploy policy, kept in Consul KV under ``billowin/apps/<name>/app``.

``AppStore`` reads and writes the records. ``AppCache`` serves ``all()`` from
memory for the webhooks (every delivery needs the list: whose secrets to try,
which apps to queue), kept current by a thread that holds a Consul blocking
query on the prefix. It never serves a list older than the newest answer a
blocking query has given, nor one fetched before this process's own last write
of an app; while its watcher is not running, has failed, or is overdue, every
``all()`` reads Consul directly. A write made by another process is seen as
soon as Consul answers the blocking query (typically within a millisecond).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_serializer, field_validator

from billowin.errors import BillowinError, Conflict, NotFound
from billowin.names import check_app_name, is_app_name, is_domain, normalize_domain
from billowin.ports import KeyValueStore, KVEntry

PREFIX = "billowin/apps"
DOMAINS = "billowin/domains"  # <domain> -> the app that owns it
log = logging.getLogger("billowin.apps")
# A git branch name Billowin accepts: no leading '-', no '..', only safe characters.
BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,200}$")
# owner/name as GitHub spells it; neither part may be "." or "..".
GITHUB_REPO = re.compile(r"^(?!\.\.?/)[A-Za-z0-9_.-]{1,100}/(?!\.\.?$)[A-Za-z0-9_.-]{1,100}$")


class DeployOn(StrEnum):
    PUSH = "push"  # every push to the branch deploys
    CI = "ci"  # wait until CI passed for that exact SHA


VOLUME_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
# An absolute path in the container, of plain parts: never the root, a system directory or ..
VOLUME_PATH = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
SYSTEM_PATHS = ("/bin", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr")
NOMAD_PATHS = ("/local", "/secrets", "/alloc")  # Nomad's own directories in every task


class AppVolume(BaseModel):
    """A persistent volume mounted into one process type (``volumes:add``): a Docker volume on the
    node that holds it, ``billowin-vol-<app>-<name>``; the process type runs only there."""

    name: str = Field(pattern=VOLUME_NAME.pattern)
    path: str = Field(pattern=VOLUME_PATH.pattern, max_length=200)
    process: str = Field("web", pattern=r"^[a-z][a-z0-9_-]{0,30}$")
    node: str | None = None  # the Nomad node that holds it, once the process first ran there

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parts = value.split("/")
        taken = (*SYSTEM_PATHS, *NOMAD_PATHS)
        if ".." in parts or "." in parts or any(value == p or value.startswith(f"{p}/") for p in taken):
            raise ValueError(f"{value!r} is a system directory or not a plain path: give one like /data")
        return value

    def docker_volume(self, app: str) -> str:
        return f"billowin-vol-{app}-{self.name}"


class App(BaseModel):
    name: str
    repository: str  # what the builder fetches: an https:// URL or a local path
    github_repo: str | None = None  # "owner/name", as GitHub payloads say it
    branch: str = "main"
    deploy_on: DeployOn = DeployOn.PUSH
    ci_workflow: str | None = None  # only this GitHub Actions workflow counts, when set
    webhook_secret: SecretStr | None = None  # per app; else BILLOWIN_GITHUB_WEBHOOK_SECRET
    domains: list[str] = Field(default_factory=list)
    # A deploy token for a private https repository, sent to git as a header (never in the
    # URL, argv or a log) by the builder; write-only: no API answer includes it.
    repository_token: SecretStr | None = None
    volumes: list[AppVolume] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_app_name(value):
            raise ValueError("an app name must be a DNS label (lowercase letters, digits, '-')")
        return value

    @field_validator("domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            domain = normalize_domain(value)
            if not is_domain(domain):
                raise ValueError(f"{value!r} is not a valid domain name (like www.example.com)")
            if domain not in out:
                out.append(domain)
        return out

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not BRANCH.fullmatch(value):
            raise ValueError(f"{value!r} is not a branch name Billowin accepts")
        return value

    @field_validator("github_repo")
    @classmethod
    def _github_repo(cls, value: str | None) -> str | None:
        if value is not None and not GITHUB_REPO.fullmatch(value):
            raise ValueError("github_repo must look like owner/name")
        return value

    @field_serializer("webhook_secret", when_used="json")
    def _dump_secret(self, value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value else None

    @field_serializer("repository_token", when_used="json")
    def _dump_repository_token(self, value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value else None  # JSON is what the store keeps


class AppListing(Protocol):
    """Where the list of every app comes from: ``AppStore`` (a read) or ``AppCache`` (memory)."""

    def all(self) -> list[App]: ...


class AppStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self._kv = kv
        self._written: list[Callable[[], None]] = []  # called after each write of an app record

    def on_write(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every write of an app record through this store."""
        self._written.append(callback)

    def _wrote(self) -> None:
        for callback in self._written:
            callback()

    @staticmethod
    def _key(name: str) -> str:
        return f"{PREFIX}/{name}/app"

    def create(self, app: App) -> App:
        try:
            created = self._kv.kv_put(self._key(app.name), app.model_dump_json().encode(), cas=0)
        finally:
            self._wrote()  # also after an error: the write may have happened all the same
        if not created:
            raise Conflict(f"an app named {app.name!r} already exists", hint="Pick another name.")
        return app

    def save(self, app: App) -> None:
        """Write the record as it is (unconditionally); ``update`` is the safe read-modify-write."""
        try:
            self._kv.kv_put(self._key(app.name), app.model_dump_json().encode())
        finally:
            self._wrote()

    def get(self, name: str) -> App:
        return self._read(name)[1]

    def _read(self, name: str) -> tuple[int, App]:
        check_app_name(name)
        index, raw = self._kv.kv_get(self._key(name))
        if raw is None:
            raise NotFound(f"no app named {name!r}", hint="List apps with `billowin apps`.")
        return index, App.model_validate_json(raw)

    def volumes_of(self, name: str) -> list[AppVolume]:
        """The app's volumes; none for a job deployed without an app record (the Deployer's own use)."""
        _, raw = self._kv.kv_get(self._key(name))
        return App.model_validate_json(raw).volumes if raw is not None else []

    def pin_volumes(self, name: str, process: str, node: str) -> None:
        """Record the node that holds ``process``'s volumes: it runs only there from now on."""

        def pin(app: App) -> None:
            app.volumes = [
                v.model_copy(update={"node": node}) if v.process == process and not v.node else v
                for v in app.volumes
            ]

        self.update(name, pin)

    def update(self, name: str, change: Callable[[App], None], *, attempts: int = 20) -> App:
        """Apply ``change`` to the stored app with check-and-set, re-reading on a conflict."""
        for _ in range(attempts):
            index, app = self._read(name)
            change(app)
            try:
                written = self._kv.kv_put(self._key(name), app.model_dump_json().encode(), cas=index)
            except BaseException:
                self._wrote()  # the write may have happened all the same
                raise
            if written:
                self._wrote()
                return app
        raise Conflict(f"{name} kept changing while this change was saved")

    # -- custom domains: one owner each, claimed with check-and-set ------------------------------
    @staticmethod
    def _domain_key(domain: str) -> str:
        return f"{DOMAINS}/{domain}"

    def claim_domain(self, domain: str, app: str) -> str:
        """Make ``app`` the owner of ``domain`` unless another app owns it; returns the owner."""
        key = self._domain_key(domain)
        if self._kv.kv_put(key, app.encode(), cas=0):
            return app
        _, owner = self._kv.kv_get(key)
        return owner.decode() if owner else self.claim_domain(domain, app)

    def release_domain(self, domain: str, app: str) -> None:
        """Give up ``domain`` if ``app`` owns it."""
        key = self._domain_key(domain)
        _, owner = self._kv.kv_get(key)
        if owner is not None and owner.decode() == app:
            self._kv.kv_delete_tree(key)

    def delete(self, name: str) -> None:
        """Remove the app's record (``apps:destroy``; the caller removes the rest first)."""
        try:
            self._kv.kv_delete_tree(f"{PREFIX}/{name}/")
        finally:
            self._wrote()

    def all(self) -> list[App]:
        """Every app; a record that does not parse is logged and left out (one bad record
        must not take down every listing and webhook)."""
        return parse_apps(self._kv.kv_list(f"{PREFIX}/"))

    def following(self, github_repo: str, branch: str) -> list[App]:
        """Apps that deploy ``branch`` of the GitHub repository ``github_repo``."""
        return [a for a in self.all() if a.github_repo == github_repo and a.branch == branch]


def parse_apps(records: Iterable[tuple[str, bytes]]) -> list[App]:
    """The apps among ``(key, value)`` records under ``PREFIX``; a malformed one is logged and left out."""
    apps = []
    for key, value in records:
        if not key.endswith("/app"):
            continue
        try:
            apps.append(App.model_validate_json(value))
        except ValidationError as exc:
            log.warning("ignoring the malformed app record %s (%d errors)", key, exc.error_count())
    return apps


class AppCache:
    """``all()`` from memory, kept current by one watcher thread (``start``/``stop``).

    The watcher holds a blocking query on ``billowin/apps/`` and installs each answer (its
    index and the records, read together). ``all()`` serves the installed list only while:

    - the watcher runs, its last call succeeded, and the query it waits on is not overdue
      (``wait`` plus Consul's jitter plus ``grace``): a lost connection is not a quiet tree;
    - the list's index is the newest any answer has had (an answer that arrives but cannot
      be installed, below, makes the cache unusable until the next one is);
    - it was asked for after this process's last write of an app through ``store``
      (``AppStore.on_write``): such a write reads the tree again at once, and an answer to a
      query sent before the write is dropped and asked again.

    Otherwise ``all()`` is
    ``store.all()``. The ``App`` objects are shared between callers: read them, never change them.
    """

    def __init__(
        self,
        store: AppStore,
        kv: KeyValueStore,
        *,
        wait: float = 30.0,
        grace: float = 5.0,
        retry: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._watch = kv
        self._wait = f"{wait:g}s"
        self._blocking_deadline = wait * 17 / 16 + grace  # Consul adds up to wait/16 of jitter
        self._grace = grace
        self._retry = retry
        self._clock = clock
        self._lock = threading.Lock()
        self._apps: list[App] | None = None
        self._by_repo: dict[str, list[App]] = {}
        self._parsed: dict[str, tuple[int, list[App]]] = {}  # key -> (modify index, its app or none)
        self._index = 0  # the Consul index of ``_apps``
        self._confirmed = 0  # the newest index any answer has had
        self._generation = 0  # bumped by each write through ``store``: older queries are not installed
        self._running = False  # the watcher runs and its last call succeeded
        self._overdue_at: float | None = None  # when the query in flight should have been answered
        self._stop = threading.Event()  # the current watcher's; each start() makes a new one
        self._thread: threading.Thread | None = None
        store.on_write(self._store_wrote)

    # -- reading ---------------------------------------------------------------------------
    def all(self) -> list[App]:
        """Every app: from memory while the watcher vouches for it, else read from the store."""
        with self._lock:
            if self._usable():
                assert self._apps is not None
                return list(self._apps)
        return self.store.all()

    def following(self, github_repo: str) -> list[App]:
        """The apps whose ``github_repo`` is ``github_repo`` (any branch)."""
        with self._lock:
            if self._usable():
                return list(self._by_repo.get(github_repo, ()))
        return [a for a in self.store.all() if a.github_repo == github_repo]

    @property
    def serving(self) -> bool:
        """Whether ``all()`` answers from memory right now."""
        with self._lock:
            return self._usable()

    def _usable(self) -> bool:  # with the lock held
        return (
            self._running
            and self._apps is not None
            and self._index >= self._confirmed
            and (self._overdue_at is None or self._clock() < self._overdue_at)
        )

    # -- the watcher -----------------------------------------------------------------------
    def start(self) -> None:
        """Start watching (nothing when it already watches)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
                return
            # A watcher stopped earlier and still in its query keeps its own (set) event.
            self._stop = stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(stop,), name="billowin-app-cache", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop serving from memory at once; the watcher ends when its query returns."""
        with self._lock:
            self._stop.set()
            self._reset()

    def _run(self, stop: threading.Event) -> None:
        index: int | None = None
        try:
            while not stop.is_set():
                try:
                    index = self._watch_once(stop, index)
                except BillowinError as exc:
                    log.warning("app cache: %s; reading apps from Consul until it answers", exc.message)
                    self._failed(stop)
                    index = None
                except Exception:  # a bug: say so, serve nothing, try again
                    log.exception("app cache watcher failed; reading apps from Consul meanwhile")
                    self._failed(stop)
                    index = None
        finally:
            with self._lock:
                if stop is self._stop:
                    self._reset()

    def _failed(self, stop: threading.Event) -> None:
        with self._lock:
            if stop is self._stop:
                self._reset()
        stop.wait(self._retry)

    def _reset(self) -> None:  # with the lock held: serve nothing until a new answer is installed
        self._running = False
        self._overdue_at = None
        self._apps, self._by_repo, self._index, self._confirmed = None, {}, 0, 0

    def _watch_once(self, stop: threading.Event, index: int | None) -> int | None:
        """One query (blocking when ``index`` is set); the index to wait on next (None: ask at once)."""
        with self._lock:
            if stop is not self._stop:
                return None
            generation = self._generation
            self._overdue_at = self._clock() + (self._blocking_deadline if index else self._grace)
        new_index, entries = self._watch.kv_list_wait(f"{PREFIX}/", index, self._wait)
        apps = self._parse(entries)
        with self._lock:
            if stop.is_set() or stop is not self._stop:
                return None
            self._overdue_at = None
            if index is not None and new_index < index:  # Consul lost its state (a -dev restart)
                self._reset()
            self._running = True
            self._confirmed = max(self._confirmed, new_index)
            if generation != self._generation:
                return None  # asked before this process's own write: ask again, at once
            if new_index >= self._confirmed:
                self._install(apps, new_index)
        return new_index

    def _parse(self, entries: Sequence[KVEntry]) -> list[App]:
        """The apps of ``entries``, parsing only records that changed since the last answer."""
        known = self._parsed
        parsed: dict[str, tuple[int, list[App]]] = {}
        apps: list[App] = []
        for entry in entries:
            seen = known.get(entry.key)
            if seen is None or seen[0] != entry.modify_index:
                seen = (entry.modify_index, parse_apps([(entry.key, entry.value)]))
            parsed[entry.key] = seen
            apps += seen[1]
        self._parsed = parsed  # replaced whole: a concurrent _parse reads one version or the other
        return apps

    def _install(self, apps: Sequence[App], index: int) -> None:  # with the lock held
        by_repo: dict[str, list[App]] = {}
        for app in apps:
            if app.github_repo:
                by_repo.setdefault(app.github_repo, []).append(app)
        self._apps, self._by_repo, self._index = list(apps), by_repo, index

    def _store_wrote(self) -> None:
        """This process wrote an app: forget the list, and read the tree again now if watching."""
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._apps, self._by_repo = None, {}
            watching = self._running
        if not watching:
            return
        try:
            index, entries = self._watch.kv_list_wait(f"{PREFIX}/", None, self._wait)
        except BillowinError:
            return  # the watcher's next answer fills the list; until then all() reads
        apps = self._parse(entries)
        with self._lock:
            self._confirmed = max(self._confirmed, index)
            if generation == self._generation and self._running and index >= self._confirmed:
                self._install(apps, index)
