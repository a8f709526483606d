"""Reading Docker's log frames: each line with the time Docker received it, in order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billowin.adapters.docker import LogStream, _docker_time
from billowin.errors import Unreachable
from billowin.release.logs import stamp


def test_each_frame_becomes_a_timed_line_without_its_newline() -> None:
    frames = [
        b"2026-12-01T18:20:01.123456789Z web started\n",
        b"2026-12-01T18:20:02.5Z a partial line with no newline",
        b"2026-12-01T18:20:03Z \n",
    ]
    lines = list(LogStream(iter(frames), "unix:///var/run/docker.sock"))
    assert [text for _, text in lines] == [b"web started", b"a partial line with no newline", b""]
    assert [stamp(at) for at, _ in lines] == [
        "2026-12-01T18:20:01.123Z",
        "2026-12-01T18:20:02.500Z",
        "2026-12-01T18:20:03.000Z",
    ]


def test_docker_times_and_its_zero_time() -> None:
    assert _docker_time("2026-12-01T18:20:01Z") == datetime(2026, 12, 1, 18, 20, 1, tzinfo=UTC).timestamp()
    assert _docker_time("0001-01-01T00:00:00Z") is None  # a container that never finished
    assert _docker_time("not a time") is None


def test_a_broken_connection_ends_the_stream_with_a_clear_error() -> None:
    def frames():  # type: ignore[no-untyped-def]
        yield b"2026-12-01T18:20:01Z one\n"
        raise ConnectionResetError("the engine went away")

    stream = iter(LogStream(frames(), "unix:///var/run/docker.sock"))
    assert next(stream)[1] == b"one"
    with pytest.raises(Unreachable):
        next(stream)
