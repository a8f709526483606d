"""The systemd units of a production box, checked by systemd itself, offline.

Nothing is started: a ``ProductionBox`` on the machine's real binaries writes its configuration
under a temporary root, and its units go to a temporary directory. Two parts of systemd read
them: ``systemd-analyze verify`` (every setting understood, every binary executable, every unit
a dependency names present), and ``systemd --test``, which loads them as PID 1 would and dumps
each setting as it parsed it, so the command lines are compared word for word with what the
supervisor runs. Both are required: a machine without them fails these tests (``billowin setup``
installs the Debian package ``systemd``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from billowin.errors import InvalidInput
from billowin.settings import Settings
from billowin.stack.production import ProductionBox
from billowin.stack.tools import SYSTEM_PACKAGES, Toolset, system_binary
from billowin.stack.units import (
    MARKER,
    SYSTEM_DOCKER,
    TARGET,
    environment_line,
    exec_line,
    render_units,
    start_pre,
    unit_name,
    unit_path,
    write_units,
)

SYSTEMD = Path("/lib/systemd/systemd")  # the manager itself, from the same package as systemd-analyze
NOBODY = "65534"


def required(name: str) -> str:
    """A binary these tests need: missing, they fail (never skip)."""
    found = system_binary(name)
    if found is None:
        pytest.fail(f"{name} is required: install the Debian package {SYSTEM_PACKAGES.get(name, name)}")
    return str(found)


@pytest.fixture(scope="module")
def tools() -> Toolset:
    return Toolset.resolve(Settings())  # the real binaries: systemd-analyze checks they exist


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory anyone may read: `systemd --test` refuses to run as root, so it runs as nobody."""
    path = Path(tempfile.mkdtemp(prefix="billowin-units-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_box(tools: Toolset, root: Path, *, own_docker: bool) -> ProductionBox:
    box = ProductionBox(tools, root, domain="example.com", public_address="192.0.2.10", own_docker=own_docker)
    box.write_configs()  # the environment files the units name
    return box


def parse_unit(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert key not in current, f"{key} given twice"
        current[key] = value
    return sections


def systemd_analyze_verify(files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [required("systemd-analyze"), "verify", "--man=no", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


def system_has_unit(name: str) -> bool:
    paths = subprocess.run(
        [required("systemd-analyze"), "unit-paths"], capture_output=True, text=True, check=True
    ).stdout.split()
    return any((Path(p) / name).is_file() for p in paths)


def systemd_dump(unit_dir: Path, start: str) -> dict[str, dict[str, list[str]]]:
    """Every setting of every unit ``start`` pulls in, as systemd parsed it from ``unit_dir``
    (and the machine's own unit directories)."""
    if not SYSTEMD.is_file():
        pytest.fail(f"{SYSTEMD} is required: install the Debian package systemd")
    argv = [str(SYSTEMD), "--test", "--system", f"--unit={start}", "--log-target=console"]
    if os.geteuid() == 0:
        argv = [required("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        # The trailing colon appends the machine's unit directories (sysinit.target and the like).
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return parse_dump(proc.stdout)


def parse_dump(text: str) -> dict[str, dict[str, list[str]]]:
    units: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    command = ""
    for line in text.splitlines():
        if match := re.fullmatch(r"\t-> Unit (\S+):", line):
            current = units.setdefault(match[1], {})
        elif not line.startswith("\t\t"):
            current = None  # a job, or the end of the units
        elif current is None:
            continue
        elif match := re.fullmatch(r"\t\t-> (\w+):", line):
            command = match[1]
        elif match := re.fullmatch(r"\t\t\tCommand Line: (.*)", line):
            current.setdefault(command, []).append(match[1])
        elif match := re.fullmatch(r"\t\t([A-Za-z][\w ]*): (.*)", line):
            current.setdefault(match[1], []).append(match[2])
    return units


def dependencies(dump: dict[str, list[str]], kind: str) -> set[str]:
    """``After: consul.service (origin-file)`` lines: only those our file set, by name."""
    return {value.split()[0] for value in dump.get(kind, []) if "origin-file" in value}


# -- what systemd-analyze verify says --------------------------------------------------------
@pytest.mark.parametrize("own_docker", [True, False], ids=["own-docker", "system-docker"])
def test_every_unit_passes_systemd_analyze_verify(tools: Toolset, tmp_path: Path, own_docker: bool) -> None:
    box = make_box(tools, tmp_path / "root", own_docker=own_docker)
    unit_dir = tmp_path / "units"
    written = write_units(box, unit_dir)
    files = [unit_dir / name for name in written]
    if not own_docker and not system_has_unit(SYSTEM_DOCKER):
        # The units require docker.service, which Debian's docker.io (a package `billowin setup`
        # installs) provides; verify fails on a missing dependency, so a machine without it gets
        # a stand-in beside our units: what is checked is still every line of ours.
        (unit_dir / SYSTEM_DOCKER).write_text(f"[Service]\nExecStart={required('dockerd')}\n")
    result = systemd_analyze_verify(files)
    ours = [line for line in result.stderr.splitlines() if "billowin" in line or str(tmp_path) in line]
    assert result.returncode == 0, result.stderr
    assert ours == []


def test_verify_fails_on_a_unit_it_cannot_run(tools: Toolset, tmp_path: Path) -> None:
    """The check above has teeth: a binary that is not there, or a setting systemd does not know,
    is reported."""
    box = make_box(tools, tmp_path / "root", own_docker=True)
    units = render_units(box)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name, text in units.items():
        (unit_dir / name).write_text(text)
    registry = unit_dir / unit_name("registry")
    registry.write_text(
        registry.read_text().replace(str(tools.docker_registry), str(tmp_path / "gone")) + "Bogus=1\n"
    )
    result = systemd_analyze_verify([unit_dir / name for name in units])
    assert result.returncode != 0
    assert "gone is not executable" in result.stderr
    assert "Unknown key" in result.stderr


# -- each unit runs what the supervisor runs -----------------------------------------------
@pytest.mark.parametrize("own_docker", [True, False], ids=["own-docker", "system-docker"])
def test_each_unit_runs_the_supervisors_command_and_environment_file(
    tools: Toolset, tmp_path: Path, own_docker: bool
) -> None:
    box = make_box(tools, tmp_path / "root", own_docker=own_docker)
    units = render_units(box)
    plan = box.plan()
    assert sorted(units) == sorted([*(unit_name(p.name) for p in plan), TARGET])
    for proc in plan:
        service = parse_unit(units[unit_name(proc.name)])["Service"]
        assert shlex.split(service["ExecStart"]) == list(proc.argv)
        assert service.get("EnvironmentFile") == (str(proc.env_file) if proc.env_file else None)
        if proc.env_file is not None:
            assert proc.env_file.is_file()  # the supervisor reads the same file at each start
        assert "Environment" not in service  # the box puts its environment in files only
        assert service["KillSignal"] == proc.stop_signal.name
        assert service["TimeoutStopSec"] == f"{proc.stop_timeout:g}s"
        assert service["SyslogIdentifier"] == f"billowin-{proc.name}"
        assert (service["Restart"], service["RestartSec"], service["LimitNOFILE"]) == ("always", "2", "65536")
        assert (service["StandardOutput"], service["StandardError"]) == ("journal", "journal")


@pytest.mark.parametrize("own_docker", [True, False], ids=["own-docker", "system-docker"])
def test_systemd_parses_each_command_line_into_the_supervisors_argv(
    tools: Toolset, tmp_path: Path, public_dir: Path, own_docker: bool
) -> None:
    box = make_box(tools, tmp_path / "root", own_docker=own_docker)
    write_units(box, public_dir)
    dump = systemd_dump(public_dir, TARGET)
    for proc in box.plan():
        unit = dump[unit_name(proc.name)]
        assert unit["Fragment Path"] == [str(public_dir / unit_name(proc.name))]
        assert [shlex.split(line) for line in unit["ExecStart"]] == [list(proc.argv)]
        assert unit.get("EnvironmentFile") == ([str(proc.env_file)] if proc.env_file else None)
        assert unit["KillSignal"] == [proc.stop_signal.name]
        assert unit["Restart"] == ["always"]
        pre = start_pre(box, proc.name)
        assert [shlex.split(line) for line in unit.get("ExecStartPre", [])] == ([pre] if pre else [])


@pytest.mark.parametrize("own_docker", [True, False], ids=["own-docker", "system-docker"])
def test_the_units_start_in_the_supervisors_order(
    tools: Toolset, tmp_path: Path, public_dir: Path, own_docker: bool
) -> None:
    box = make_box(tools, tmp_path / "root", own_docker=own_docker)
    write_units(box, public_dir)
    dump = systemd_dump(public_dir, TARGET)
    docker = unit_name("dockerd") if own_docker else SYSTEM_DOCKER

    def after(name: str) -> set[str]:
        return dependencies(dump[unit_name(name)], "After")

    assert {unit_name("consul"), docker} <= after("nomad")
    assert unit_name("consul") in after("haproxy")
    assert {unit_name("consul"), unit_name("haproxy")} <= after("consul-template")
    assert {unit_name("consul"), unit_name("nomad"), unit_name("registry"), docker} <= after("api")
    for name in ("nomad", "api"):
        assert docker in dependencies(dump[unit_name(name)], "Requires")
    everything = {unit_name(p.name) for p in box.plan()}
    assert dependencies(dump[TARGET], "Wants") == everything
    for name in everything:
        assert dependencies(dump[name], "PartOf") == {TARGET}
    assert parse_unit(render_units(box)[TARGET])["Install"] == {"WantedBy": "multi-user.target"}


def test_kill_settings_follow_each_programs_own_unit(tools: Toolset, tmp_path: Path) -> None:
    units = render_units(make_box(tools, tmp_path / "root", own_docker=True))

    def service(name: str) -> dict[str, str]:
        return parse_unit(units[unit_name(name)])["Service"]

    # HashiCorp's nomad.service: the agent alone is signalled, its allocations' executors live on.
    assert (service("nomad")["KillMode"], service("nomad")["KillSignal"]) == ("process", "SIGINT")
    assert "Delegate" not in service("nomad")
    assert service("consul")["KillSignal"] == "SIGINT"
    assert (service("haproxy")["KillMode"], service("haproxy")["KillSignal"]) == ("mixed", "SIGUSR1")
    assert (service("dockerd")["KillMode"], service("dockerd")["Delegate"]) == ("process", "yes")
    assert service("api")["KillMode"] == "control-group"  # its builds (Packer) go with it


# -- quoting ------------------------------------------------------------------------------
AWKWARD_WORDS = [
    "a b",
    "a;b",
    ";",
    "*",
    "#x",
    "é",
    '"',
    "'",
    'a"b',
    "it's",
    "=x",
    "",
    "--flag=v w",
    "~",
    "&&",
]


def test_systemd_splits_an_exec_line_as_shlex_does(public_dir: Path) -> None:
    argv = ["/usr/bin/printf", *AWKWARD_WORDS]
    env = {"A": "b c", "B": 'x "y" \\ 50%', "C": ""}
    env_file = Path("/tmp/a b'c/env")
    (public_dir / "awkward.service").write_text(
        f"[Service]\nExecStart={exec_line(argv)}\n"
        f"Environment={environment_line(env)}\nEnvironmentFile={unit_path(env_file)}\n"
    )
    assert shlex.split(exec_line(argv)) == argv
    unit = systemd_dump(public_dir, "awkward.service")["awkward.service"]
    assert [shlex.split(line) for line in unit["ExecStart"]] == [argv]
    assert unit["Environment"] == [f"{k}={v}" for k, v in sorted(env.items())]
    assert unit["EnvironmentFile"] == [str(env_file)]


@pytest.mark.parametrize("word", ["50%", "%n", "$HOME", "${X}", "a\\b", "a\nb", "\x01", "tab\there"])
def test_a_word_systemd_would_read_differently_is_refused(word: str) -> None:
    with pytest.raises(InvalidInput, match="cannot go in a systemd unit"):
        exec_line(["/usr/bin/printf", word])


@pytest.mark.parametrize("argv", [[], ["consul", "agent"], ["-/usr/bin/consul"]])
def test_a_command_must_start_with_an_absolute_path(argv: list[str]) -> None:
    with pytest.raises(InvalidInput, match="absolute path"):
        exec_line(argv)


def test_an_environment_value_with_a_newline_is_refused() -> None:
    with pytest.raises(InvalidInput):
        environment_line({"A": "x\ny"})
    with pytest.raises(InvalidInput):
        environment_line({"A B": "x"})


# -- writing them -------------------------------------------------------------------------
def test_writing_is_idempotent_and_removes_only_our_stale_units(tools: Toolset, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    root = tmp_path / "root"
    first = write_units(ProductionBox(tools, root, domain="example.com", own_docker=True), unit_dir)
    assert unit_name("dockerd") in first
    assert write_units(ProductionBox(tools, root, domain="example.com", own_docker=True), unit_dir) == []
    foreign = unit_dir / "billowin-mine.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    changed = write_units(ProductionBox(tools, root, domain="example.com", own_docker=False), unit_dir)
    assert unit_name("dockerd") in changed and not (unit_dir / unit_name("dockerd")).exists()
    assert unit_name("nomad") in changed  # now requires docker.service
    assert foreign.exists()
    for path in unit_dir.glob("billowin*"):
        if path != foreign:
            assert path.read_text().startswith(MARKER)
            assert stat.S_IMODE(path.stat().st_mode) == 0o644


# -- the box's own engine after a power cut -------------------------------------------------
def test_the_own_engine_unit_first_clears_stale_pidfiles_and_makes_its_bridge_as_the_supervisor_does(
    tools: Toolset, tmp_path: Path
) -> None:
    box = make_box(tools, tmp_path / "root", own_docker=True)
    service = parse_unit(render_units(box)[unit_name("dockerd")])["Service"]
    exec_root = box.layout.run / "docker"
    pre = shlex.split(service["ExecStartPre"])
    bridge = box.engine_bridge
    assert pre == [sys.executable, "-m", "billowin.stack.units", "prepare-engine", str(exec_root), bridge]
    (exec_root / "containerd").mkdir(parents=True)
    # dockerd's pid from before the power cut now belongs to a stranger (this test), and
    # containerd, which outlived a crash of dockerd, is alive with the exec root in its command line.
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(exec_root)])
    try:
        (exec_root / "dockerd.pid").write_text(f"{os.getpid()}\n")
        (exec_root / "containerd" / "containerd.pid").write_text(f"{engine.pid}\n")
        subprocess.run(pre, check=True, timeout=60)  # as systemd runs it, from the same argv
        assert not (exec_root / "dockerd.pid").exists()
        assert (exec_root / "containerd" / "containerd.pid").exists()
        # Its own default bridge: with `--bridge none`, dockerd would delete the host's docker0.
        assert Path("/sys/class/net", bridge).is_dir()
    finally:
        engine.kill()
        engine.wait()
    try:
        subprocess.run(pre, check=True, timeout=60)  # again: the bridge is there already
        assert not (exec_root / "containerd" / "containerd.pid").exists()  # its process is gone now
    finally:
        subprocess.run(["ip", "link", "delete", bridge], check=False)
    for name, text in render_units(box).items():
        if name != unit_name("dockerd"):
            assert "ExecStartPre" not in text
