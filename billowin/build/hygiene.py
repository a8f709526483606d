"""Disk hygiene for builds: what is never collected, old build records and caches, registry GC.

What is never removed:

- the images of an app's newest ``BILLOWIN_KEEP_IMAGES`` live releases (the one it runs
  and its rollback targets) and of a release still rolling out (``protected_images``);
- the record and log of any build whose image still exists (status ``succeeded``), of a
  protected release's build, and of a build in progress;
- the dependency cache of an app being built.

Build records and logs of failed or collected builds go after
``BILLOWIN_BUILD_LOG_RETENTION_DAYS``, or sooner, oldest first, while all records and logs
together exceed ``BILLOWIN_BUILD_LOGS_MAX_MB``. An app's dependency cache goes whole (a
partly deleted Go module or npm cache is worse than none) when the app was not built for
``BILLOWIN_BUILD_CACHE_MAX_AGE_DAYS``, or, least recently built first, while all caches
together exceed ``BILLOWIN_BUILD_CACHE_MAX_MB``. The builder runs both after every build.

The registry's own garbage collector (``docker-registry garbage-collect``) frees the
layers of deleted manifests. The registry requires it to run while no registry serves the
storage (or one in read-only mode): a push during the mark phase could lose layers. So
``collect_registry_garbage`` refuses while the registry answers; it belongs where the
registry is stopped, e.g. just before the stack starts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from billowin.errors import ServiceError

if TYPE_CHECKING:
    from billowin.build.builder import BuildRecord
    from billowin.release.store import Release

DAY = 86400.0
CACHE_MARK = ".billowin-last-build"  # touched when a build of the app starts
PRUNABLE = ("failed", "collected")


def protected_images(history: list[Release], keep: int) -> set[str]:
    """Images that must stay: the newest ``keep`` live releases' (the current one and its
    rollback targets) and any release newer than those that is still rolling out."""
    live = [r for r in history if r.status == "live"]
    newest = live[-1].number if live else 0
    rolling_out = [r for r in history if r.status == "deploying" and r.number > newest]
    return {r.image for r in [*live[-max(keep, 1) :], *rolling_out]}


def is_protected(record: BuildRecord, protected: set[str]) -> bool:
    """Does a protected image reference name this build's image, by tag or by digest?"""
    if record.image and record.image in protected:
        return True
    if record.digest:
        return any(ref.endswith(f"@{record.digest}") for ref in protected)
    return False


def tree_size(path: Path) -> int:
    """Bytes under ``path`` (files and symlinks themselves, not what links point at)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for root, dirs, files in os.walk(path, onerror=lambda _e: None):
        for name in [*files, *dirs]:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def remove_tree(path: Path) -> None:
    """Remove a file or a directory tree, including read-only directories (Go's module cache)."""

    def writable_and_retry(func: Callable[[str], object], name: str, _exc: object) -> None:
        parent = os.path.dirname(name)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(name)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=writable_and_retry)
    else:
        path.unlink(missing_ok=True)


# -- build records and logs ---------------------------------------------------------------------
@dataclass
class _Build:
    app: str
    sha: str
    record: BuildRecord | None
    files: list[Path]
    size: int
    when: float  # when it finished (or started, or was last written), epoch seconds


def _builds(builds_dir: Path) -> list[_Build]:
    from billowin.build.builder import BuildRecord

    found = []
    for app_dir in sorted(p for p in builds_dir.glob("*") if p.is_dir()):
        shas = {p.name.split(".", 1)[0] for p in app_dir.iterdir()}
        for sha in sorted(shas):
            files = [app_dir / f"{sha}{ext}" for ext in (".json", ".log", ".src")]
            files = [f for f in files if f.exists() or f.is_symlink()]
            record = None
            if files[0].suffix == ".json":
                try:
                    record = BuildRecord.model_validate_json(files[0].read_text())
                except (OSError, ValueError):
                    record = None
            if record is not None:
                moment = record.finished_at or record.started_at
                when = moment.timestamp()
            else:
                when = max((f.lstat().st_mtime for f in files), default=0.0)
            found.append(_Build(app_dir.name, sha, record, files, sum(tree_size(f) for f in files), when))
    return found


def building_apps(builds_dir: Path, *, now: float, stale_after: float) -> set[str]:
    """Apps with a build record in ``building`` younger than ``stale_after`` (any process)."""
    return {
        b.app
        for b in _builds(builds_dir)
        if b.record is not None and b.record.status == "building" and now - b.when < stale_after
    }


def prune_build_records(
    builds_dir: Path,
    *,
    retention: float,
    max_bytes: int,
    protected: Callable[[str], set[str]],
    busy: Iterable[tuple[str, str]] = (),
    now: float,
    stale_after: float,
) -> list[str]:
    """Remove records, logs and left-over sources of old builds; returns ``app/sha`` of each.

    Only failed or collected builds, builds whose record is unreadable, and ``building``
    records older than ``stale_after`` (a crashed control plane) are candidates; a build
    whose image a protected release names is not, whatever its status says.
    """
    builds = _builds(builds_dir)
    active = set(busy)
    shields: dict[str, set[str] | None] = {}

    def shield(app: str) -> set[str] | None:
        if app not in shields:
            try:
                shields[app] = protected(app)
            except Exception:  # unknown releases: protect the whole app
                shields[app] = None
        return shields[app]

    def candidate(b: _Build) -> bool:
        if (b.app, b.sha) in active:
            return False
        if b.record is None:
            return now - b.when > stale_after
        status = b.record.status
        if status == "building":
            if now - b.when <= stale_after:
                return False
        elif status not in PRUNABLE:
            return False
        guard = shield(b.app)
        return guard is not None and not is_protected(b.record, guard)

    removed: list[str] = []
    total = sum(b.size for b in builds)
    for b in sorted(builds, key=lambda b: b.when):  # oldest first
        if not (now - b.when > retention or total > max_bytes):
            break
        if not candidate(b):
            continue
        for f in b.files:
            try:
                remove_tree(f)
            except OSError:
                continue
        total -= b.size
        removed.append(f"{b.app}/{b.sha}")
    for b in builds:  # a `.src` left by a crash, beside a record that is not building any more
        src = builds_dir / b.app / f"{b.sha}.src"
        if (
            f"{b.app}/{b.sha}" not in removed
            and src in b.files
            and (b.app, b.sha) not in active
            and (b.record is None or b.record.status != "building" or now - b.when > stale_after)
        ):
            try:
                remove_tree(src)
            except OSError:
                continue
    for app_dir in builds_dir.glob("*"):
        with contextlib.suppress(OSError):
            app_dir.rmdir()  # only when empty
    return removed


# -- dependency caches ---------------------------------------------------------------------------
def mark_cache_used(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    (cache / CACHE_MARK).touch()


def prune_build_caches(
    cache_root: Path, *, max_age: float, max_bytes: int, busy: set[str], now: float
) -> list[str]:
    """Remove whole per-app caches unused for ``max_age`` seconds, then least recently used
    ones while they take more than ``max_bytes``; never one in ``busy``. Returns the apps."""
    caches = []
    for cache in sorted(p for p in cache_root.glob("*") if p.is_dir()):
        mark = cache / CACHE_MARK
        try:
            used = (mark if mark.exists() else cache).stat().st_mtime
        except OSError:
            continue
        caches.append((used, cache.name, cache, tree_size(cache)))
    total = sum(size for *_, size in caches)
    removed = []
    for used, app, cache, size in sorted(caches):  # least recently used first
        if app in busy or not (now - used > max_age or total > max_bytes):
            continue
        try:
            remove_tree(cache)
        except OSError:
            continue  # e.g. root-owned files written by a build container; tried again next time
        total -= size
        removed.append(app)
    return removed


# -- the registry's garbage collector ------------------------------------------------------------
def registry_answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/v2/", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def collect_registry_garbage(
    registry_bin: Path | str,
    storage: Path,
    *,
    address: str,
    delete_untagged: bool = False,
    timeout: float = 1800,
) -> list[str]:
    """Run ``docker-registry garbage-collect`` over the filesystem storage at ``storage``.

    Refuses while a registry answers at ``address``: the registry must be stopped (the
    caller stops it, or runs this before starting it). ``delete_untagged`` also removes
    manifests no tag names — off by default, because a release deployed by digest
    (``deploy --image repo@sha256:…``) would lose its image. Returns the output lines.
    """
    if registry_answers(address):
        raise ServiceError(
            "registry",
            f"refusing to collect garbage while the registry at {address} is running "
            "(a push during collection could lose layers)",
            hint="Stop the registry first; the collector needs it stopped or read-only.",
        )
    if not storage.is_dir():
        return []
    with tempfile.TemporaryDirectory(prefix="billowin-registry-gc-") as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text(  # YAML is a superset of JSON
            json.dumps(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
                }
            )
        )
        argv = [str(registry_bin), "garbage-collect", str(config)]
        if delete_untagged:
            argv.append("--delete-untagged")
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError("registry", f"garbage-collect did not finish: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ServiceError("registry", f"garbage-collect failed (exit {proc.returncode}): {tail}")
    return proc.stdout.splitlines()
