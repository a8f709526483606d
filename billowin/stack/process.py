"""Start a real binary, wait until it answers, keep its log, stop it cleanly.

A ``ManagedProcess`` writes a pidfile, so a stack started by ``billowin up``
can be stopped by a later ``billowin down``, and sends its output to a log
file under the stack's state directory.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from billowin.errors import ServiceError

Ready = Callable[[], bool]


# Below both the kernel's ephemeral range (32768+), where outgoing connections take
# their ports, and Nomad's dynamic port range (20000-32000), where app ports come from.
FREE_PORT_RANGE = (10000, 19999)
_taken: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, outside the ranges others allocate from at random."""
    for _ in range(1000):
        port = random.randint(*FREE_PORT_RANGE)  # noqa: S311 - not for security
        if port in _taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise ServiceError("ports", f"no free port in {FREE_PORT_RANGE}")


def http_ok(url: str, *, expect: Callable[[httpx.Response], bool] | None = None) -> Ready:
    def probe() -> bool:
        try:
            resp = httpx.get(url, timeout=2)
        except httpx.HTTPError:
            return False
        return expect(resp) if expect else resp.status_code < 500

    return probe


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def read_env_file(path: Path | None) -> dict[str, str]:
    """The KEY=VALUE lines of an environment file as systemd reads them (no quoting, no expansion)."""
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ServiceError("stack", f"cannot read the environment file {path}: {exc}") from exc
    env = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """Write ``env`` as an environment file readable by its owner only (it holds tokens)."""
    for key, value in env.items():
        if "\n" in value or "=" in key or not key:
            raise ServiceError("stack", f"{key!r} cannot go in an environment file")
    write_private(path, "".join(f"{k}={v}\n" for k, v in sorted(env.items())))


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, never readable by others even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def process_identity(pid: int) -> str | None:
    """What tells this process apart from any later one with the same pid: the boot it runs in
    and its start time (``/proc/<pid>/stat`` field 22). None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    fields_after_name = stat.rsplit(")", 1)[1].split()
    return f"{boot}:{fields_after_name[19]}"  # field 22 of the whole line


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0): ask /proc whether it has exited.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    run_dir: Path
    ready: Ready
    env: Mapping[str, str] = field(default_factory=dict)
    # KEY=VALUE lines (tokens, addresses) read at each start; a systemd unit names the same
    # file in EnvironmentFile=, so both run the process with the same environment.
    env_file: Path | None = None
    cwd: Path | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 15.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def pid(self) -> int | None:
        """The process's pid, or None: a pidfile whose process is gone, or whose pid now belongs
        to another process (after a reboot, or once pids wrapped), names nothing of ours."""
        if self._proc is not None:
            return self._proc.pid
        try:
            pid_text, _, identity = self.pidfile.read_text().strip().partition("\n")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if identity and process_identity(pid) == identity.strip() else None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(  # no shell: argv goes to exec as-is
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env, **read_env_file(self.env_file)},
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServiceError(self.name, f"could not start {self.argv[0]}: {exc}") from exc
        finally:
            log.close()
        identity = process_identity(self._proc.pid) or ""
        self.pidfile.write_text(f"{self._proc.pid}\n{identity}\n")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self.ready():
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise ServiceError(
                    self.name,
                    f"exited with status {self._proc.returncode} while starting. "
                    f"Last lines of {self.log_path}:\n{tail(self.log_path)}",
                    hint=f"Read {self.log_path} for the full log.",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise ServiceError(
            self.name,
            f"not ready after {timeout:.0f}s. Last lines of {self.log_path}:\n{tail(self.log_path)}",
            hint=f"Read {self.log_path} for the full log.",
        )

    def kill(self) -> None:
        """SIGKILL the process itself (not its children), and reap it."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(timeout=10)
            self._proc = None
        self.pidfile.unlink(missing_ok=True)

    def reap(self, timeout: float = 10) -> None:
        """Wait for this child, killed by someone else, to exit, and forget it; its pidfile stays,
        as it would after a crash (the next start must see through it)."""
        if self._proc is not None:
            self._proc.wait(timeout=timeout)
            self._proc = None

    def stop(self) -> None:
        pid = self.pid()
        if pid is None or not pid_alive(pid):
            self.pidfile.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, self.stop_signal)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            if self._proc is None and not pid_alive(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(timeout=10)
        self.pidfile.unlink(missing_ok=True)
        self._proc = None
