"""An app's logs: every instance's stdout and stderr, merged into one stream.

Docker keeps each container's output (the ``local`` log driver, set in the jobspecs); Nomad's
own log collection is off (no ``logmon`` or ``docker_logger`` per instance: about 28 MB each).
Nomad says which allocations an app has; each allocation's task is the container
``<task>-<allocation id>``, read through the Engine API (``ContainerEngine.logs``), one reader
thread per container and stream. Each line is tagged with its process type and instance
(``web.1``, like Heroku's dynos), the allocation, the stream and the time Docker received it.

Without ``follow``, the recent lines of every instance Nomad still knows, running or stopped
(Nomad leaves stopped containers to Billowin, which removes them after
``BILLOWIN_KEEP_STOPPED_CONTAINERS``), merged in time order. With ``follow``, the running
instances' recent lines, then new lines as they come; new instances (a scale-up, a deploy, a
restart after a crash) are joined as they start, from the moment the tail began.
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

from billowin.errors import BillowinError, NotFound
from billowin.ports import ContainerEngine, LogStream, Scheduler

STREAMS = ("stdout", "stderr")
ALLOC_NAME = re.compile(r"\.(?P<group>[^.\[]+)\[(?P<index>\d+)\]$")
STOPPED = ("complete", "failed", "lost")
APP_LABEL = "billowin.app"  # the label the jobspecs put on every app and run container
ALLOC_LABEL = "com.hashicorp.nomad.alloc_id"  # the label Nomad's docker driver puts on each container
MAX_LINE = 64 * 1024  # a longer entry is cut into pieces (Docker itself cuts lines at 16 KiB)


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


def container_name(alloc: dict[str, Any], task: str) -> str:
    """The Docker container Nomad's docker driver runs ``task`` of ``alloc`` in."""
    return f"{task}-{alloc['ID']}"


def stamp(at: float) -> str:
    """Unix time → ``2026-12-01T18:20:01.123Z``."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OpenStreams:
    """The followed streams of one tail; ``close()`` ends them all, and any opened after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[LogStream] = []
        self._closed = False

    def add(self, stream: LogStream) -> None:
        with self._lock:
            if not self._closed:
                self._streams.append(stream)
                return
        stream.close()  # the tail ended while this reader was connecting

    def close(self) -> None:
        with self._lock:
            self._closed, streams = True, self._streams
        for stream in streams:
            stream.close()


# What a reader queues: ``((allocation id, stream), unix time, line)``, and ``(key, 0, None)`` at its end.
_Item = tuple[tuple[str, str], float, LogLine | None]


class _Source(threading.Thread):
    """Reads one container's stdout or stderr and queues its lines."""

    def __init__(
        self,
        docker: ContainerEngine,
        alloc: dict[str, Any],
        stream: str,
        out: queue.Queue[_Item],
        streams: OpenStreams | None,
        *,
        tail: int | None,
        since: float | None,
        follow: bool,
    ) -> None:
        super().__init__(name=f"logs-{alloc['ID'][:8]}-{stream}", daemon=True)
        self.docker = docker
        self.alloc = alloc
        self.stream = stream
        self.out = out
        self.streams = streams
        self.tail, self.since, self.follow = tail, since, follow
        self.process = instance_name(alloc)
        self.key = (str(alloc["ID"]), stream)

    def emit(self, at: float, text: str) -> None:
        self.out.put(
            (self.key, at, LogLine(stamp(at), self.process, self.alloc["ID"][:8], self.stream, text))
        )

    def run(self) -> None:
        name = container_name(self.alloc, str(self.alloc.get("TaskGroup", "web")))
        try:
            lines = self.docker.logs(name, self.stream, tail=self.tail, since=self.since, follow=self.follow)
            if self.streams is not None:
                self.streams.add(lines)
            for at, raw in lines:
                for i in range(0, max(len(raw), 1), MAX_LINE):
                    self.emit(at, raw[i : i + MAX_LINE].decode("utf-8", errors="replace"))
        except NotFound:
            if self.alloc.get("ClientStatus") == "running" and self.stream == STREAMS[0]:
                self.emit(
                    time.time(),
                    f"[billowin] no container {name} on this machine's Docker; "
                    "its instance may run on another node",
                )
        except BillowinError as exc:
            self.emit(time.time(), f"[billowin] log stream ended: {exc.message}")
        finally:
            self.out.put((self.key, 0.0, None))


class AppLogs:
    def __init__(self, nomad: Scheduler, docker: ContainerEngine, *, poll_interval: float = 2.0) -> None:
        self.nomad = nomad
        self.docker = docker
        self.poll_interval = poll_interval

    def _instances(self, app: str, process: str | None, *, stopped: bool) -> list[dict[str, Any]]:
        wanted = ("running", *STOPPED) if stopped else ("running",)
        return [
            a
            for a in self.nomad.allocations(app)
            if a.get("ClientStatus") in wanted and (process is None or a.get("TaskGroup") == process)
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
        """Recent lines of the app's instances, then (``follow``) new lines as they come.

        ``stop`` ends a followed stream (the caller sets it when its client goes away).
        """
        stop = stop or threading.Event()
        if not follow:
            yield from self._recent(app, lines, process)
            return
        out: queue.Queue[_Item] = queue.Queue(maxsize=10_000)
        streams = OpenStreams()
        started: set[tuple[str, str]] = set()  # (allocation, stream) being read
        last: dict[tuple[str, str], float] = {}  # the newest line's time, per allocation and stream
        began = time.time()

        def start_new(tail: int | None) -> None:
            for alloc in self._instances(app, process, stopped=False):
                for stream in STREAMS:
                    key = (alloc["ID"], stream)
                    if key in started:
                        continue
                    started.add(key)
                    # A container seen before (restarted after a crash): from its newest line on;
                    # one that started since the tail began: everything it printed.
                    since = last[key] + 1e-6 if key in last else (None if tail is not None else began)
                    _Source(
                        self.docker, alloc, stream, out, streams, tail=tail, since=since, follow=True
                    ).start()

        start_new(max(lines, 0))
        try:
            next_poll = time.monotonic() + self.poll_interval
            while not stop.is_set():
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_interval
                    with contextlib.suppress(BillowinError):
                        start_new(None)
                try:
                    item = out.get(timeout=0.5)
                except queue.Empty:
                    continue
                key, at, line = item
                if line is None:  # that container stopped: a restart is joined at the next poll
                    started.discard(key)
                    continue
                last[key] = at
                yield line
        finally:
            stop.set()
            streams.close()

    def _recent(self, app: str, lines: int, process: str | None) -> list[LogLine]:
        """The last ``lines`` lines of every instance Nomad still knows, in time order."""
        if lines <= 0:
            return []
        out: queue.Queue[_Item] = queue.Queue()
        sources = [
            _Source(self.docker, alloc, stream, out, None, tail=lines, since=None, follow=False)
            for alloc in self._instances(app, process, stopped=True)
            for stream in STREAMS
        ]
        for source in sources:
            source.start()
        for source in sources:
            source.join()
        found: list[tuple[float, LogLine]] = []
        while not out.empty():
            _, at, line = out.get()
            if line is not None:
                found.append((at, line))
        found.sort(key=lambda pair: pair[0])  # stable: each container's own lines keep their order
        return [line for _, line in found[-lines:]]
