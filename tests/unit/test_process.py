from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from billowin.errors import ServiceError
from billowin.stack.process import ManagedProcess, pid_alive


def test_a_process_is_started_polled_logged_and_stopped(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    code = (
        "import pathlib, time; print('starting', flush=True); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    )
    proc = ManagedProcess("sleeper", [sys.executable, "-c", code], tmp_path, ready=marker.exists)
    proc.start()
    proc.wait_ready(timeout=20)
    pid = proc.pid()
    assert pid is not None and pid_alive(pid)
    assert proc.pidfile.read_text().splitlines()[0] == str(pid)
    proc.stop()
    assert not pid_alive(pid)
    assert not proc.pidfile.exists()
    assert "starting" in proc.log_path.read_text()


def test_a_process_that_dies_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    code = "import sys; print('port 4646 already in use', flush=True); sys.exit(3)"
    proc = ManagedProcess("nomad", [sys.executable, "-c", code], tmp_path, ready=lambda: False)
    proc.start()
    with pytest.raises(ServiceError, match="exited with status 3") as info:
        proc.wait_ready(timeout=20)
    assert "port 4646 already in use" in info.value.message


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    proc = ManagedProcess("ghost", ["/nonexistent/ghost"], tmp_path, ready=lambda: True)
    with pytest.raises(ServiceError, match="could not start"):
        proc.start()


def test_free_ports_are_distinct_and_outside_the_ephemeral_and_nomad_ranges() -> None:
    from billowin.stack.single_box import Ports

    ports = [Ports.free() for _ in range(5)]
    numbers = [n for p in ports for n in vars(p).values()]
    assert len(numbers) == len(set(numbers))
    assert all(10000 <= n < 20000 for n in numbers)


def test_a_stale_pidfile_never_makes_a_stranger_look_like_ours(tmp_path: Path) -> None:
    """After a reboot a pidfile's pid may belong to another process: it is not ours to
    report running, and `down` must not signal it."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = ManagedProcess("consul", ["consul"], tmp_path, ready=lambda: True)
        for written in (f"{stranger.pid}\n", f"{stranger.pid}\nsome-other-boot:12345\n"):
            proc.pidfile.write_text(written)  # an old-style pidfile, then one from another boot
            assert proc.pid() is None and not proc.running()
            proc.stop()
            assert stranger.poll() is None, "stop() signalled a process that was not ours"
    finally:
        stranger.kill()
        stranger.wait()
