"""Turn a repository at one commit into a pushed Docker image, with Packer.

    fetch (billowin/source.py) → detect (billowin/detect.py) →
    language base image (packer/base.json, built once per recipe) →
    app image (packer/app.json: source + dependencies + Procfile commands) →
    push to the registry (digest recorded) → forget images beyond the last N

Builds run on the control-plane host, at most ``BILLOWIN_BUILD_CONCURRENCY``
at once. Every build has a log (``<state>/builds/<app>/<sha>.log``) streamed
as it is written, and a record next to it (``<sha>.json``).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, SecretStr

from billowin.build.detect import AppSpec, detect
from billowin.build.source import check_sha, fetch
from billowin.errors import BillowinError, BuildFailed, InvalidInput
from billowin.names import is_app_name
from billowin.ports import ContainerEngine, ImageBuildTool, ImageRegistry
from billowin.settings import Settings
from billowin.stack.install import base_image_tag
from billowin.stack.tools import load_versions

LogLine = Callable[[str], None]
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


class Builder:
    def __init__(
        self,
        settings: Settings,
        packer: ImageBuildTool,
        docker: ContainerEngine,
        registry: ImageRegistry,
        *,
        on_finished: Callable[[BuildRecord], None] | None = None,  # monitoring: build durations
    ) -> None:
        self.settings = settings
        self.packer = packer
        self.docker = docker
        self.registry = registry
        self.on_finished = on_finished
        self._slots = threading.BoundedSemaphore(settings.build_concurrency)
        self._base_lock = threading.Lock()

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
                self.packer.build(
                    "base.json",
                    {
                        "from_image": base,
                        "repository": f"billowin/{language}",
                        "tag": tag,
                        "packages": " ".join(spec[language]),
                        "ca_bundle": str(self.settings.ca_bundle),
                    },
                    log=log,
                    timeout=self.settings.build_timeout,
                )
        return ref

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
                if self.on_finished is not None:
                    self.on_finished(record)
        self.collect_garbage(app)
        return record

    def _build(self, record: BuildRecord, repository: str, token: SecretStr | None, log: LogLine) -> None:
        app, sha = record.app, record.sha
        work = self.settings.state_dir / "builds" / app / f"{sha}.src"
        log(f"-----> Fetching {sha[:12]}")
        src = fetch(
            repository, sha, work, token=token, allow_private=self.settings.allow_private_repositories
        )
        try:
            spec: AppSpec = detect(src)
            record.language, record.processes = spec.language, spec.processes
            log(f"-----> {spec.language} app; process types: {', '.join(spec.processes)}")
            base = self.language_image(spec.language, log)
            cache = self.settings.cache_dir / "build-cache" / app
            cache.mkdir(parents=True, exist_ok=True)
            ref = f"{self.settings.registry}/{app}:{sha}"
            default_cmd = spec.processes.get("web") or next(iter(spec.processes.values()))
            try:
                self.packer.build(
                    "app.json",
                    {
                        "from_image": base,
                        "repository": f"{self.settings.registry}/{app}",
                        "tag": sha,
                        "source_dir": str(src),
                        "cache_dir": str(cache),
                        "ca_bundle": str(self.settings.ca_bundle),
                        "language": spec.language,
                        "cmd": json.dumps(["sh", "-c", default_cmd]),
                        "app": app,
                        "sha": sha,
                        "pip_index_url": self.settings.pip_index_url,
                        "npm_registry": self.settings.npm_registry,
                        "goproxy": self.settings.goproxy,
                        "rubygems_mirror": self.settings.rubygems_mirror,
                    },
                    log=log,
                    timeout=self.settings.build_timeout,
                )
            except BuildFailed as exc:
                reason = failure_reason(exc.log_tail.splitlines())
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

    # -- disk hygiene --------------------------------------------------------
    def remove_stale_build_containers(self) -> int:
        """Remove build containers a crashed control plane left behind (label ``billowin.build``)."""
        return self.docker.remove_containers(label="billowin.build")

    def collect_garbage(self, app: str) -> list[str]:
        """Remove images of ``app`` beyond its last ``keep_images`` successful builds."""
        records_dir = self.settings.state_dir / "builds" / app
        records = []
        for path in records_dir.glob("*.json"):
            try:
                records.append(BuildRecord.model_validate_json(path.read_text()))
            except ValueError:
                continue
        done = sorted(
            (r for r in records if r.status == "succeeded"), key=lambda r: r.started_at, reverse=True
        )
        removed = []
        for old in done[self.settings.keep_images :]:
            if old.image:
                self.docker.remove_image(old.image)
                if old.digest:
                    self.registry.delete(app, old.digest)
                removed.append(old.image)
                old.status = "collected"
                self._save(old)
        return removed

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
