"""Builds as Nomad batch jobs (billowin/build/on_nomad.py), on a fake Nomad that runs each job
the way a build node would: output that grows while a test reads it, then a result file."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from billowin.build.builder import BuildRecord
from billowin.build.on_nomad import RESULT_FILE, NomadBuilder, job_id
from billowin.errors import BuildFailed, InvalidInput
from billowin.settings import Settings
from tests.fakes import FakeScheduler

SHA = "a" * 40


class BuildNode(FakeScheduler):
    """Parses the rendered jobspec enough to check it, and runs a submitted build: its output
    in three writes, then ``result`` in the allocation's result file."""

    def __init__(self, result: dict[str, Any] | None) -> None:
        super().__init__()
        self.result = result
        self.rendered: list[str] = []
        self.polls = 0

    def parse(self, hcl: str) -> dict[str, Any]:
        self.rendered.append(hcl)
        name = hcl.split('job "', 1)[1].split('"', 1)[0]
        return {"ID": name, "Type": "batch", "TaskGroups": [{"Name": "build", "Count": 1}]}

    def submit(self, job: dict[str, Any], *, expect_modify_index: int | None = None) -> str:
        done = super().submit(job, expect_modify_index=expect_modify_index)
        self.allocs.append({"ID": "alloc-1", "JobID": job["ID"], "NodeName": "n1", "ClientStatus": "running"})
        return done

    def allocations(self, job_id: str) -> list[dict[str, Any]]:
        """Each look moves the build on: a line, another, then the end with its result."""
        self.polls += 1
        key = ("alloc-1", "build", "stdout")
        steps = [b"-----> Fetching\n", b"#5 building \xe2\x9c\x93\n", b"-----> Pushed"]
        if self.polls <= len(steps):
            self.outputs[key] = self.outputs.get(key, b"") + steps[self.polls - 1]
        elif self.allocs:
            self.allocs[0]["ClientStatus"] = "complete" if self.result else "failed"
            self.allocs[0]["TaskStates"] = {"build": {"Events": [{"DisplayMessage": "Exit Code: 137"}]}}
            if self.result is not None:
                self.files[("alloc-1", RESULT_FILE)] = json.dumps(self.result)
        return super().allocations(job_id)


class Side:
    """The API's side of a build: slots, the log file, records, reporting."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.saved: list[BuildRecord] = []
        self.reported: list[BuildRecord] = []
        self.lock = threading.Lock()

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self.lock:
            yield

    def log_path(self, app: str, sha: str) -> Path:
        return self.root / "builds" / app / f"{sha}.log"

    def save_record(self, record: BuildRecord) -> None:
        self.saved.append(record)

    def finished(self, record: BuildRecord) -> None:
        self.reported.append(record)


def record(app: str) -> dict[str, Any]:
    made = BuildRecord(
        app=app, sha=SHA, status="succeeded", started_at=datetime.now(UTC), image=f"r/{app}:{SHA}"
    )
    return {"ok": True, "record": made.model_dump(mode="json")}


def builder(tmp_path: Path, nomad: BuildNode) -> tuple[NomadBuilder, Side]:
    side = Side(tmp_path)
    settings = Settings(state_dir=tmp_path, build_memory_mb=512)
    return NomadBuilder(settings, side, nomad, python="/opt/billowin/bin/python"), side  # type: ignore[arg-type]


def test_a_build_is_a_batch_job_whose_output_reaches_the_log_and_whose_result_is_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("billowin.build.on_nomad.POLL_SECONDS", 0)
    nomad = BuildNode(record("shop"))
    nb, side = builder(tmp_path, nomad)
    lines: list[str] = []
    built = nb.build("shop", "https://example.com/shop.git", SHA, token=SecretStr("s3cret"), log=lines.append)
    assert built.image == f"r/shop:{SHA}" and side.saved == [built] and side.reported == [built]
    assert lines == [
        f"-----> Building on Nomad as the batch job {job_id('shop', SHA)}",
        "-----> Fetching",
        "#5 building \u2713",
        "-----> Pushed",
    ]
    assert side.log_path("shop", SHA).read_text().splitlines() == lines
    hcl = nomad.rendered[0]
    # The token went in the job's Variable, never in the job; the job goes to build nodes only.
    assert "s3cret" not in hcl and 'value     = "true"' in hcl and "raw_exec" in hcl
    assert '"/opt/billowin/bin/python"' in hcl and "memory = 768" in hcl
    assert nomad.variables == {}, "the request Variable outlived the build"
    assert nomad.current(job_id("shop", SHA)) is None, "the finished job was not purged"


def test_an_api_that_restarted_follows_the_running_build_instead_of_building_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("billowin.build.on_nomad.POLL_SECONDS", 0)
    nomad = BuildNode(record("shop"))
    name = job_id("shop", SHA)
    nomad.add_job(name, {"build": 1}, type="batch")
    nomad.allocs.append({"ID": "alloc-1", "JobID": name, "NodeName": "n2", "ClientStatus": "running"})
    nb, _side = builder(tmp_path, nomad)
    lines: list[str] = []
    nb.build("shop", "https://example.com/shop.git", SHA, log=lines.append)
    assert nomad.rendered == [], "submitted a second build"
    assert lines[0] == f"-----> Following the build {name} already running on n2"
    assert lines[1:] == ["-----> Fetching", "#5 building \u2713", "-----> Pushed"]


def test_a_build_that_ends_without_a_result_fails_with_what_nomad_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("billowin.build.on_nomad.POLL_SECONDS", 0)
    nb, _side = builder(tmp_path, BuildNode(None))
    with pytest.raises(BuildFailed) as failed:
        nb.build("shop", "https://example.com/shop.git", SHA)
    assert "ended (failed) with no result" in failed.value.message
    assert "Exit Code: 137" in failed.value.message
    assert failed.value.log_path == tmp_path / "builds" / "shop" / f"{SHA}.log"


def test_a_failed_build_fails_with_its_own_reason_and_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("billowin.build.on_nomad.POLL_SECONDS", 0)
    result = {
        "ok": False,
        "message": "pip install failed",
        "hint": "Check requirements.txt.",
        "log_tail": "x",
    }
    nb, _side = builder(tmp_path, BuildNode(result))
    with pytest.raises(BuildFailed) as failed:
        nb.build("shop", "https://example.com/shop.git", SHA)
    assert (failed.value.message, failed.value.hint, failed.value.log_tail) == (
        "pip install failed",
        "Check requirements.txt.",
        "x",
    )


def test_bad_names_and_commits_are_refused_before_nomad_hears_of_them(tmp_path: Path) -> None:
    nomad = BuildNode(None)
    nb, _side = builder(tmp_path, nomad)
    with pytest.raises(BuildFailed):
        nb.build("Bad_Name", "https://example.com/x.git", SHA)
    with pytest.raises(InvalidInput, match="40-character commit SHA"):
        nb.build("shop", "https://example.com/x.git", "--upload-pack=evil")
    assert nomad.rendered == [] and nomad.variables == {}
