"""An app's logs: every instance's stdout and stderr, merged into one stream.

Lines come from Nomad's alloc logs API (``Scheduler.log_frames``), one
reader thread per instance and stream, all feeding one queue. Each line is
tagged with its process type and instance (``web.1``, like Heroku's dynos),
the allocation and the stream. While following, new instances (a scale-up, a
deploy) are picked up as they start.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from billowin.errors import BillowinError
from billowin.ports import Scheduler

STREAMS = ("stdout", "stderr")
ALLOC_NAME = re.compile(r"\.(?P<group>[^.\[]+)\[(?P<index>\d+)\]$")
BYTES_PER_LINE = 200  # how far back to start reading for ``lines`` recent lines
MAX_LINE = 64 * 1024  # a "line" longer than this (output with no newline) is cut into pieces


def split_lines(partial: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines in ``partial + data``, and what is left of an unfinished one.

    What is left never exceeds ``MAX_LINE``: a program printing megabytes without a newline
    gets its output cut into ``MAX_LINE`` pieces instead of growing one buffer for ever.
    """
    *complete, rest = (partial + data).split(b"\n")
    lines = [line[i : i + MAX_LINE] for line in complete for i in range(0, max(len(line), 1), MAX_LINE)]
    while len(rest) > MAX_LINE:
        lines.append(rest[:MAX_LINE])
        rest = rest[MAX_LINE:]
    return lines, rest


@dataclass(frozen=True)
class LogLine:
    at: str
    process: str  # "web.1"
    alloc: str  # the allocation's short id
    stream: str  # stdout | stderr
    text: str

    def render(self) -> str:
        return f"{self.at} {self.process} ({self.alloc}) {self.stream}: {self.text}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def instance_name(alloc: dict[str, Any]) -> str:
    """``app.web[0]`` → ``web.1``: process type and 1-based instance number."""
    match = ALLOC_NAME.search(alloc.get("Name", ""))
    if not match:
        return str(alloc.get("TaskGroup", "?"))
    return f"{match.group('group')}.{int(match.group('index')) + 1}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Source(threading.Thread):
    """Reads one allocation's stdout or stderr and queues its lines."""

    def __init__(
        self,
        nomad: Scheduler,
        alloc: dict[str, Any],
        stream: str,
        out: queue.Queue[LogLine | tuple[str, str]],
        stop: threading.Event,
        *,
        lines: int,
        follow: bool,
    ) -> None:
        super().__init__(name=f"logs-{alloc['ID'][:8]}-{stream}", daemon=True)
        self.nomad = nomad
        self.alloc = alloc
        self.stream = stream
        self.out = out
        self.stop_event = stop
        self.lines = lines
        self.follow = follow
        self.task = alloc.get("TaskGroup", "web")
        self.process = instance_name(alloc)

    def emit(self, text: str) -> None:
        self.out.put(LogLine(_now(), self.process, self.alloc["ID"][:8], self.stream, text))

    def run(self) -> None:
        partial = b""
        backlog: list[bytes] = []
        try:
            frames = self.nomad.log_frames(
                self.alloc["ID"],
                self.task,
                self.stream,
                origin="end",
                offset=max(self.lines, 0) * BYTES_PER_LINE,
                follow=self.follow,
            )
            for data in frames:
                if self.stop_event.is_set():
                    return
                if data is None:  # a heartbeat: nothing new
                    continue
                complete, partial = split_lines(partial, data)
                if self.follow:
                    for raw in complete:
                        self.emit(raw.decode("utf-8", errors="replace"))
                else:
                    backlog = (backlog + complete)[-self.lines :]
            if partial:
                backlog = [*backlog, partial][-self.lines :]
            for raw in backlog if self.lines > 0 else []:
                self.emit(raw.decode("utf-8", errors="replace"))
        except BillowinError as exc:
            if not self.stop_event.is_set():
                self.emit(f"[billowin] log stream ended: {exc.message}")
        finally:
            self.out.put((self.alloc["ID"], self.stream))


class AppLogs:
    def __init__(self, nomad: Scheduler, *, poll_interval: float = 2.0) -> None:
        self.nomad = nomad
        self.poll_interval = poll_interval

    def _running(self, app: str, process: str | None) -> list[dict[str, Any]]:
        allocs = self.nomad.allocations(app)
        return [
            a
            for a in allocs
            if a.get("ClientStatus") == "running" and (process is None or a.get("TaskGroup") == process)
        ]

    def stream(
        self,
        app: str,
        *,
        lines: int = 100,
        follow: bool = False,
        process: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[LogLine]:
        """Recent lines of every running instance, then (``follow``) new lines as they come.

        ``stop`` ends a followed stream (the caller sets it when its client goes away).
        """
        stop = stop or threading.Event()
        out: queue.Queue[LogLine | tuple[str, str]] = queue.Queue(maxsize=10_000)
        started: set[tuple[str, str]] = set()  # (allocation, stream) being read
        live = 0

        def start_new(backlog: int) -> int:
            count = 0
            for alloc in self._running(app, process):
                for stream in STREAMS:
                    if (alloc["ID"], stream) in started:
                        continue
                    started.add((alloc["ID"], stream))
                    _Source(self.nomad, alloc, stream, out, stop, lines=backlog, follow=follow).start()
                    count += 1
            return count

        live += start_new(lines)
        try:
            next_poll = time.monotonic() + self.poll_interval
            while live > 0 or follow:
                if stop.is_set():
                    return
                if follow and time.monotonic() >= next_poll:
                    # New instances (scale-up, deploy), and streams Nomad closed while the
                    # instance still runs: their lines from now on.
                    next_poll = time.monotonic() + self.poll_interval
                    with contextlib.suppress(BillowinError):
                        live += start_new(0)
                try:
                    item = out.get(timeout=0.5)
                except queue.Empty:
                    continue
                if isinstance(item, tuple):  # a source ended
                    started.discard(item)
                    live -= 1
                    continue
                yield item
        finally:
            stop.set()
