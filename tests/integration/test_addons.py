"""Add-ons on the real stack: Postgres and Redis made, linked, backed up, restored and destroyed
through the CLI, with the notes fixture app (tests/fixtures/apps/addons) reading them."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from billowin.addons.model import job_id, volume_name
from billowin.stack.single_box import SingleBox
from billowin.system import System

from .conftest import Cli, deploy_sample, wait_for

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "addons"


def page(router: httpx.Client, app: str, path: str, method: str = "GET") -> tuple[int, str]:
    try:
        resp = router.request(method, path, headers={"Host": f"{app}.localhost"}, timeout=15)
    except httpx.TransportError as exc:
        return 0, str(exc)
    return resp.status_code, resp.text.strip()


def serves(router: httpx.Client, app: str, path: str, want: str, timeout: float = 90) -> None:
    """Wait until every answer (five in a row: old instances drained) for ``path`` is ``want``."""

    def steady() -> bool:
        return all(page(router, app, path) == (200, want) for _ in range(5))

    wait_for(steady, timeout, f"{app}{path} to answer {want!r}; last: {page(router, app, path)}")


def notes_app(cli: Cli, tmp_path: Path, destroy_after: list[str], name: str) -> str:
    job, log = deploy_sample(cli, SAMPLE, tmp_path / name, name, destroy_after)
    assert job["state"] == "live", log[-3000:]
    return log


def addon(cli: Cli, app: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cli.json("addons:info", app, name)
    return found


def head(repo: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def secrets_of(stack: SingleBox, name: str) -> dict[str, str]:
    _, values = System(stack.settings).config.latest(job_id(name))
    return values


def test_postgres_rows_survive_redeploys_and_restarts_and_come_back_from_a_backup(
    stack: SingleBox, cli: Cli, router: httpx.Client, tmp_path: Path, destroy_after: list[str]
) -> None:
    app, other = f"pg{uuid.uuid4().hex[:6]}", f"pgo{uuid.uuid4().hex[:6]}"
    build_log = notes_app(cli, tmp_path, destroy_after, app)
    assert page(router, app, "/notes") == (503, "no DATABASE_URL")

    made = cli("addons:create", app, "postgres", timeout=600)
    assert f"{app}-postgres is up" in made.stderr
    assert f"{app} v2 is live" in made.stderr  # DATABASE_URL rolled out as a new release
    name = f"{app}-postgres"
    info = addon(cli, app, name)
    assert info["state"] == "ready" and info["status"] == "up"
    [attachment] = info["attachments"]
    assert (attachment["app"], attachment["var"], attachment["linked"]) == (app, "DATABASE_URL", True)
    assert info["url"].startswith(f"postgres://{name.replace('-', '_')}:********@")

    serves(router, app, "/notes", "")  # the router has dropped v1's instances (no DATABASE_URL)
    assert page(router, app, "/notes?body=first", "POST") == (200, "first")
    serves(router, app, "/notes", "first")

    # A redeploy of the same commit: a new release, the same rows.
    releases = len(cli.json("releases", app))
    cli("deploy", app, "--sha", head(tmp_path / app), "--wait")
    assert len(cli.json("releases", app)) == releases + 1
    serves(router, app, "/notes", "first")

    # The Postgres job restarted (as from Nomad's UI): the same rows once it is back.
    nomad = System(stack.settings).nomad
    assert nomad.restart(job_id(name)) == 1
    serves(router, app, "/notes", "first")

    # Backups: capture, lose the row, restore, the row is back (read back by the restore too).
    captured = cli("pg:backups:capture", app)
    assert "b00" in captured.stderr
    listed = cli.json("pg:backups", app)
    manual = [b for b in listed if b["trigger"] == "manual"]
    assert manual and manual[-1]["counts"] == {"public.notes": 1}
    assert page(router, app, "/notes?body=first", "DELETE") == (200, "")
    serves(router, app, "/notes", "")
    refused = cli("pg:backups:restore", app, ok=False)
    assert refused.returncode == 1 and "--confirm" in refused.stderr
    restored = cli.json("pg:backups:restore", app, manual[-1]["id"], "--confirm", app)
    assert restored["verified"] and restored["counts"] == {"public.notes": 1}
    serves(router, app, "/notes", "first")

    # pg:psql, piped and on a terminal: connected as the app is, to the app's database.
    piped = cli("pg:psql", app, input="SELECT 'rows:' || count(*) FROM notes;\n")
    assert "rows:1" in piped.stdout
    code, screen = cli.on_terminal(
        "pg:psql", app, script=[("=>", "SELECT body FROM notes;\r"), ("first", "\\q\r")]
    )
    assert code == 0 and f"{name.replace('-', '_')}=>" in screen

    # Isolation: an app that is not linked has no URL, and the add-on refuses it without one.
    notes_app(cli, tmp_path, destroy_after, other)
    assert page(router, other, "/notes") == (503, "no DATABASE_URL")
    guessed = info["url"].replace("********", "guessed")
    status, text = page(router, other, f"/probe?url={guessed}")
    assert status == 500 and "password authentication failed" in text, text
    password = secrets_of(stack, name)["PASSWORD"]
    seen = [
        cli("addons", app).stdout,
        cli("addons:info", app, name, "--json").stdout,
        cli("config", app).stdout,
        cli("pg:backups", app, "--json").stdout,
        cli("logs", app, "--num", "500").stdout,
        build_log,
        *(p.read_text(errors="replace") for p in Path(stack.state_dir).glob("*.log")),
    ]
    assert all(password not in text for text in seen)

    # Destroy: refused without --confirm; then the job, the volume and the config var go.
    refused = cli("addons:destroy", app, name, ok=False)
    assert refused.returncode == 1 and f"--confirm {name}" in refused.stderr
    cli("addons:destroy", app, name, "--confirm", name)
    system = System(stack.settings)
    assert system.nomad.current(job_id(name)) is None
    assert not system.docker.volume_exists(volume_name(name))
    assert "DATABASE_URL" not in cli.json("config", app)["values"]
    assert secrets_of(stack, name) == {}
    assert cli.json("addons", app) == []


def test_a_redis_counter_survives_a_restart_and_comes_back_from_a_backup(
    stack: SingleBox, cli: Cli, router: httpx.Client, tmp_path: Path, destroy_after: list[str]
) -> None:
    app = f"rd{uuid.uuid4().hex[:6]}"
    notes_app(cli, tmp_path, destroy_after, app)
    cli("addons:create", app, "redis", "--name", f"{app}-cache", timeout=600)
    name = f"{app}-cache"
    assert addon(cli, app, name)["attachments"][0]["var"] == "REDIS_URL"
    serves(router, app, "/count", "0")
    assert page(router, app, "/count", "POST") == (200, "1")
    assert page(router, app, "/count", "POST") == (200, "2")

    System(stack.settings).nomad.restart(job_id(name))
    serves(router, app, "/count", "2")
    assert cli("redis:cli", app, input="GET count\n").stdout.strip() == "2"

    backup = cli.json("pg:backups:capture", app, name)
    assert backup["counts"] == {"keys": 1}
    assert page(router, app, "/count", "POST") == (200, "3")
    restored = cli.json("pg:backups:restore", app, "--addon", name, "--confirm", app)
    assert restored["verified"], restored
    serves(router, app, "/count", "2")

    # Destroying the app destroys the add-ons it made.
    cli("apps:destroy", app, "--confirm", app)
    destroy_after.remove(app)
    system = System(stack.settings)
    assert system.nomad.current(job_id(name)) is None
    deadline = time.monotonic() + 30
    while system.docker.volume_exists(volume_name(name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not system.docker.volume_exists(volume_name(name))


@pytest.mark.parametrize("kind", ["mysql", "postgres:99"])
def test_an_add_on_billowin_does_not_offer_is_refused_plainly(kind: str, cli: Cli, tmp_path: Path) -> None:
    app = f"nx{uuid.uuid4().hex[:6]}"
    cli("apps:create", app, "--repository", str(tmp_path))
    try:
        args = ["postgres", "--version", "99"] if ":" in kind else [kind]
        refused = cli("addons:create", app, *args, ok=False)
        assert refused.returncode == 1
        assert "postgres or redis" in refused.stderr or "Give one of: 15, 17" in refused.stderr
        assert cli.json("addons", app) == []
    finally:
        cli("apps:destroy", app, "--confirm", app)
