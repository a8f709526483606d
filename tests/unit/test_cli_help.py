"""The ``billowin`` command line as a whole: the commands its help lists, and how they fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from billowin.cli import app

ORDER = [
    *("setup", "install", "join-secrets", "up", "down", "status", "build"),
    *("tokens", "tokens:create", "tokens:revoke", "backup", "restore", "login"),
    *("apps", "apps:create", "apps:info", "apps:destroy", "open"),
    *("config", "config:set", "config:unset", "domains", "domains:add", "domains:remove", "certs"),
    *("certs:add", "certs:remove", "certs:redirect"),
    *("ps", "ps:scale", "ps:restart", "volumes", "volumes:add", "volumes:remove"),
    *("releases", "rollback", "deploy", "deploy:status", "builds", "builds:output"),
    *("logs", "run", "apps:review-apps", "review-apps", "review-apps:approve"),
    *("addons", "addons:create", "addons:info", "addons:attach", "addons:detach", "addons:destroy"),
    *("pg:psql", "redis:cli", "pg:backups", "pg:backups:capture", "pg:backups:restore"),
    *("whoami", "alerts", "audit"),
    *("nodes", "nodes:drain", "nodes:activate", "nodes:remove"),
]


def test_the_root_help_lists_every_command_in_order() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.main.TyperGroup)
    assert list(group.commands) == ORDER
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    listed = re.findall(r"^│ ([a-z:-]+) ", result.output.split("Commands")[1], flags=re.MULTILINE)
    assert listed == ORDER


@pytest.mark.parametrize("args", [["alerts"], ["alerts", "--json"], ["apps"], ["releases", "shop"]])
def test_every_api_command_says_what_to_do_when_the_api_is_down(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("BILLOWIN_API_URL", "http://127.0.0.1:9")  # nothing listens there
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "error: the Billowin API: cannot reach http://127.0.0.1:9"
    assert lines[1].startswith("what to do: ")
    assert "Traceback" not in result.output
