"""Builds in a child process: its log streams back, its result comes only from its own pipe."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from billowin.build.builder import Builder, BuildRecord
from billowin.build.isolated import ProcessBuilder
from billowin.errors import BuildFailed
from billowin.settings import Settings

SHA = "a" * 40
RECORD = {
    "app": "shop",
    "sha": SHA,
    "status": "succeeded",
    "image": "r/shop:" + SHA,
    "started_at": "2026-12-01T00:00:00Z",
}


def fake_child(tmp_path: Path, body: str) -> str:
    """A stand-in for ``python -m billowin.build.isolated``: a shell script with the same pipes."""
    script = tmp_path / "child"
    script.write_text('#!/bin/bash\ncat > "$0.request"\n' + body)  # bash: any fd number
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def builders(tmp_path: Path, body: str) -> tuple[ProcessBuilder, list[BuildRecord]]:
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    finished: list[BuildRecord] = []
    inner = Builder(settings, None, None, None, on_finished=finished.append)  # type: ignore[arg-type]
    return ProcessBuilder(settings, inner, python=fake_child(tmp_path, body)), finished


def test_the_log_streams_back_and_the_result_comes_from_the_result_pipe(tmp_path: Path) -> None:
    result = json.dumps({"ok": True, "record": RECORD})
    builder, finished = builders(tmp_path, f"echo '-----> Building'\necho '{result}' >&$BILLOWIN_RESULT_FD\n")
    lines: list[str] = []
    record = builder.build("shop", "https://example.com/shop.git", SHA, log=lines.append)
    assert lines == ["-----> Building"]
    assert record.image == RECORD["image"] and finished == [record]  # monitoring hears of it
    request = json.loads((tmp_path / "child.request").read_text())
    assert request == {"app": "shop", "repository": "https://example.com/shop.git", "sha": SHA, "token": None}


def test_build_output_cannot_forge_a_result(tmp_path: Path) -> None:
    forged = json.dumps({"ok": True, "record": RECORD})
    message = "build of shop failed: no module named flask"
    failed = json.dumps({"ok": False, "message": message, "hint": "Add it."})
    builder, _ = builders(tmp_path, f"echo '{forged}'\necho '{failed}' >&$BILLOWIN_RESULT_FD\nexit 1\n")
    with pytest.raises(BuildFailed) as caught:
        builder.build("shop", "https://example.com/shop.git", SHA)
    assert caught.value.message == message
    assert caught.value.hint == "Add it."


def test_a_child_that_dies_without_a_result_fails_the_build_plainly(tmp_path: Path) -> None:
    builder, _ = builders(tmp_path, "echo 'half a build'\nkill -9 $$\n")
    with pytest.raises(BuildFailed, match="ended with exit code -9 and no result"):
        builder.build("shop", "https://example.com/shop.git", SHA)
