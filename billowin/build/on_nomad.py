"""Builds as Nomad batch jobs on build nodes (``BILLOWIN_BUILD_RUNNER=nomad``), for clusters.

``NomadBuilder`` fits the same ``AppBuilder`` port as ``ProcessBuilder``: the pipeline calls
``build`` and gets a ``BuildRecord`` back, with the log lines streamed as they come. The
difference is where the build runs: in ``jobspecs/build.nomad.hcl``, a batch job that Nomad
places on a node marked to build (meta ``billowin.build = "true"``, and the host volume
``billowin-build-cache``), running the very same child process as ``ProcessBuilder``
(``python -m billowin.build.isolated``) with that node's engine, registry credentials and
cache. So a build takes no CPU from the API, and an API that dies does not lose it:

- **Named by app and commit** (``billowin-build-<app>-<sha>``): a resumed pipeline job (the API
  restarted mid-build) finds the job still running, or finished, and follows it again from
  the start of its output instead of building twice.
- **In:** the request (repository, commit, the repository token if any) is the Nomad Variable
  ``nomad/jobs/<job>``, which only that job's tasks may read (Nomad's workload identity), so
  the token is on no command line and in no job definition.
- **Out:** the task's output (Nomad keeps a raw_exec task's) is read as it grows and copied into
  the build log of this process, where ``builds:output`` reads it; the result is a file in the
  allocation directory, which the build's own commands (inside its build container) cannot
  reach. The job and its variable are purged once the result is read.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

from pydantic import BaseModel, SecretStr

from billowin.build.builder import Builder, BuildRecord, LogLine
from billowin.build.source import check_sha
from billowin.errors import BillowinError, BuildFailed, NotFound, ServiceError
from billowin.names import is_app_name
from billowin.ports import Scheduler
from billowin.release.jobspec import render
from billowin.settings import Settings

TEMPLATE = "build.nomad.hcl"
TASK = "build"
RESULT_FILE = "alloc/billowin-build-result.json"
FINISHED = {"complete", "failed", "lost"}
POLL_SECONDS = 0.5
PLACEMENT_SECONDS = 120  # a build waits this long for a build node with room for it


class BuildJob(BaseModel):
    """The variables of ``jobspecs/build.nomad.hcl``."""

    job_id: str
    app: str
    sha: str
    variable: str
    python: str
    cpu: int
    memory: int


def job_id(app: str, sha: str) -> str:
    return f"billowin-build-{app}-{sha[:12]}"


class NomadBuilder:
    """The ``AppBuilder`` for a cluster: each build a Nomad batch job on a build node."""

    def __init__(
        self, settings: Settings, builder: Builder, nomad: Scheduler, *, python: str = sys.executable
    ) -> None:
        self.settings = settings
        self.builder = builder  # this process's side: slots, the log file, records, reporting
        self.nomad = nomad
        self.python = python

    def remove_stale_build_containers(self) -> int:
        return 0  # build containers live on the build nodes; their own build process cleans up

    def build(
        self,
        app: str,
        repository: str,
        sha: str,
        *,
        token: SecretStr | None = None,
        log: LogLine = lambda _line: None,
    ) -> BuildRecord:
        if not is_app_name(app):
            raise BuildFailed(f"{app!r} is not a valid app name")
        check_sha(sha)
        name = job_id(app, sha)
        with self.builder.slot():
            alloc = self._attach(name)
            if alloc is None:
                self._submit(name, app, repository, sha, token)
                header = f"-----> Building on Nomad as the batch job {name}"
            else:
                where = alloc.get("NodeName") or "a build node"
                header = f"-----> Following the build {name} already running on {where}"
            try:
                return self._follow(name, app, sha, log, header)
            finally:
                with contextlib.suppress(BillowinError):
                    self.nomad.stop(name, purge=True)
                with contextlib.suppress(BillowinError):
                    self.nomad.delete_variable(f"nomad/jobs/{name}")

    def _attach(self, name: str) -> dict[str, Any] | None:
        """The allocation of a build job by that name still running (or finished with a result
        not read yet): an API that restarted follows it instead of building again."""
        job = self.nomad.current(name)
        if job is None or job.get("Stop"):
            return None
        allocs = self.nomad.allocations(name)
        return allocs[0] if allocs else {}

    def _submit(self, name: str, app: str, repository: str, sha: str, token: SecretStr | None) -> None:
        request = {
            "app": app,
            "repository": repository,
            "sha": sha,
            "token": token.get_secret_value() if token else None,
        }
        variable = f"nomad/jobs/{name}"
        self.nomad.put_variable(variable, {"request": json.dumps(request)})
        spec = BuildJob(
            job_id=name,
            app=app,
            sha=sha,
            variable=variable,
            python=self.python,
            cpu=500,
            memory=self.settings.build_memory_mb + 256,  # the build container, and Packer beside it
        )
        self.nomad.submit(self.nomad.parse(render(self.settings.jobspecs_dir, TEMPLATE, spec)))

    def _follow(self, name: str, app: str, sha: str, log: LogLine, header: str) -> BuildRecord:
        """Copy the task's output into this process's build log as it grows, then read the result."""
        deadline = time.monotonic() + self.settings.build_timeout + 120
        log_path = self.builder.log_path(app, sha)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset, pending = 0, b""
        place_by = time.monotonic() + PLACEMENT_SECONDS
        alloc: dict[str, Any] = {}
        with log_path.open("w") as fh:

            def emit(raw: bytes) -> None:
                line = raw.decode("utf-8", "replace")
                fh.write(line + "\n")
                fh.flush()
                log(line)

            emit(header.encode())
            while True:
                if time.monotonic() > deadline:
                    raise BuildFailed(
                        f"the build job {name} ran past BILLOWIN_BUILD_TIMEOUT", log_path=log_path
                    )
                allocs = self.nomad.allocations(name)
                alloc = allocs[0] if allocs else {}
                status = alloc.get("ClientStatus", "pending")
                if alloc and status != "pending":
                    chunk = self._output(alloc["ID"], offset)
                    offset += len(chunk)
                    *lines, pending = (pending + chunk).split(b"\n")
                    for raw in lines:
                        emit(raw)
                if status in FINISHED:
                    if pending:
                        emit(pending)
                    break
                if not alloc and time.monotonic() > place_by:
                    raise BuildFailed(
                        f"no build node took the build {name} within {PLACEMENT_SECONDS}s",
                        log_path=log_path,
                        hint="Check `billowin nodes`: a build node (`billowin install --build`) must be "
                        "ready, with the memory of BILLOWIN_BUILD_MEMORY_MB free.",
                    )
                time.sleep(POLL_SECONDS)
        return self._outcome(name, app, sha, alloc)

    def _output(self, alloc_id: str, offset: int) -> bytes:
        try:
            data: bytes = self.nomad.task_output(alloc_id, TASK, "stdout", offset)
        except (NotFound, ServiceError):
            return b""  # not written yet
        return data

    def _outcome(self, name: str, app: str, sha: str, alloc: dict[str, Any]) -> BuildRecord:
        log_path = self.builder.log_path(app, sha)
        text = self.nomad.allocation_file(alloc["ID"], RESULT_FILE) if alloc.get("ID") else None
        try:
            result: dict[str, Any] = json.loads(text) if text else {}
        except ValueError:
            result = {}
        if result.get("ok"):
            record = BuildRecord.model_validate(result["record"])
            self.builder.save_record(record)
            self.builder.finished(record)
            return record
        if "message" not in result:
            events = [
                e.get("DisplayMessage", "")
                for s in (alloc.get("TaskStates") or {}).values()
                for e in s.get("Events") or []
            ]
            message = (
                f"the build job {name} ended ({alloc.get('ClientStatus', 'no allocation')}) with no result"
            )
            if events:
                message += f"; Nomad says: {events[-1]}"
            raise BuildFailed(message, log_path=log_path)
        raise BuildFailed(
            str(result["message"]),
            log_path=log_path,
            log_tail=str(result.get("log_tail", "")),
            hint=str(result.get("hint") or ""),
        )
