"""Turn a repository at one commit into a pushed Docker image, with Packer.

    fetch (billowin/source.py) → detect (billowin/detect.py) →
    language base image (packer/base.json, built once per recipe) →
    app image (packer/app.json: source + dependencies + Procfile commands) →
    push to the registry (digest recorded) → tidy up (billowin/build/hygiene.py):
    images beyond the last N builds that no live release needs, old records, logs, caches

Builds run on the control-plane host, at most ``BILLOWIN_BUILD_CONCURRENCY``
at once, in a container on their own Docker network (``BILLOWIN_BUILD_NETWORK``,
inter-container traffic off) with memory, process and time limits. Every build
has a log (``<state>/builds/<app>/<sha>.log``) streamed as it is written, and a
record next to it (``<sha>.json``).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, SecretStr

from billowin.build import hygiene
from billowin.build.appjson import AppManifest
from billowin.build.detect import AppSpec, detect
from billowin.build.packer_images import PackerImages, build_owner, scratch_dir
from billowin.build.source import check_sha, fetch, redact_url
from billowin.errors import BillowinError, BuildFailed, Conflict, InvalidInput
from billowin.names import is_app_name
from billowin.ports import ContainerEngine, ImageBuildTool, ImageJob, ImageRecipe, ImageRegistry
from billowin.settings import Settings

LogLine = Callable[[str], None]
ProtectedImages = Callable[[str], set[str]]  # app -> image references that must never be removed


class BuildRecord(BaseModel):
    app: str
    sha: str
    status: str  # building | succeeded | failed
    language: str | None = None
    builder: str | None = None  # the recipe: packer | dockerfile
    runtime: str | None = None  # "python 3.14.8 (debian forky)", as the build chose it
    runtime_source: str | None = None  # the file that asked for it; None: the default
    port: int | None = None  # the port the image says it listens on (a Dockerfile's EXPOSE)
    processes: dict[str, str] = {}
    manifest: AppManifest | None = None  # app.json's keys the deploy applies (build/appjson.py)
    image: str | None = None
    digest: str | None = None
    reason: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    seconds: float | None = None


def _quiet(_line: str) -> None:
    return None


class Builder:
    def __init__(
        self,
        settings: Settings,
        packer: ImageBuildTool,
        docker: ContainerEngine,
        registry: ImageRegistry,
        *,
        on_finished: Callable[[BuildRecord], None] | None = None,  # monitoring: build durations
        protected_images: ProtectedImages | None = None,  # the live releases' images (system.py)
        recipes: Sequence[ImageRecipe] = (),  # besides Packer's: the Dockerfile recipe (system.py)
    ) -> None:
        self.settings = settings
        self.packer = packer
        self.docker = docker
        self.registry = registry
        self.on_finished = on_finished
        self.protected_images: ProtectedImages = protected_images or (lambda _app: set())
        self._slots = threading.BoundedSemaphore(settings.build_concurrency)
        self.packer_images = PackerImages(settings, packer, docker)
        self.recipes: dict[str, ImageRecipe] = {self.packer_images.name: self.packer_images}
        for recipe in recipes:
            self.recipes[recipe.name] = recipe
        self._active: set[tuple[str, str]] = set()  # (app, sha) being built by this process
        self._active_lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``BILLOWIN_BUILD_CONCURRENCY`` build slots (a build in a child process
        takes its slot here, in the parent)."""
        with self._slots:
            yield

    def finished(self, record: BuildRecord) -> None:
        """Report a finished build (monitoring's build durations)."""
        if self.on_finished is not None:
            self.on_finished(record)

    # -- where things go -----------------------------------------------------
    def log_path(self, app: str, sha: str) -> Path:
        return self.settings.state_dir / "builds" / app / f"{sha}.log"

    def record(self, app: str, sha: str) -> BuildRecord:
        return BuildRecord.model_validate_json(self.log_path(app, sha).with_suffix(".json").read_text())

    def save_record(self, record: BuildRecord) -> None:
        """Keep the record of a build that ran elsewhere (on a build node)."""
        self._save(record)

    def _save(self, record: BuildRecord) -> None:
        path = self.log_path(record.app, record.sha).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.model_dump_json(indent=2))

    def language_image(self, language: str, log: LogLine) -> str:
        """The base image ``language``'s apps build on (built once; ``billowin setup`` warms it)."""
        return self.packer_images.language_image(language, log)[0]

    @property
    def owner(self) -> str:
        """Which control plane's builds these are: Docker may be shared by several stacks."""
        return build_owner(self.settings)

    # -- one build ---------------------------------------------------------
    def build(
        self,
        app: str,
        repository: str,
        sha: str,
        *,
        token: SecretStr | None = None,
        log: LogLine = lambda _line: None,
    ) -> BuildRecord:
        """Build ``repository`` at ``sha`` as ``<registry>/<app>:<sha>`` and push it."""
        if not is_app_name(app):
            raise InvalidInput(f"{app!r} is not a valid app name (a DNS label)")
        check_sha(sha)
        log_path = self.log_path(app, sha)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        record = BuildRecord(app=app, sha=sha, status="building", started_at=datetime.now(UTC))
        self._save(record)
        started = time.monotonic()
        with self._active_lock:
            self._active.add((app, sha))
        with log_path.open("w") as fh, self._slots:
            tee = _tee(fh, log)
            try:
                self._build(record, repository, token, tee)
            except BillowinError as exc:
                record.status = "failed"
                record.reason = exc.message
                tee(f"-----> Build failed: {exc.message}")
                if isinstance(exc, BuildFailed):
                    exc.log_path = log_path
                    raise
                raise BuildFailed(exc.message, log_path=log_path, hint=exc.hint) from exc
            finally:
                record.finished_at = datetime.now(UTC)
                record.seconds = round(time.monotonic() - started, 2)
                self._save(record)
                with self._active_lock:
                    self._active.discard((app, sha))
                self.finished(record)
                self.tidy(app, log=tee)
        return record

    def _build(self, record: BuildRecord, repository: str, token: SecretStr | None, log: LogLine) -> None:
        app, sha = record.app, record.sha
        work = self.settings.state_dir / "builds" / app / f"{sha}.src"
        log(f"-----> Fetching {sha[:12]} from {redact_url(repository)}")
        src = fetch(
            repository, sha, work, token=token, allow_private=self.settings.allow_private_repositories
        )
        scratch = scratch_dir(work)
        try:
            spec: AppSpec = detect(src)
            recipe = self.recipes.get(spec.builder)
            if recipe is None:
                raise InvalidInput(f"this Billowin has no {spec.builder} builder")
            record.language, record.processes, record.builder = spec.language, spec.processes, recipe.name
            log(f"-----> {spec.language} app; process types: {', '.join(spec.processes) or 'from the image'}")
            record.manifest = spec.manifest
            for warning in spec.manifest.warnings if spec.manifest else []:
                log(f"-----> Warning: {warning}")
            job = ImageJob(
                app=app,
                sha=sha,
                src=src,
                spec=spec,
                repository=f"{self.settings.registry}/{app}",
                tag=sha,
                cache=self.settings.build_cache / app,
                scratch=scratch,
            )
            built = recipe.build_image(job, log)
            record.runtime, record.runtime_source = built.runtime, built.runtime_source
            record.port = built.port
            ref = job.ref
            log(f"-----> Pushing {ref}")
            record.digest = self.docker.push(ref)
            record.image = ref
            record.status = "succeeded"
            log(f"-----> Pushed {ref}@{record.digest}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)

    # -- disk hygiene --------------------------------------------------------
    def remove_stale_build_containers(self) -> int:
        """Remove build containers this control plane left behind when it crashed.

        Only its own (label ``billowin.build.owner``): another stack on the same Docker
        Engine may be building right now."""
        return self.docker.remove_containers(label=f"billowin.build.owner={self.owner}")

    def _failure_reason(self, exc: BuildFailed) -> str:
        return self.packer_images.failure_reason(exc)

    def tidy(self, app: str, *, log: LogLine = _quiet) -> None:
        """After a build: collect old images, prune old records, logs and caches. Never raises:
        a build is not failed by its clean-up, and what could not be removed is retried later."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("old images", lambda: self.collect_garbage(app, log=log)),
            ("old build records and caches", lambda: self.prune(log=log)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # the build's outcome stands whatever happens here
                log(f"-----> Clean-up of {what} skipped: {getattr(exc, 'message', exc)}")

    def collect_garbage(self, app: str, *, log: LogLine = _quiet) -> list[str]:
        """Remove images of ``app`` beyond its last ``keep_images`` successful builds, except
        those a live release (or a rollback target) needs and those a container still uses."""
        done = [r for r in self.records(app) if r.status == "succeeded"]
        old = [r for r in done[self.settings.keep_images :] if r.image]
        if not old:
            return []
        try:
            protected = self.protected_images(app)
        except BillowinError as exc:
            log(f"-----> Keeping old images of {app}: its releases cannot be read ({exc.message})")
            return []
        removed = []
        for record in old:
            assert record.image is not None
            if hygiene.is_protected(record, protected):
                continue
            try:
                self.docker.remove_image(record.image)
            except Conflict as exc:  # a container (running or stopped) still uses it
                log(f"-----> Keeping {record.image} for now: {exc.message}")
                continue
            if record.digest:
                self.registry.delete(app, record.digest)
            removed.append(record.image)
            record.status = "collected"
            self._save(record)
        if removed:
            log(f"-----> Removed {len(removed)} old image(s) of {app}")
        return removed

    def prune(self, *, log: LogLine = _quiet) -> None:
        """Prune old build records and logs, and unused build caches, of every app."""
        now = time.time()
        stale_after = 3 * self.settings.build_timeout + 600
        builds_dir = self.settings.state_dir / "builds"
        with self._active_lock:
            active = set(self._active)
        gone = hygiene.prune_build_records(
            builds_dir,
            retention=self.settings.build_log_retention_days * hygiene.DAY,
            max_bytes=self.settings.build_logs_max_mb * 1024 * 1024,
            protected=self.protected_images,
            busy=active,
            now=now,
            stale_after=stale_after,
        )
        busy = {a for a, _ in active} | hygiene.building_apps(builds_dir, now=now, stale_after=stale_after)
        caches = hygiene.prune_build_caches(
            self.settings.build_cache,
            max_age=self.settings.build_cache_max_age_days * hygiene.DAY,
            max_bytes=self.settings.build_cache_max_mb * 1024 * 1024,
            busy=busy,
            now=now,
        )
        if gone:
            log(f"-----> Pruned {len(gone)} old build record(s) and log(s)")
        if caches:
            log(f"-----> Removed the build cache of {', '.join(caches)}")

    def records(self, app: str) -> list[BuildRecord]:
        """Every build of ``app`` Billowin remembers, newest first."""
        found = []
        for path in (self.settings.state_dir / "builds" / app).glob("*.json"):
            try:
                found.append(BuildRecord.model_validate_json(path.read_text()))
            except ValueError:
                continue
        return sorted(found, key=lambda r: r.started_at, reverse=True)

    def forget(self, app: str) -> int:
        """Remove every image, registry manifest, record and log of ``app`` (``apps:destroy``)."""
        removed = 0
        for record in self.records(app):
            if record.image and record.status != "collected":
                with contextlib.suppress(Conflict):  # a container still uses it; the manifest goes anyway
                    self.docker.remove_image(record.image)
                if record.digest:
                    self.registry.delete(app, record.digest)
                removed += 1
        shutil.rmtree(self.settings.state_dir / "builds" / app, ignore_errors=True)
        return removed


def _tee(fh: TextIO, log: LogLine) -> LogLine:
    def write(line: str) -> None:
        fh.write(line + "\n")
        fh.flush()
        log(line)

    return write
