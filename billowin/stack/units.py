"""systemd units for a production box: one service per process, and ``billowin.target``.

``billowin install`` writes them to ``/etc/systemd/system``. Each unit runs exactly what
Billowin's supervisor runs (``ProductionBox.plan()``): the same argv, the same environment
file (read by both at each start), the same stop signal and timeout. So a box started by
``billowin up --production`` and one started by systemd are the same box.

Ordering (``After=``, with ``Wants=``: a part never stops because another one did)::

    registry, consul     nothing of ours
    nomad                consul; Requires= the Docker Engine (its docker driver)
    haproxy              consul; the network (it binds the public address)
    consul-template      consul, haproxy (its reload command signals HAProxy)
    api                  consul, nomad, registry; Requires= the Docker Engine (builds)

The Docker Engine is Debian's ``docker.service``, or ``billowin-dockerd.service`` when the
box runs an engine of its own; that one first clears the engine's stale pidfiles (after a
power cut they name another process), as the supervisor does:
``python -m billowin.stack.units prepare-engine EXEC_ROOT BRIDGE``. Every service is
``PartOf=billowin.target``, so ``systemctl stop|restart billowin.target`` acts on all of them,
in reverse order.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from billowin.errors import InvalidInput
from billowin.stack.process import ManagedProcess
from billowin.stack.production import ProductionBox, prepare_own_engine

TARGET = "billowin.target"
SYSTEM_DOCKER = "docker.service"
UNIT_DIR = Path("/etc/systemd/system")
# The first line of every file written here: what marks a unit as ours, to replace or remove.
MARKER = "# Written by `billowin install`"

DESCRIPTIONS = {
    "dockerd": "Docker Engine of the box",
    "registry": "image registry",
    "consul": "Consul (service catalog and KV)",
    "nomad": "Nomad (scheduler)",
    "haproxy": "router (HAProxy)",
    "consul-template": "router configuration (consul-template)",
    "api": "API",
}
# Which of the box's own processes each one starts after (and wants).
AFTER: dict[str, tuple[str, ...]] = {
    "nomad": ("consul",),
    "haproxy": ("consul",),
    "consul-template": ("consul", "haproxy"),
    "api": ("consul", "nomad", "registry"),
}
NEEDS_DOCKER = frozenset({"nomad", "api"})
# These tell systemd when they are ready (sd_notify), so what starts after them finds them
# serving; the others are Type=exec: started once their binary runs.
NOTIFY = frozenset({"consul", "dockerd"})
KILL_MODE = {
    # As Docker's and HashiCorp's own units: a restart of the engine or of the agent leaves the
    # containers' shims, and the running allocations' executors and log shippers, alone.
    "dockerd": "process",
    "nomad": "process",
    # As HAProxy's own unit: the master relays the soft stop to its workers, and what is left
    # once it has exited is killed.
    "haproxy": "mixed",
}
EXTRA: dict[str, tuple[tuple[str, str], ...]] = {
    # From Docker's docker.service: containers' cgroups are the engine's to manage, and a
    # restart with many containers may take long.
    "dockerd": (("Delegate", "yes"), ("TasksMax", "infinity"), ("TimeoutStartSec", "0")),
    # From HashiCorp's nomad.service (no Delegate=): no cap on tasks, and a server agent is
    # never the one the OOM killer picks.
    "nomad": (("LimitNPROC", "infinity"), ("TasksMax", "infinity"), ("OOMScoreAdjust", "-1000")),
}
# Units of the system each one starts after (and wants): HAProxy binds the public address.
SYSTEM_AFTER = {"haproxy": ("network-online.target",)}

# What systemd reads differently from a POSIX shell, even inside quotes: "%" starts a
# specifier, "$" a variable, "\" a C escape; control characters break or bend the line.
_SYSTEMD_SPECIAL = re.compile(r"[%$\\\x00-\x1f\x7f]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def unit_name(process: str) -> str:
    return f"billowin-{process}.service"


def render_units(box: ProductionBox) -> dict[str, str]:
    """Every unit file of ``box``, by file name: one service per process of ``box.plan()``, and
    ``billowin.target`` that wants them all."""
    docker = unit_name("dockerd") if box.own_docker else SYSTEM_DOCKER
    units = {
        unit_name(proc.name): service_unit(proc, docker=docker, pre=start_pre(box, proc.name))
        for proc in box.plan()
    }
    units[TARGET] = target_unit(list(units))
    return units


def start_pre(box: ProductionBox, name: str) -> list[str] | None:
    """What runs before ``name`` starts: for the box's own dockerd, what the supervisor runs
    before it. A live process of this engine keeps its pidfile: the containerd that outlives a
    crash of dockerd (KillMode=process lets it), which the next dockerd takes over."""
    if name != "dockerd":
        return None
    return [
        sys.executable,
        "-m",
        "billowin.stack.units",
        "prepare-engine",
        str(box.layout.run / "docker"),
        box.engine_bridge,
    ]


def write_units(box: ProductionBox, directory: Path = UNIT_DIR) -> list[str]:
    """Write ``box``'s units into ``directory``; returns the names of files written or removed.

    Only a file whose content changes is rewritten, and a unit of ours that the box no longer
    has (``billowin-dockerd.service`` once the box uses the system's engine) is removed. Files
    without our first line are never touched.
    """
    return install_unit_files(render_units(box), directory)


def install_unit_files(units: Mapping[str, str], directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in sorted(units.items()):
        path = directory / name
        if path.is_file() and path.read_text() == text:
            continue
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)  # no secret in a unit: the tokens are in the environment files
        os.replace(tmp, path)
        changed.append(name)
    for path in sorted([*directory.glob("billowin-*.service"), directory / TARGET]):
        if path.name not in units and path.is_file() and _is_ours(path):
            path.unlink()
            changed.append(path.name)
    return changed


def _is_ours(path: Path) -> bool:
    with path.open() as fh:
        return fh.readline().startswith(MARKER)


# -- one unit ------------------------------------------------------------------------
def service_unit(proc: ManagedProcess, *, docker: str, pre: Sequence[str] | None = None) -> str:
    """The service unit that runs ``proc`` as the supervisor does; ``docker`` is the Docker
    Engine's unit, which nomad and the API require; ``pre``, a command to run before."""
    name = unit_name(proc.name)
    wants = [*SYSTEM_AFTER.get(proc.name, ()), *(unit_name(other) for other in AFTER.get(proc.name, ()))]
    requires = [docker] if proc.name in NEEDS_DOCKER else []
    unit: list[tuple[str, str]] = [("Description", f"Billowin {DESCRIPTIONS.get(proc.name, proc.name)}")]
    if wants:
        unit += [("Wants", " ".join(wants))]
    if requires:
        unit += [("Requires", " ".join(requires))]
    if wants or requires:
        unit += [("After", " ".join([*requires, *wants]))]
    unit += [
        ("PartOf", TARGET),
        # A part that keeps failing is retried every RestartSec for as long as it takes
        # (Consul still electing, the engine still starting), never given up on.
        ("StartLimitIntervalSec", "0"),
    ]
    service: list[tuple[str, str]] = [
        ("Type", "notify" if proc.name in NOTIFY else "exec"),
        # As under the supervisor, which `billowin install` runs as root; User= also gives the
        # process $HOME, which Packer (run by the API for builds) needs.
        ("User", "root"),
        *([("ExecStartPre", exec_line(pre))] if pre else []),
        ("ExecStart", exec_line(proc.argv)),
    ]
    if proc.env_file is not None:
        service += [("EnvironmentFile", unit_path(proc.env_file))]
    if proc.env:
        service += [("Environment", environment_line(proc.env))]
    if proc.cwd is not None:
        service += [("WorkingDirectory", unit_path(proc.cwd))]
    service += [
        ("Restart", "always"),
        ("RestartSec", "2"),
        ("LimitNOFILE", "65536"),
        ("KillSignal", proc.stop_signal.name),
        ("KillMode", KILL_MODE.get(proc.name, "control-group")),
        ("TimeoutStopSec", f"{proc.stop_timeout:g}s"),
        *EXTRA.get(proc.name, ()),
        ("StandardOutput", "journal"),
        ("StandardError", "journal"),
        ("SyslogIdentifier", f"billowin-{proc.name}"),
    ]
    return _file(name, {"Unit": unit, "Service": service})


def target_unit(services: Sequence[str]) -> str:
    listed = " ".join(services)
    return _file(
        TARGET,
        {
            "Unit": [
                ("Description", "Billowin: every part of the production box"),
                ("Wants", listed),
                ("After", listed),  # reached once every part has started
            ],
            "Install": [("WantedBy", "multi-user.target")],
        },
    )


def _file(name: str, sections: Mapping[str, Sequence[tuple[str, str]]]) -> str:
    lines = [f"{MARKER}: rerun it to change this file; local changes: `systemctl edit {name}`."]
    for section, entries in sections.items():
        lines += ["", f"[{section}]", *(f"{key}={value}" for key, value in entries)]
    return "\n".join(lines) + "\n"


# -- quoting -------------------------------------------------------------------------
def exec_line(argv: Sequence[str]) -> str:
    """``argv`` as an ``ExecStart=`` value that systemd splits back into exactly ``argv``.

    ``shlex.join`` quotes for a POSIX shell, and systemd's rules agree with it on every word
    that has no ``%``, ``$``, backslash or control character (and a lone ``;`` is only a
    separator unquoted, which shlex never leaves it): such a word is refused rather than escaped,
    so that the line also reads back with ``shlex.split``.
    """
    if not argv or not os.path.isabs(argv[0]):
        raise InvalidInput(
            f"a unit's command must start with an absolute path, not {argv[:1]!r}",
            hint="Run `billowin setup` so that every binary has a fixed path, then install again.",
        )
    for word in argv:
        _refuse_special(word)
    return shlex.join(argv)


def unit_path(path: Path) -> str:
    """A path as a unit's ``EnvironmentFile=`` or ``WorkingDirectory=`` value (taken verbatim
    by systemd, but for specifiers and the surrounding white space it trims)."""
    text = str(path)
    _refuse_special(text)
    if not path.is_absolute() or text != text.strip():
        raise InvalidInput(f"{text!r} cannot go in a systemd unit: it must be absolute, without edge spaces")
    return text


def environment_line(env: Mapping[str, str]) -> str:
    """``env`` as one ``Environment=`` value: each assignment double-quoted, with ``\\``, ``"``
    and ``%`` escaped (systemd expands no variable there)."""
    words = []
    for key, value in sorted(env.items()):
        if not _ENV_NAME.fullmatch(key) or re.search(r"[\x00-\x1f\x7f]", value):
            raise InvalidInput(f"{key!r} cannot go in a systemd unit's environment")
        escaped = f"{key}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        words.append(f'"{escaped}"')
    return " ".join(words)


def _refuse_special(word: str) -> None:
    if _SYSTEMD_SPECIAL.search(word):
        raise InvalidInput(
            f"{word!r} cannot go in a systemd unit: systemd reads %, $, backslashes and "
            "control characters in its own way",
            hint="Use paths without those characters (for instance another --root).",
        )


def main(argv: list[str] | None = None) -> int:
    """What a unit runs besides the box's own programs (see ``start_pre``)."""
    parser = argparse.ArgumentParser(prog="python -m billowin.stack.units")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser(
        "prepare-engine", help="remove the engine's stale pidfiles, make its default bridge"
    )
    prepare.add_argument("exec_root", type=Path)
    prepare.add_argument("bridge")
    args = parser.parse_args(argv)
    prepare_own_engine(args.exec_root, args.bridge)
    return 0


if __name__ == "__main__":
    sys.exit(main())
