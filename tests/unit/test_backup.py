"""Backups, offline: the manifest checks a restore makes first, retention, the hook, the schedule.

Nothing here runs Consul or Nomad: ``tests/integration/test_production_restore.py`` backs a
real production box up and restores it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billowin import __version__
from billowin.errors import Conflict, InvalidInput
from billowin.settings import Settings
from billowin.stack.backup import (
    FIRST_DELAY,
    FORMAT,
    RETRY_AFTER,
    STATUS_FILE,
    BackupResult,
    BackupSchedule,
    HookResult,
    archive_name,
    archive_time,
    check_manifest,
    hook_argv,
    hook_env,
    parse_version,
    production_root_of,
    prune,
    read_manifest,
    run_hook,
    scheduled_archives,
    state_found,
)
from billowin.stack.production import MANIFEST, ProductionBox
from billowin.stack.tools import Toolset
from billowin.system import System

CONSUL, NOMAD = "1.14.11", "1.6.3"
TOOLS = Toolset(*(Path(sys.executable),) * 8)  # never run here


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "format": FORMAT,
        "billowin": __version__,
        "consul": CONSUL,
        "nomad": NOMAD,
        "created_at": "2026-12-01T12:00:00+00:00",
        "apps": ["shop"],
    }
    return {**base, **changes}


# -- the manifest ------------------------------------------------------------------------
def test_an_archive_of_the_same_versions_restores_without_a_word() -> None:
    assert check_manifest(manifest(), consul=CONSUL, nomad=NOMAD) == []


def test_an_archive_from_older_releases_restores_and_says_so() -> None:
    notes = check_manifest(manifest(consul="1.14.9", nomad="1.5.11"), consul=CONSUL, nomad=NOMAD)
    assert notes == [
        "consul: the backup is from Consul 1.14.9, this box runs 1.14.11 "
        "(an older snapshot restores onto a newer release)",
        "nomad: the backup is from Nomad 1.5.11, this box runs 1.6.3 "
        "(an older snapshot restores onto a newer release)",
    ]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"nomad": "1.7.0"}, "made with Nomad 1.7.0, newer than this box's Nomad 1.6.3"),
        ({"nomad": "1.6.4"}, "made with Nomad 1.6.4, newer than this box's Nomad 1.6.3"),
        ({"consul": "1.15.0"}, "made with Consul 1.15.0, newer than this box's Consul 1.14.11"),
        ({"consul": "2.0.0", "nomad": "2.0.0"}, "Consul 2.0.0, newer"),
    ],
)
def test_an_archive_from_a_newer_consul_or_nomad_is_refused_with_what_to_install(
    changes: dict[str, str], says: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_manifest(manifest(**changes), consul=CONSUL, nomad=NOMAD)
    assert says in caught.value.message
    assert "cannot go back to an older" in caught.value.message
    assert "or later" in caught.value.hint and "billowin setup" in caught.value.hint


@pytest.mark.parametrize("fmt", [FORMAT + 1, 0, None, "1", 1.5])
def test_an_archive_of_an_unknown_format_is_refused(fmt: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_manifest(manifest(format=fmt), consul=CONSUL, nomad=NOMAD)
    assert f"archive format {fmt!r}" in caught.value.message
    assert f"reads format {FORMAT} only" in caught.value.message
    assert __version__ in caught.value.hint


def test_a_manifest_that_does_not_name_nomads_version_is_refused() -> None:
    broken = manifest()
    del broken["nomad"]
    with pytest.raises(InvalidInput, match="which Nomad made it"):
        check_manifest(broken, consul=CONSUL, nomad=NOMAD)


def test_another_billowin_version_is_mentioned() -> None:
    assert check_manifest(manifest(billowin="0.0.9"), consul=CONSUL, nomad=NOMAD) == [
        f"billowin: the backup was made by Billowin 0.0.9, this is {__version__}"
    ]


def test_versions_compare_as_numbers() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.12")
    assert parse_version("v1.6.3") == parse_version("1.6.3-dev") == (1, 6, 3)
    with pytest.raises(InvalidInput):
        parse_version("latest")


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_manifest_is_read_from_the_archives_first_member(tmp_path: Path) -> None:
    body = json.dumps(manifest()).encode()
    archive = _tar(tmp_path / "a.tar.gz", [("manifest.json", body), ("consul.snap", b"x" * 100)])
    assert read_manifest(archive) == manifest()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: _tar(p, [("consul.snap", b"x"), ("manifest.json", b"{}")]), "does not start with"),
        (lambda p: p.write_bytes(b"not an archive") and p, "is not a readable Billowin backup"),
        (lambda p: _tar(p, [("manifest.json", b"[1, 2]")]), "is not a JSON object"),
        (lambda p: _tar(p, [("manifest.json", b"{nope")]), "is not a readable Billowin backup"),
        (lambda p: p, "there is no file"),
    ],
)
def test_what_is_not_a_backup_is_refused_plainly(tmp_path: Path, make: Any, says: str) -> None:
    path = tmp_path / "x.tar.gz"
    make(path)
    with pytest.raises(InvalidInput, match=says):
        read_manifest(path)


def test_a_root_with_a_boxs_state_is_no_place_for_a_restore(tmp_path: Path) -> None:
    box = ProductionBox(TOOLS, tmp_path, domain="example.org")
    assert state_found(box) == []
    (tmp_path / MANIFEST).write_text("{}")  # the options alone are no state
    (tmp_path / "consul").mkdir()  # nor empty directories
    (tmp_path / "run").mkdir()
    assert state_found(box) == []
    (tmp_path / "consul" / "raft").mkdir()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "consul-bootstrap.token").write_text("x")
    assert state_found(box) == ["consul", "secrets"]


# -- names and retention ---------------------------------------------------------------------
def test_archive_names_carry_their_utc_time() -> None:
    at = datetime(2026, 12, 1, 3, 4, 5, tzinfo=UTC)
    name = archive_name(at)
    assert name == "billowin-backup-20261201T030405Z.tar.gz"
    assert archive_time(Path(name)) == at
    for other in (
        "billowin-backup-20261201T030405Z.tar.gz.tmp",
        ".billowin-backup-20261201T030405Z.tar.gz.abc.tmp",
        "billowin-backup-20261301T030405Z.tar.gz",  # month 13
        "billowin-backup-latest.tar.gz",
        "mine.tar.gz",
    ):
        assert archive_time(Path(other)) is None, other


def test_retention_deletes_the_oldest_archives_it_made_and_nothing_else(tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = [tmp_path / archive_name(start + timedelta(days=day)) for day in range(10)]
    for age, path in enumerate(reversed(made)):  # mtimes upside down: the names decide
        path.write_text("archive")
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    others = [
        tmp_path / "billowin-backup-by-hand.tar.gz",
        tmp_path / "notes.txt",
        tmp_path / f".{made[0].name}.x.tmp",
        tmp_path / STATUS_FILE,
    ]
    for path in others:
        path.write_text("keep me")
    (tmp_path / archive_name(start - timedelta(days=1))).mkdir()  # a directory, never deleted

    removed = prune(tmp_path, keep=3)

    assert removed == made[:7]
    assert scheduled_archives(tmp_path) == made[7:]
    assert all(path.exists() for path in others)
    assert prune(tmp_path, keep=3) == []
    with pytest.raises(ValueError):
        prune(tmp_path, keep=0)


def test_retention_of_a_directory_that_is_not_there_yet_is_nothing(tmp_path: Path) -> None:
    assert prune(tmp_path / "backups", keep=7) == []


# -- the hook -------------------------------------------------------------------------------
def test_the_hook_is_split_like_a_shell_and_gets_the_archive_last(tmp_path: Path) -> None:
    archive = tmp_path / "my backups" / "billowin-backup-20261201T030405Z.tar.gz"
    assert hook_argv("""'/opt/ship it' --to "remote:box 1" -v""", archive) == [
        "/opt/ship it",
        "--to",
        "remote:box 1",
        "-v",
        str(archive),  # one argument, spaces and all
    ]


def test_the_hook_runs_no_shell_so_nothing_in_it_is_expanded(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    assert hook_argv("echo $HOME; rm -rf / `id` | cat", archive) == [
        *("echo", "$HOME;", "rm", "-rf", "/", "`id`", "|", "cat"),
        str(archive),
    ]


@pytest.mark.parametrize(("hook", "says"), [("ship 'unbalanced", "cannot be split"), ("  ", "is empty")])
def test_a_hook_that_is_no_command_is_refused(hook: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=says):
        hook_argv(hook, tmp_path / "a.tar.gz")
    result = run_hook(hook, tmp_path / "a.tar.gz")  # never raises
    assert not result.ok and says in result.message


def test_the_hook_inherits_no_token() -> None:
    env = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "AWS_PROFILE": "backups",
        "BILLOWIN_CONSUL_TOKEN": "secret",
        "BILLOWIN_NOMAD_TOKEN": "secret",
        "BILLOWIN_GITHUB_WEBHOOK_SECRET": "secret",
        "CONSUL_HTTP_TOKEN": "secret",
        "CONSUL_HTTP_TOKEN_FILE": "/root/t",
        "NOMAD_TOKEN": "secret",
        "VAULT_TOKEN": "secret",
    }
    assert hook_env(env) == {"PATH": "/usr/bin", "HOME": "/root", "AWS_PROFILE": "backups"}


def _python_hook(code: str) -> str:
    return f"{sys.executable} -c {json.dumps(code)}"


def test_the_hook_runs_with_the_archive_and_without_the_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLOWIN_CONSUL_TOKEN", "do-not-leak")
    archive = tmp_path / "billowin-backup-20261201T030405Z.tar.gz"
    archive.write_text("archive")
    code = (
        "import os, sys; open(sys.argv[1] + '.seen', 'w').write("
        "os.environ.get('BILLOWIN_CONSUL_TOKEN', 'no token'))"
    )
    result = run_hook(_python_hook(code), archive)
    assert result == HookResult(True, f"the backup hook {Path(sys.executable).name} ran", 0)
    assert Path(f"{archive}.seen").read_text() == "no token"


def test_a_failing_hook_is_reported_not_raised(tmp_path: Path) -> None:
    code = (
        "import sys; print('uploading', file=sys.stderr); print('bucket gone', file=sys.stderr); sys.exit(3)"
    )
    result = run_hook(_python_hook(code), tmp_path / "a.tar.gz")
    assert not result.ok and result.exit_code == 3
    assert result.message.endswith("exited with 3: bucket gone")

    missing = run_hook("/nonexistent/ship --token s3cr3t", tmp_path / "a.tar.gz")
    assert not missing.ok and "could not run" in missing.message
    assert "s3cr3t" not in missing.message  # the program's name only, never its arguments

    slow = run_hook(_python_hook("import time; time.sleep(5)"), tmp_path / "a.tar.gz", timeout=0.2)
    assert not slow.ok and "did not finish within" in slow.message


# -- the schedule ---------------------------------------------------------------------------
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Takes:
    """Stands in for ``backup``: writes the archive, or fails when told to."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, dict[str, Any]]] = []
        self.fail: Exception | None = None

    def __call__(self, _box: object, path: Path, **kw: Any) -> BackupResult:
        self.calls.append((path, kw))
        if self.fail is not None:
            raise self.fail
        path.write_text("archive")
        return BackupResult(path, 7, 0.5, manifest())


def schedule(tmp_path: Path, clock: Clock, takes: Takes, **kw: Any) -> BackupSchedule:
    settings: dict[str, Any] = {"interval": 24 * 3600.0, "keep": 2, **kw}
    return BackupSchedule(
        directory=tmp_path / "backups",
        make_box=lambda: "the box",  # type: ignore[arg-type, return-value]
        take=takes,
        clock=clock,
        **settings,
    )


def test_the_first_scheduled_backup_waits_for_the_box_to_settle_then_one_each_interval(
    tmp_path: Path,
) -> None:
    clock, takes = Clock(1_800_000_000.0), Takes()
    sched = schedule(tmp_path, clock, takes)
    assert sched.next_due() == clock.now + FIRST_DELAY
    assert schedule(tmp_path, clock, takes, interval=60.0).next_due() == clock.now + 60

    clock.now += FIRST_DELAY
    status = sched.run_once()

    path, kw = takes.calls[0]
    assert path == tmp_path / "backups" / archive_name(datetime.fromtimestamp(clock.now, UTC))
    assert kw["lock_wait"] == 0  # a backup already running: skip, never queue up
    assert kw["with_images"] is False
    assert status["ok"] is True and status["archive"] == str(path)
    assert json.loads((tmp_path / "backups" / STATUS_FILE).read_text()) == status
    assert sched.next_due() == clock.now + 24 * 3600
    # A restarted API counts from the newest archive, not from its own start.
    assert schedule(tmp_path, Clock(clock.now + 3600), takes).next_due() == clock.now + 24 * 3600


def test_each_scheduled_backup_runs_the_hook_then_keeps_the_newest(tmp_path: Path) -> None:
    clock, takes = Clock(1_800_000_000.0), Takes()
    hooked: list[tuple[str, Path]] = []

    def hook(command: str, archive: Path) -> HookResult:
        hooked.append((command, archive))
        assert archive.exists()  # retention never deletes what the hook is given
        return HookResult(len(hooked) != 2, "the backup hook ship exited with 1: no route", 1)

    sched = schedule(tmp_path, clock, takes, hook="ship --to remote", hook_runner=hook)
    statuses = []
    for _ in range(3):
        statuses.append(sched.run_once())
        clock.now += 24 * 3600
    assert [h[0] for h in hooked] == ["ship --to remote"] * 3
    assert [h[1] for h in hooked] == [c[0] for c in takes.calls]
    assert statuses[1]["ok"] is True  # a failing hook fails nothing
    assert statuses[1]["hook"] == {
        "ok": False,
        "message": "the backup hook ship exited with 1: no route",
        "exit_code": 1,
    }
    assert statuses[2]["removed"] == [takes.calls[0][0].name]
    assert scheduled_archives(tmp_path / "backups") == [c[0] for c in takes.calls[1:]]


def test_a_failed_scheduled_backup_is_reported_and_tried_again_later(tmp_path: Path) -> None:
    clock, takes = Clock(1_800_000_000.0), Takes()
    takes.fail = Conflict("another backup or restore of the box under /var/lib/billowin is running")
    sched = schedule(tmp_path, clock, takes)
    status = sched.run_once()  # never raises
    assert status["ok"] is False and "another backup" in status["error"]
    assert json.loads((tmp_path / "backups" / STATUS_FILE).read_text())["ok"] is False
    assert sched.next_due() == clock.now + RETRY_AFTER

    takes.fail = RuntimeError("a bug")
    assert "RuntimeError: a bug" in sched.run_once()["error"]

    takes.fail = None
    clock.now += RETRY_AFTER
    assert sched.run_once()["ok"] is True
    assert sched.retry_at is None


def test_the_schedule_runs_only_in_the_api_of_a_production_box(tmp_path: Path) -> None:
    root = tmp_path / "box"
    (root / "billowin").mkdir(parents=True)
    settings = Settings(state_dir=root / "billowin")
    assert production_root_of(settings) is None  # no production.json: not a box
    assert System(settings).backups is None
    (root / MANIFEST).write_text("{}")
    assert production_root_of(settings) == root
    sched = System(settings).backups
    assert sched is not None
    assert (sched.directory, sched.interval, sched.keep) == (root / "backups", 24 * 3600, 7)
    assert sched.hook == "" and sched.with_images is False

    custom = Settings(
        state_dir=root / "billowin",
        backup_dir=tmp_path / "elsewhere",
        backup_interval_hours=6,
        backup_keep=3,
        backup_hook="ship --to 'remote:a b'",  # type: ignore[arg-type]
    )
    sched = System(custom).backups
    assert sched is not None
    assert (sched.directory, sched.interval, sched.keep) == (tmp_path / "elsewhere", 6 * 3600, 3)
    assert sched.hook == "ship --to 'remote:a b'"
    assert "remote" not in repr(custom)  # the hook may carry credentials: never shown
    assert System(Settings(state_dir=root / "billowin", backup_interval_hours=0)).backups is None
    assert production_root_of(Settings(state_dir=root / "other")) is None


def test_the_backup_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLOWIN_BACKUP_INTERVAL_HOURS", "0.5")
    monkeypatch.setenv("BILLOWIN_BACKUP_KEEP", "14")
    monkeypatch.setenv("BILLOWIN_BACKUP_DIR", "/srv/backups")
    monkeypatch.setenv("BILLOWIN_BACKUP_HOOK", "/usr/local/bin/ship")
    monkeypatch.setenv("BILLOWIN_BACKUP_WITH_IMAGES", "true")
    settings = Settings()
    assert settings.backup_interval_hours == 0.5 and settings.backup_keep == 14
    assert settings.backup_dir == Path("/srv/backups") and settings.backup_with_images is True
    assert (
        settings.backup_hook is not None and settings.backup_hook.get_secret_value() == "/usr/local/bin/ship"
    )


def test_the_schedule_thread_starts_and_stops(tmp_path: Path) -> None:
    clock, takes = Clock(1_800_000_000.0), Takes()
    sched = schedule(tmp_path, clock, takes)
    sched.start()
    sched.stop(timeout=5)
    assert sched._thread is None and takes.calls == []


def test_subprocess_is_what_runs_the_hook(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        seen.update(argv=argv, **kw)
        return subprocess.CompletedProcess(argv, 0, "", "")

    assert run_hook("ship -q", tmp_path / "a.tar.gz", run=run).ok
    assert seen["argv"] == ["ship", "-q", str(tmp_path / "a.tar.gz")]
    assert "shell" not in seen and seen["stdin"] == subprocess.DEVNULL
