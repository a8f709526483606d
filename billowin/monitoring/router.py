"""Per-app traffic from HAProxy: request and status counts, and latency percentiles.

Each app is one HAProxy backend, ``app_<name>`` (``billowin/router/haproxy.cfg.ctmpl``);
custom domains route to the same backend, so they count for the app.

**Counts** come from HAProxy's built-in Prometheus exporter on the router's
stats port (``/metrics?scope=global&scope=backend``): per backend
``haproxy_backend_http_requests_total`` and ``haproxy_backend_http_responses_total``
by status class. They are exact, and cheap to read however busy the router is.
Counters restart from zero when HAProxy reloads (a new worker; consul-template
reloads it when an app or a domain comes or goes), so deltas restart too: a reload is seen as
a new ``haproxy_process_start_time_seconds`` or a counter going backwards.
Requests the old worker still finishes after a reload are not counted.

**Latency percentiles** cannot come from the exporter or the stats socket:
HAProxy (2.6, Debian 12's) only publishes per-backend *averages* over the last
1024 requests (``qtime/ctime/rtime/ttime``), and averages hide exactly the slow
tail p95/p99 are for. Its access log has each request's own timing, so the
router logs one short line per request (``billowin-access <backend> <status> <Ta>``,
``%Ta`` = milliseconds from the request received to the response sent) to a
unix datagram socket beside its runtime socket, ``access-log.sock``, which the
API reads here. Percentiles are then computed over the real per-request times
(a bounded uniform sample per app and minute; see ``aggregate.Reservoir``).
Datagrams never block HAProxy: when nobody listens, or the reader falls behind,
lines are dropped and only the latency sample gets smaller. The HAProxy average
is still recorded (``latency_avg_ms``) for when no line arrives.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from billowin.errors import ServiceError, Unreachable
from billowin.monitoring.aggregate import Reservoir

log = logging.getLogger("billowin.monitoring")
BACKEND_PREFIX = "app_"
LINE_TAG = "billowin-access"
SOCKET_NAME = "access-log.sock"


@dataclass
class BackendCounters:
    requests: float = 0.0
    responses: dict[str, float] = field(default_factory=dict)  # "2xx" -> count
    average_total_s: float | None = None


@dataclass
class RouterScrape:
    start_time: float | None
    apps: dict[str, BackendCounters]


WANTED = frozenset(
    {
        "haproxy_process_start_time_seconds",
        "haproxy_backend_http_requests_total",
        "haproxy_backend_http_responses_total",
        "haproxy_backend_total_time_average_seconds",
    }
)


def _wanted_lines(text: str) -> str:
    """Only the metrics used here: HAProxy exports ~85 per backend, and parsing them all costs."""
    keep = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(" ", 3)
            name = parts[2] if len(parts) > 2 else ""
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in WANTED:
            keep.append(line)
    return "\n".join(keep) + "\n"


def parse_exporter(text: str) -> RouterScrape:
    """Per-app counters from HAProxy's Prometheus exporter output."""
    apps: dict[str, BackendCounters] = {}
    start_time = None
    for family in text_string_to_metric_families(_wanted_lines(text)):
        for sample in family.samples:
            if sample.name == "haproxy_process_start_time_seconds":
                start_time = float(sample.value)
                continue
            proxy = sample.labels.get("proxy", "")
            if not proxy.startswith(BACKEND_PREFIX):
                continue
            counters = apps.setdefault(proxy.removeprefix(BACKEND_PREFIX), BackendCounters())
            if sample.name == "haproxy_backend_http_requests_total":
                counters.requests = float(sample.value)
            elif sample.name == "haproxy_backend_http_responses_total":
                counters.responses[sample.labels.get("code", "other")] = float(sample.value)
            elif sample.name == "haproxy_backend_total_time_average_seconds":
                counters.average_total_s = float(sample.value)
    return RouterScrape(start_time, apps)


@dataclass(frozen=True)
class TrafficDelta:
    requests: float
    responses_4xx: float
    responses_5xx: float
    average_total_s: float | None


class CounterDeltas:
    """Turns successive scrapes into per-app deltas, across HAProxy reloads (counters back at zero)."""

    def __init__(self) -> None:
        self._last: RouterScrape | None = None

    def update(self, scrape: RouterScrape) -> dict[str, TrafficDelta]:
        last, self._last = self._last, scrape
        if last is None:
            return {}  # the first scrape is the baseline: what came before is not this interval's
        reloaded = scrape.start_time != last.start_time
        out: dict[str, TrafficDelta] = {}
        for app, now in scrape.apps.items():
            before = None if reloaded else last.apps.get(app)

            def delta(current: float, previous: float | None) -> float:
                # A counter that went backwards was reset: everything it holds is new.
                return current if previous is None or current < previous else current - previous

            out[app] = TrafficDelta(
                requests=delta(now.requests, before.requests if before else None),
                responses_4xx=delta(
                    now.responses.get("4xx", 0.0), before.responses.get("4xx", 0.0) if before else None
                ),
                responses_5xx=delta(
                    now.responses.get("5xx", 0.0), before.responses.get("5xx", 0.0) if before else None
                ),
                average_total_s=now.average_total_s,
            )
        return out


class RouterStats:
    """Reads HAProxy's Prometheus exporter."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout)

    def scrape(self) -> RouterScrape:
        try:
            resp = self._client.get(self.url, params=[("scope", "global"), ("scope", "backend")])
        except httpx.HTTPError as exc:
            raise Unreachable("haproxy", self.url) from exc
        if resp.status_code != 200:
            raise ServiceError("haproxy", f"{self.url} answered HTTP {resp.status_code}")
        try:
            return parse_exporter(resp.text)
        except ValueError as exc:
            raise ServiceError("haproxy", f"unreadable metrics from {self.url}: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def parse_access_line(line: str) -> tuple[str, int, float] | None:
    """``billowin-access app_<name> <status> <Ta ms>`` -> (app, status, ms); None for other lines."""
    parts = line.split()
    if len(parts) != 4 or parts[0] != LINE_TAG or not parts[1].startswith(BACKEND_PREFIX):
        return None
    try:
        status, millis = int(parts[2]), float(parts[3])
    except ValueError:
        return None
    if millis < 0:  # aborted before a response: no latency to count
        return None
    return parts[1].removeprefix(BACKEND_PREFIX), status, millis


class AccessLog:
    """Receives HAProxy's access lines on a unix datagram socket and keeps each app's latencies.

    ``drain`` hands over what arrived since the last call. Only one process can own
    the socket: when another live process already listens on it, this one stays off
    (``start`` returns False) rather than steal the lines.
    """

    def __init__(self, path: Path, *, per_app: int = 20_000, poll_interval: float = 0.1) -> None:
        self.path = path
        self.per_app = per_app
        self.poll_interval = poll_interval
        self.lines = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._latencies: dict[str, Reservoir] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _someone_listens(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(str(self.path))
            except OSError:
                return False
        return True

    def start(self) -> bool:
        if self.path.exists():
            if self._someone_listens():
                log.warning("%s already has a reader: this API records no latency percentiles", self.path)
                return False
            self.path.unlink()  # left behind by a process that died
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind(str(self.path))
        sock.setblocking(False)
        self._sock = sock
        self._thread = threading.Thread(target=self._receive, name="billowin-access-log", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _receive(self) -> None:
        # Wake up a few times a second and read whatever queued, rather than once per request:
        # a thread wake-up costs far more than reading one more datagram. The socket buffer
        # (SO_RCVBUF) holds what arrives in between; beyond it lines drop, and HAProxy never waits.
        while not self._stop.wait(self.poll_interval):
            if not self.read_available():
                return

    def read_available(self) -> bool:
        """Read every queued datagram; False once the socket is closed."""
        sock = self._sock
        if sock is None:
            return False
        chunks: list[bytes] = []
        while True:
            try:
                chunks.append(sock.recv(1024))
            except BlockingIOError:
                break
            except OSError:
                return False
        if chunks:
            self.record(b"\n".join(chunks).decode(errors="replace"))  # a datagram is a line
        return True

    def record(self, text: str) -> None:
        parsed = [p for p in map(parse_access_line, text.splitlines()) if p is not None]
        with self._lock:
            for app, _status, millis in parsed:
                self.lines += 1
                reservoir = self._latencies.get(app)
                if reservoir is None:
                    reservoir = self._latencies[app] = Reservoir(self.per_app)
                reservoir.add(millis)

    def drain(self) -> dict[str, list[float]]:
        with self._lock:
            taken, self._latencies = self._latencies, {}
        return {app: r.values for app, r in taken.items()}
