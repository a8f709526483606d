"""Interactive one-off runs: ``run -i`` (stdin, and a terminal when there is one), ``pg:psql``
and ``redis:cli``.

A one-off run's output is all it has (``oneoff.py``); an interactive one needs its stdin and a
terminal, which a Nomad task never has. So an interactive run is a one-off run job
(``jobspecs/run.nomad.hcl``, the same spec, config vars and network as ``run``) whose script
only waits (``sleep``), and the command goes into it through Nomad's exec API, with a TTY when
the user has one. The job is stopped and purged when the command ends, the user goes away, or
its time is up. ``pg:psql`` and ``redis:cli`` are such runs of the add-on's image (which has
``psql`` and ``redis-cli``) with the app's config vars: they connect as the app does, with the
URL the app has, over the apps' network.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from billowin.errors import BillowinError, ServiceError
from billowin.ports import ExecSession, Scheduler, TaskExec
from billowin.release.oneoff import TASK, RunJob, Runner

STARTING = 120  # seconds for the waiting container to start (its image may be pulled first)


@dataclass
class Shell:
    """A command running interactively in a one-off job; ``close()`` takes the job away."""

    job_id: str
    session: ExecSession
    nomad: Scheduler

    def close(self) -> None:
        with contextlib.suppress(BillowinError, OSError):
            self.session.close()
        with contextlib.suppress(BillowinError):
            self.nomad.stop(self.job_id, purge=True)


class Shells:
    def __init__(self, runner: Runner, nomad: Scheduler, exec_: TaskExec) -> None:
        self.runner = runner
        self.nomad = nomad
        self.exec = exec_

    def open(self, spec: RunJob, command: list[str], *, tty: bool, timeout: float) -> Shell:
        """Start ``spec`` waiting for up to ``timeout`` seconds, then run ``command`` in it."""
        spec = spec.model_copy(update={"script": f"exec sleep {int(timeout)}\n"})
        self.runner.start(spec)
        try:
            alloc = self._running(spec.job_id)
            session = self.exec.open(alloc, TASK, command, tty=tty)
        except BaseException:
            with contextlib.suppress(BillowinError):
                self.nomad.stop(spec.job_id, purge=True)
            raise
        return Shell(spec.job_id, session, self.nomad)

    def _running(self, job_id: str) -> str:
        deadline = time.monotonic() + STARTING
        while time.monotonic() < deadline:
            for alloc in self.nomad.allocations(job_id):
                state = (alloc.get("TaskStates") or {}).get(TASK) or {}
                if state.get("State") == "running":
                    return str(alloc["ID"])
                if alloc.get("ClientStatus") in ("failed", "complete", "lost"):
                    events = [e.get("DisplayMessage", "") for e in state.get("Events") or []]
                    raise ServiceError("nomad", f"the run {job_id} stopped before it began: {events[-3:]}")
            time.sleep(0.25)
        raise ServiceError(
            "nomad", f"the run {job_id} did not start in time", hint="Check `billowin status`."
        )
