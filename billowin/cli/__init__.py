"""The ``billowin`` command line (typer): ``billowin.cli:app``.

One module per group of commands, each adding its commands to the app in
``billowin.cli.main`` when imported:

- ``platform``: ``setup``, ``up``, ``down``, ``status``, ``build``, ``tokens``,
  ``tokens:create``, ``tokens:revoke`` (they act on this machine);
- ``install``: ``install``, a production box run by systemd on this machine;
- ``backup``: ``backup``, ``restore``, a production box into one archive and back;
- ``session``: ``login``, ``whoami``;
- ``apps``, ``config``, ``domains``, ``ps``, ``releases``, ``logs``, ``monitoring``:
  the Heroku-style app verbs, spoken over the HTTP API (``billowin.cli.client``);
- ``audit``: the audit log, over the HTTP API;
- ``nodes``: ``nodes``, ``nodes:drain``, ``nodes:activate``, ``nodes:remove``, the cluster's
  Nomad client nodes, over the HTTP API.

What they print, and how an error is reported, is in ``billowin.cli.output``.
``COMMANDS`` is the order ``billowin --help`` lists them in.
"""

from __future__ import annotations

from typer.main import get_command_name
from typer.models import CommandInfo

from billowin.cli import (  # noqa: F401 - importing a command module adds its commands
    addons,
    apps,
    audit,
    backup,
    config,
    domains,
    install,
    logs,
    monitoring,
    nodes,
    platform,
    ps,
    releases,
    review,
    session,
    volumes,
)
from billowin.cli.main import app

__all__ = ["COMMANDS", "app"]

COMMANDS = (
    *("setup", "install", "join-secrets", "up", "down", "status", "build"),
    *("tokens", "tokens:create", "tokens:revoke"),
    *("backup", "restore"),
    "login",
    *("apps", "apps:create", "apps:info", "apps:destroy", "open"),
    *("config", "config:set", "config:unset"),
    *("domains", "domains:add", "domains:remove", "certs", "certs:add", "certs:remove", "certs:redirect"),
    *("ps", "ps:scale", "ps:restart", "volumes", "volumes:add", "volumes:remove"),
    *("releases", "rollback", "deploy", "deploy:status", "builds", "builds:output"),
    *("logs", "run"),
    *("apps:review-apps", "review-apps", "review-apps:approve"),
    *("addons", "addons:create", "addons:info", "addons:attach", "addons:detach", "addons:destroy"),
    *("pg:psql", "redis:cli", "pg:backups", "pg:backups:capture", "pg:backups:restore"),
    "whoami",
    "alerts",
    "audit",
    *("nodes", "nodes:drain", "nodes:activate", "nodes:remove"),
)


def _position(command: CommandInfo) -> int:
    """Where a command goes in the help; one missing from ``COMMANDS`` goes last."""
    name = command.name or get_command_name(getattr(command.callback, "__name__", ""))
    return COMMANDS.index(name) if name in COMMANDS else len(COMMANDS)


app.registered_commands.sort(key=_position)
