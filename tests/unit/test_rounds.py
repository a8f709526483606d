"""The reconcilers' background thread: a round at start, another at once when woken, and a
round that raises does not end the thread."""

from __future__ import annotations

import threading

import pytest

from billowin.rounds import Rounds


def test_a_failing_round_is_logged_and_the_next_runs_when_woken(caplog: pytest.LogCaptureFixture) -> None:
    first, second = threading.Event(), threading.Event()

    def work() -> None:
        if not first.is_set():
            first.set()
            raise RuntimeError("consul went away")
        second.set()

    rounds = Rounds("billowin-test", work, interval=3600)  # only a wake can start round two
    rounds.start()
    try:
        assert first.wait(10), "no round at start"
        rounds.wake()
        assert second.wait(10), "a woken thread ran no second round after a failed one"
    finally:
        rounds.stop(timeout=10)
    assert rounds.stopping
    assert "billowin-test: a round failed" in caplog.text and "consul went away" in caplog.text


def test_stop_ends_the_thread_and_start_runs_it_again() -> None:
    ran = threading.Event()
    rounds = Rounds("billowin-test", ran.set, interval=3600)
    rounds.start()
    assert ran.wait(10)
    rounds.stop(timeout=10)
    ran.clear()
    rounds.start()
    try:
        assert ran.wait(10) and not rounds.stopping
    finally:
        rounds.stop(timeout=10)
