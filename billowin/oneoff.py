"""One-off runs: ``billowin run <cmd>`` and the Procfile ``release`` phase.

A run is a Nomad batch job (``jobspecs/run.nomad.hcl``) of the app's current
image with its config vars, never restarted or rescheduled. Its stdout and
stderr are streamed back as they come, then its exit code; the job is purged
afterwards so runs do not pile up in Nomad.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from billowin.adapters.nomad import NomadScheduler
from billowin.errors import BillowinError, InvalidInput, ServiceError
from billowin.jobspec import render
from billowin.logs import STREAMS
from billowin.settings import Settings

TEMPLATE = "run.nomad.hcl"
TASK = "run"
MAX_COMMAND = 4096


class RunJob(BaseModel):
    """The variables of ``jobspecs/run.nomad.hcl``."""

    job_id: str = Field(pattern=r"^[a-z][a-z0-9-]{0,80}$")
    app: str
    release: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    kind: str = Field(pattern=r"^(run|release)$")
    image: str = Field(pattern=r"^[A-Za-z0-9._:/@-]{1,255}$")
    command: list[str]
    config_template: str | None = None
    vault_policies: list[str] = Field(default_factory=list)
    cpu: int = 100
    memory: int = 256


@dataclass(frozen=True)
class RunEvent:
    """A line of output (``stream`` stdout/stderr) or the end (``exit_code`` set)."""

    stream: str = ""
    text: str = ""
    exit_code: int | None = None


def shell_command(command: str) -> list[str]:
    """The command as the image's shell runs it: ``sh -c`` inside the container, never on the host."""
    if not command.strip():
        raise InvalidInput("give a command to run, e.g. `billowin run APP -- python3 manage.py migrate`")
    if len(command) > MAX_COMMAND or "\x00" in command:
        raise InvalidInput("the command is too long or contains a NUL byte")
    return ["sh", "-c", command]


def _exit_code(alloc: dict[str, Any]) -> tuple[int, str]:
    state = (alloc.get("TaskStates") or {}).get(TASK) or {}
    events = state.get("Events") or []
    for event in reversed(events):
        if event.get("Type") == "Terminated":
            details = event.get("Details") or {}
            return int(details.get("exit_code", 1) or 0), ""
    reasons = [e.get("DisplayMessage") or e.get("Type", "") for e in events if e.get("FailsTask")]
    if state.get("Failed") or alloc.get("ClientStatus") == "failed":
        return 1, "; ".join(r for r in reasons if r) or "the task failed to start"
    return 0, ""


class Runner:
    def __init__(self, settings: Settings, nomad: NomadScheduler) -> None:
        self.settings = settings
        self.nomad = nomad

    def start(self, spec: RunJob) -> str:
        job = self.nomad.parse(render(self.settings.jobspecs_dir, TEMPLATE, spec))
        self.nomad.submit(job)
        return spec.job_id

    @staticmethod
    def new_job_id(app: str, kind: str) -> str:
        return f"{app}-{kind}-{secrets.token_hex(4)}"

    def _wait_alloc(self, job_id: str, deadline: float) -> dict[str, Any]:
        while time.monotonic() < deadline:
            allocs = self.nomad.allocations(job_id)
            started = [a for a in allocs if a.get("ClientStatus") != "pending"]
            if started:
                return started[0]
            time.sleep(0.25)
        raise ServiceError(
            "nomad", f"the run {job_id} did not start in time", hint="Check `billowin status`."
        )

    def follow(self, job_id: str, *, timeout: float = 600) -> Iterator[RunEvent]:
        """The run's output as it comes, then its exit code; purges the job at the end."""
        deadline = time.monotonic() + timeout
        try:
            alloc = self._wait_alloc(job_id, deadline)
            events: list[RunEvent] = []
            lock = threading.Condition()
            done = 0

            def read(stream: str) -> None:
                nonlocal done
                partial = b""
                try:
                    for data in self.nomad.log_frames(alloc["ID"], TASK, stream, follow=True):
                        if not data:
                            continue
                        *lines, partial = (partial + data).split(b"\n")
                        with lock:
                            events.extend(RunEvent(stream, ln.decode("utf-8", "replace")) for ln in lines)
                            lock.notify()
                except BillowinError:
                    pass
                finally:
                    with lock:
                        if partial:
                            events.append(RunEvent(stream, partial.decode("utf-8", "replace")))
                        done += 1
                        lock.notify()

            for stream in STREAMS:
                threading.Thread(target=read, args=(stream,), daemon=True).start()
            while True:
                with lock:
                    lock.wait_for(lambda: events or done == len(STREAMS), timeout=1)
                    batch, events[:] = list(events), []
                    finished = done == len(STREAMS)
                yield from batch
                if finished:
                    break
                if time.monotonic() > deadline:
                    yield RunEvent("stderr", f"[billowin] the run took over {timeout:.0f}s; stopping it")
                    yield RunEvent(exit_code=124)
                    return
            alloc = self._terminal(alloc["ID"], deadline)
            code, reason = _exit_code(alloc)
            if reason:
                yield RunEvent("stderr", f"[billowin] {reason}")
            yield RunEvent(exit_code=code)
        finally:
            self.nomad.stop(job_id, purge=True)

    def _terminal(self, alloc_id: str, deadline: float) -> dict[str, Any]:
        while True:
            alloc = self.nomad.allocation(alloc_id)
            if alloc.get("ClientStatus") in ("complete", "failed", "lost") or time.monotonic() > deadline:
                return alloc
            time.sleep(0.2)

    def run(self, spec: RunJob, *, timeout: float = 600) -> Iterator[RunEvent]:
        self.start(spec)
        return self.follow(spec.job_id, timeout=timeout)
