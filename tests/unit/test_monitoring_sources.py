"""Monitoring: reading HAProxy's exporter and access lines, and Nomad's task events."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import httpx

from billowin.monitoring.collector import EventMemory, digest_allocations
from billowin.monitoring.router import AccessLog, CounterDeltas, parse_access_line, parse_exporter
from billowin.monitoring.sources import NS, classify_events
from billowin.stack.process import free_port
from billowin.stack.tools import system_binary

HAPROXY = str(system_binary("haproxy") or "haproxy")

EXPORTER = """\
# HELP haproxy_process_start_time_seconds Start time in seconds
# TYPE haproxy_process_start_time_seconds gauge
haproxy_process_start_time_seconds {start}
# HELP haproxy_backend_http_requests_total Total number of HTTP requests received
# TYPE haproxy_backend_http_requests_total counter
haproxy_backend_http_requests_total{{proxy="no_such_app"}} 3
haproxy_backend_http_requests_total{{proxy="app_shop"}} {requests}
# HELP haproxy_backend_http_responses_total Total number of HTTP responses
# TYPE haproxy_backend_http_responses_total counter
haproxy_backend_http_responses_total{{proxy="app_shop",code="2xx"}} 90
haproxy_backend_http_responses_total{{proxy="app_shop",code="4xx"}} {r4xx}
haproxy_backend_http_responses_total{{proxy="app_shop",code="5xx"}} {r5xx}
# HELP haproxy_backend_total_time_average_seconds Avg. total time for last 1024 successful connections.
# TYPE haproxy_backend_total_time_average_seconds gauge
haproxy_backend_total_time_average_seconds{{proxy="app_shop"}} 0.004000
"""


def exporter(start: int = 1000, requests: int = 100, r4xx: int = 6, r5xx: int = 4) -> str:
    return EXPORTER.format(start=start, requests=requests, r4xx=r4xx, r5xx=r5xx)


def test_exporter_output_becomes_per_app_counters() -> None:
    scrape = parse_exporter(exporter())
    assert scrape.start_time == 1000
    assert set(scrape.apps) == {"shop"}  # HAProxy's own backends are not apps
    shop = scrape.apps["shop"]
    assert shop.requests == 100 and shop.responses == {"2xx": 90, "4xx": 6, "5xx": 4}
    assert shop.average_total_s == 0.004


def test_deltas_start_from_a_baseline_and_survive_reloads() -> None:
    deltas = CounterDeltas()
    assert deltas.update(parse_exporter(exporter(requests=100))) == {}  # what came before is history
    step = deltas.update(parse_exporter(exporter(requests=130, r4xx=8, r5xx=5)))["shop"]
    assert (step.requests, step.responses_4xx, step.responses_5xx) == (30, 2, 1)
    # HAProxy reloaded (new start time): its counters restarted from zero, all of it is new.
    step = deltas.update(parse_exporter(exporter(start=2000, requests=140, r4xx=1, r5xx=0)))["shop"]
    assert (step.requests, step.responses_4xx, step.responses_5xx) == (140, 1, 0)
    # A counter going backwards without a new start time is a reset too.
    step = deltas.update(parse_exporter(exporter(start=2000, requests=7, r4xx=1, r5xx=0)))["shop"]
    assert step.requests == 7


def test_access_lines() -> None:
    assert parse_access_line("billowin-access app_shop 200 12") == ("shop", 200, 12.0)
    assert parse_access_line("billowin-access app_shop 503 -1") is None  # aborted: no latency
    assert parse_access_line("billowin-access no_such_app 404 0") is None
    assert parse_access_line("billowin-access stats 200 0") is None
    assert parse_access_line("<134>Jan  1 haproxy[1]: something else") is None


def test_access_log_keeps_latencies_per_app_until_drained(tmp_path: Any) -> None:
    log = AccessLog(tmp_path / "haproxy.sock", per_app=3)
    log.record(
        "billowin-access app_shop 200 1\nbillowin-access app_blog 200 9\nbillowin-access app_shop 200 2\n"
    )
    for millis in range(10):
        log.record(f"billowin-access app_shop 200 {millis}")
    drained = log.drain()
    assert len(drained["shop"]) == 3  # bounded
    assert drained["blog"] == [9.0]
    assert log.drain() == {}


def event(kind: str, at: float, **details: str) -> dict[str, Any]:
    return {"Type": kind, "Time": int(at * NS), "Details": details, "DisplayMessage": ""}


CRASH_LOOP = [
    event("Started", 100),
    event("Terminated", 108, exit_code="1", oom_killed="false"),
    event("Restarting", 108.1),
    event("Started", 110),
    event("Terminated", 118, exit_code="137", oom_killed="true"),
    event("Restarting", 118.1),
    event("Started", 120),
    event("Terminated", 128, exit_code="1", oom_killed="false"),
    event("Not Restarting", 128.1, fails_task="true"),
]
STOPPED_BY_A_DEPLOY = [
    event("Started", 100),
    event("Killing", 200, kill_timeout="10s"),
    event("Terminated", 200.5, exit_code="143", oom_killed="false"),
    event("Killed", 200.6),
]


def test_task_events_tell_crashes_from_requested_stops() -> None:
    kinds = [(e.kind, e.at) for e in classify_events(CRASH_LOOP)]
    assert kinds == [
        ("crash", 108.0),
        ("restart", 108.1),
        ("crash", 118.0),
        ("oom", 118.0),
        ("restart", 118.1),
        ("crash", 128.0),
    ]
    assert classify_events(STOPPED_BY_A_DEPLOY) == []
    restart_requested = [event("Restart Signaled", 50), event("Terminated", 51), event("Restarting", 52)]
    assert [e.kind for e in classify_events(restart_requested)] == ["restart"]


def alloc(
    alloc_id: str, events: list[dict[str, Any]], *, status: str = "running", app: str = "shop"
) -> dict[str, Any]:
    return {
        "ID": alloc_id,
        "JobID": app,
        "TaskGroup": "web",
        "ClientStatus": status,
        "DesiredStatus": "run",
        "ModifyTime": int(130 * NS),
        "TaskStates": {"web": {"Events": events}},
    }


def test_allocations_are_counted_once_and_only_after_the_collector_started() -> None:
    memory = EventMemory(since_ns=int(105 * NS))
    first = digest_allocations(
        [alloc("a1", CRASH_LOOP[:5]), alloc("x", CRASH_LOOP, app="not-an-app")], {"shop"}, memory
    )
    assert first.running == {("shop", "web"): ["a1"]}
    assert first.web_wanted["shop"] == 1
    assert first.crash_times["shop"] == [108.0, 118.0]  # history, for the crash-loop window
    assert dict(first.new_events) == {
        ("shop", "web", "crash"): 2,
        ("shop", "web", "restart"): 1,
        ("shop", "web", "oom"): 1,
    }
    # The next collection sees the same events plus new ones, and the allocation failed.
    second = digest_allocations([alloc("a1", CRASH_LOOP, status="failed")], {"shop"}, memory)
    assert dict(second.new_events) == {
        ("shop", "web", "restart"): 1,
        ("shop", "web", "crash"): 1,
        ("shop", "web", "failed_alloc"): 1,
    }
    third = digest_allocations([alloc("a1", CRASH_LOOP, status="failed")], {"shop"}, memory)
    assert dict(third.new_events) == {}
    # Garbage-collected allocations are forgotten.
    digest_allocations([], {"shop"}, memory)
    assert memory.newest == {} and memory.failed == set()


def test_events_before_the_collector_started_are_not_counted() -> None:
    memory = EventMemory(since_ns=int(1000 * NS))
    view = digest_allocations([alloc("a1", CRASH_LOOP, status="failed")], {"shop"}, memory)
    assert dict(view.new_events) == {}
    assert len(view.crash_times["shop"]) == 3  # still there for the crash-loop window


def test_access_log_watches_haproxys_ring_and_follows_it_across_a_reload(tmp_path: Any) -> None:
    """A real HAProxy (master-worker, loopback only) answers with its own ``return``; every
    request's access line reaches the reader, before and after a reload (a new worker, a new ring)."""
    sock, port = tmp_path / "haproxy.sock", free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    stats socket {sock} mode 600 level admin expose-fd listeners
    log ring@billowin-access len 256 format raw local0 info
    hard-stop-after 30s
ring billowin-access
    format raw
    maxlen 256
    size 65536
defaults
    mode http
    log global
    log-format "billowin-access %b %ST %Ta"
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend http
    bind 127.0.0.1:{port}
    default_backend app_shop
backend app_shop
    http-request return status 200 content-type text/plain string ok
"""
    )
    haproxy = subprocess.Popen([HAPROXY, "-W", "-f", str(config)], stderr=subprocess.DEVNULL)
    reader = AccessLog(sock, check_every=0.2)
    try:
        wait_until(sock.exists, "HAProxy's runtime socket")
        reader.start()
        wait_until(lambda: reader._worker is not None, "the reader to watch a worker")

        def send(count: int) -> None:
            with httpx.Client() as client:
                for _ in range(count):
                    assert client.get(f"http://127.0.0.1:{port}/").text == "ok"

        send(5)
        wait_until(lambda: reader.lines >= 5, "the first five access lines")
        first_worker = reader._worker
        haproxy.send_signal(signal.SIGUSR2)  # reload: a new worker with a new, empty ring
        wait_until(lambda: reader.worker_pid() not in (None, first_worker), "the new worker")
        send(7)
        wait_until(lambda: reader.lines >= 12, f"the lines sent after the reload; got {reader.lines}")
        assert len(reader.drain()["shop"]) == 12
    finally:
        reader.stop()
        haproxy.terminate()
        haproxy.wait(timeout=10)


def wait_until(predicate: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
