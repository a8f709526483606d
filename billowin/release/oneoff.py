"""One-off runs: ``billowin run <cmd>`` and the Procfile ``release`` phase.

A run is a Nomad batch job (``jobspecs/run.nomad.hcl``) of the app's current
image with its config vars, never restarted or rescheduled. Its stdout and
stderr are streamed back as they come (from Docker), then its exit code; the
job and its container are removed afterwards so runs do not pile up.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from billowin.errors import BillowinError, InvalidInput, NotFound, ServiceError
from billowin.ports import ContainerEngine, LogStream, Scheduler
from billowin.release.jobspec import ContainerLogs, render
from billowin.release.logs import ALLOC_LABEL, STREAMS, container_name
from billowin.settings import Settings

TEMPLATE = "run.nomad.hcl"
TASK = "run"
MAX_COMMAND = 4096
FINISHED = ("complete", "failed", "lost")


class RunJob(ContainerLogs):
    """The variables of ``jobspecs/run.nomad.hcl``."""

    job_id: str = Field(pattern=r"^[a-z][a-z0-9-]{0,80}$")
    app: str
    release: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    kind: str = Field(pattern=r"^(run|release)$")
    image: str = Field(pattern=r"^[A-Za-z0-9._:/@-]{1,255}$")
    script: str  # run by the image's `sh`
    # Template delimiters nobody can put in a command: the script is never a template.
    delimiter: str = Field(default_factory=lambda: f"billowin-{secrets.token_hex(8)}")
    config_template: str | None = None
    vault_policies: list[str] = Field(default_factory=list)
    network_mode: str = Field("billowin-apps", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    cpu: int = 100
    memory: int = 256


@dataclass(frozen=True)
class RunEvent:
    """A line of output (``stream`` stdout/stderr) or the end (``exit_code`` set)."""

    stream: str = ""
    text: str = ""
    exit_code: int | None = None


def shell_command(command: str) -> str:
    """The command as a script for the image's ``sh`` (inside the container, never on the host)."""
    if not command.strip():
        raise InvalidInput("give a command to run, e.g. `billowin run APP -- python3 manage.py migrate`")
    if len(command) > MAX_COMMAND or "\x00" in command:
        raise InvalidInput("the command is too long or contains a NUL byte")
    return command + "\n"


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
    def __init__(self, settings: Settings, nomad: Scheduler, docker: ContainerEngine) -> None:
        self.settings = settings
        self.nomad = nomad
        self.docker = docker

    def start(self, spec: RunJob) -> str:
        job = self.nomad.parse(render(self.settings.jobspecs_dir, TEMPLATE, spec))
        self.nomad.submit(job)
        return spec.job_id

    @staticmethod
    def new_job_id(app: str, kind: str) -> str:
        return f"{app}-{kind}-{secrets.token_hex(4)}"

    def spec(
        self,
        app: str,
        release: str,
        image: str,
        command: str,
        *,
        kind: str,
        config_template: str | None,
        vault_policies: list[str],
    ) -> RunJob:
        return RunJob(
            job_id=self.new_job_id(app, kind),
            app=app,
            release=release,
            kind=kind,
            image=image,
            script=shell_command(command),
            config_template=config_template,
            vault_policies=vault_policies,
            network_mode=self.settings.app_network,
        )

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
        """The run's output as it comes, then its exit code; purges the job and its container.

        One reader per stream follows the container's logs in Docker (Nomad collects none):
        a followed stream ends when the container stops, and a container that already
        stopped is read to its end, so nothing is missed however short the run. The exit code
        comes from Nomad once the allocation is finished.
        """
        deadline = time.monotonic() + timeout
        alloc: dict[str, Any] | None = None
        try:
            alloc = self._wait_alloc(job_id, deadline)
            name = container_name(alloc, TASK)
            events: queue.Queue[RunEvent | None] = queue.Queue()
            opened: list[LogStream] = []

            def read(stream: str) -> None:
                try:
                    lines = self.docker.logs(name, stream, tail=None, since=None, follow=True)
                    opened.append(lines)
                    for _, raw in lines:
                        events.put(RunEvent(stream, raw.decode("utf-8", "replace")))
                except NotFound:
                    pass  # the task never started: Nomad says why below
                except BillowinError as exc:
                    events.put(RunEvent("stderr", f"[billowin] output stream ended: {exc.message}"))
                finally:
                    events.put(None)

            for stream in STREAMS:
                threading.Thread(target=read, args=(stream,), daemon=True).start()
            ended = 0
            while ended < len(STREAMS):
                if time.monotonic() > deadline:
                    for lines in opened:
                        lines.close()
                    yield RunEvent("stderr", f"[billowin] the run took over {timeout:.0f}s; stopping it")
                    yield RunEvent(exit_code=124)
                    return
                try:
                    event = events.get(timeout=0.5)
                except queue.Empty:
                    continue
                if event is None:
                    ended += 1
                else:
                    yield event
            while (alloc := self.nomad.allocation(alloc["ID"])).get("ClientStatus") not in FINISHED:
                if time.monotonic() > deadline:
                    yield RunEvent(exit_code=124)
                    return
                time.sleep(0.2)  # the container has stopped: Nomad records it within moments
            code, reason = _exit_code(alloc)
            if reason:
                yield RunEvent("stderr", f"[billowin] {reason}")
            yield RunEvent(exit_code=code)
        finally:
            self.nomad.stop(job_id, purge=True)
            if alloc is not None:
                with contextlib.suppress(BillowinError):  # a later clean-up removes it otherwise
                    self.docker.remove_containers(label=f"{ALLOC_LABEL}={alloc['ID']}")

    def run(self, spec: RunJob, *, timeout: float = 600) -> Iterator[RunEvent]:
        self.start(spec)
        return self.follow(spec.job_id, timeout=timeout)
