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
import hashlib
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, SecretStr

from billowin.build import deps, hygiene
from billowin.build.detect import AppSpec, detect
from billowin.build.source import check_sha, fetch, redact_url
from billowin.errors import BillowinError, BuildFailed, Conflict, InvalidInput
from billowin.names import is_app_name
from billowin.ports import ContainerEngine, ImageBuildTool, ImageRegistry
from billowin.settings import Settings
from billowin.stack.install import base_image_tag
from billowin.stack.tools import load_versions

LogLine = Callable[[str], None]
ProtectedImages = Callable[[str], set[str]]  # app -> image references that must never be removed
PACKER_PREFIX = re.compile(r"^\s*(?:==> )?docker(?: \([a-z-]+\))?: ?")
ERROR_HINTS = re.compile(
    r"(error|cannot|could not|not found|no matching|failed|unable|missing|undefined)", re.IGNORECASE
)


class BuildRecord(BaseModel):
    app: str
    sha: str
    status: str  # building | succeeded | failed
    language: str | None = None
    processes: dict[str, str] = {}
    image: str | None = None
    digest: str | None = None
    reason: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    seconds: float | None = None


PACKER_NOISE = (
    "Provisioning step had errors",
    "Killing the container",
    "Script exited with non-zero exit status",
    "Build 'docker' errored",
    "Builds finished",
    "Some builds didn't complete",
    "Wait completed",
    "Running the cleanup provisioner",
    "-----> ",
)


def failure_reason(lines: list[str]) -> str:
    """The most telling line of a failed build's output, without Packer's own lines."""
    cleaned = [PACKER_PREFIX.sub("", line).strip() for line in lines]
    cleaned = [c for c in cleaned if c and not any(noise in c for noise in PACKER_NOISE)]
    recent = cleaned[-40:]
    for line in reversed(recent):  # what the build itself called an error
        if line.lower().startswith("error:") or line.startswith("ERROR:") or "Error:" in line:
            return line
    for line in reversed(recent):
        if ERROR_HINTS.search(line):
            return line
    return recent[-1] if recent else "the build failed"


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
    ) -> None:
        self.settings = settings
        self.packer = packer
        self.docker = docker
        self.registry = registry
        self.on_finished = on_finished
        self.protected_images: ProtectedImages = protected_images or (lambda _app: set())
        self._slots = threading.BoundedSemaphore(settings.build_concurrency)
        self._base_lock = threading.Lock()
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

    def _save(self, record: BuildRecord) -> None:
        path = self.log_path(record.app, record.sha).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.model_dump_json(indent=2))

    # -- language base images ---------------------------------------------
    def language_image(self, language: str, log: LogLine) -> str:
        spec = load_versions(self.settings.versions_file)["languages"]
        if language not in spec or language == "recipe":
            raise InvalidInput(f"no base image recipe for {language!r}")
        base = base_image_tag(self.settings)
        tag = f"{spec['recipe']}-{base.rsplit(':', 1)[1]}"
        ref = f"billowin/{language}:{tag}"
        with self._base_lock:
            if not self.docker.image_exists(ref):
                log(f"-----> Building the {language} base image {ref} (once)")
                self._packer(
                    "base.json",
                    {
                        "from_image": base,
                        "repository": f"billowin/{language}",
                        "tag": tag,
                        "packages": " ".join(spec[language]),
                        "ca_bundle": str(self.settings.ca_bundle),
                    },
                    log,
                )
        return ref

    def _limits(self, build_id: str) -> dict[str, str]:
        """Packer variables that bound a build container, put it on the builds network and
        label it as this control plane's, and as this build's."""
        return {
            "memory_mb": str(self.settings.build_memory_mb),
            "pids_limit": str(self.settings.build_pids_limit),
            # A quarter of Docker's default CPU weight: when the box is busy, a build waits for
            # the API (webhook replies), the router and the apps, never the other way round.
            "cpu_shares": "256",
            "network": self.settings.build_network,
            "owner": self.owner,
            "build_id": build_id,
        }

    def _packer(self, template: str, variables: dict[str, str], log: LogLine) -> None:
        """Run Packer in a bounded container; a container a killed Packer left is removed."""
        build_id = uuid.uuid4().hex
        try:
            self.packer.build(
                template,
                {**variables, **self._limits(build_id)},
                log=log,
                timeout=self.settings.build_timeout,
            )
        except BuildFailed:
            with contextlib.suppress(BillowinError):
                self.docker.remove_containers(label=f"billowin.build.id={build_id}")
            raise

    @property
    def owner(self) -> str:
        """Which control plane's builds these are: Docker may be shared by several stacks."""
        return hashlib.sha256(str(self.settings.state_dir.resolve()).encode()).hexdigest()[:16]

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
        try:
            spec: AppSpec = detect(src)
            record.language, record.processes = spec.language, spec.processes
            log(f"-----> {spec.language} app; process types: {', '.join(spec.processes)}")
            base = self.language_image(spec.language, log)
            cache = self.settings.build_cache / app
            hygiene.mark_cache_used(cache)
            ref = f"{self.settings.registry}/{app}:{sha}"
            default_cmd = spec.processes.get("web") or next(iter(spec.processes.values()))
            variables = {
                "from_image": base,
                "repository": f"{self.settings.registry}/{app}",
                "tag": sha,
                "source_dir": str(src),
                "cache_dir": str(cache),
                "ca_bundle": str(self.settings.ca_bundle),
                "language": spec.language,
                "stage": "full",
                "cmd": json.dumps(["sh", "-c", default_cmd]),
                "app": app,
                "sha": sha,
                "pip_index_url": self.settings.pip_index_url,
                "npm_registry": self.settings.npm_registry,
                "goproxy": self.settings.goproxy,
                "rubygems_mirror": self.settings.rubygems_mirror,
            }
            try:
                files = deps.dependency_files(src, spec.language)
                if files is not None:
                    image = self._dependencies(app, files, variables, work.with_suffix(".deps"), log)
                    variables |= {"from_image": image, "stage": "app"}
                self._packer("app.json", variables, log)
            except BuildFailed as exc:
                reason = self._failure_reason(exc)
                raise BuildFailed(
                    f"build of {app} {sha[:12]} failed: {reason}", log_tail=exc.log_tail
                ) from exc
            log(f"-----> Pushing {ref}")
            record.digest = self.docker.push(ref)
            record.image = ref
            record.status = "succeeded"
            log(f"-----> Pushed {ref}@{record.digest}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(work.with_suffix(".deps"), ignore_errors=True)

    def _dependencies(
        self, app: str, files: dict[str, bytes], variables: dict[str, str], scratch: Path, log: LogLine
    ) -> str:
        """The app's dependency image for ``files`` (``build/deps.py``): reused when it exists,
        else built from the dependency files alone; the app's previous one is then removed."""
        script = (self.settings.packer_dir / "scripts" / "build-app.sh").read_bytes()
        key = deps.dependency_key(
            files,
            language=variables["language"],
            base_image=variables["from_image"],
            extra=[hashlib.sha256(script).hexdigest(), variables["pip_index_url"], variables["npm_registry"]],
        )
        image = f"{deps.REPOSITORY}/{app}:{key}"
        if self.docker.image_exists(image):
            log(f"-----> Dependencies unchanged ({', '.join(sorted(files))}): reusing them")
            return image
        log(f"-----> Installing dependencies from {', '.join(sorted(files))} (reused until they change)")
        source = deps.write_dependency_files(files, scratch)
        step = {"repository": f"{deps.REPOSITORY}/{app}", "tag": key, "source_dir": str(source)}
        step["stage"] = "deps"
        self._packer("app.json", variables | step, log)
        marker = self.settings.build_cache / app / "deps-image"
        with contextlib.suppress(OSError):
            previous = marker.read_text().strip()
            if previous and previous != image:
                with contextlib.suppress(BillowinError):  # an app image built on it keeps its layers
                    self.docker.remove_image(previous)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(image)
        return image

    # -- disk hygiene --------------------------------------------------------
    def remove_stale_build_containers(self) -> int:
        """Remove build containers this control plane left behind when it crashed.

        Only its own (label ``billowin.build.owner``): another stack on the same Docker
        Engine may be building right now."""
        return self.docker.remove_containers(label=f"billowin.build.owner={self.owner}")

    def _failure_reason(self, exc: BuildFailed) -> str:
        if "timed out" in exc.message:
            return (
                f"it ran longer than its {self.settings.build_timeout:.0f}s limit (BILLOWIN_BUILD_TIMEOUT) "
                "and was stopped"
            )
        log_tail = exc.log_tail
        reason = failure_reason(log_tail.splitlines())
        if "exit status: 137" in log_tail and "limit" not in reason:
            # SIGKILLed before build-app.sh could say why: the kernel's OOM killer, almost always.
            reason = (
                f"the build was killed (exit 137), most likely for using more than its "
                f"{self.settings.build_memory_mb} MB memory limit (BILLOWIN_BUILD_MEMORY_MB)"
            )
        return reason

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
