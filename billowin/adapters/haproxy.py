"""HAProxy: validate configurations with ``haproxy -c`` and read its runtime API.

The runtime API is a line protocol on a unix socket (``show info``); no
maintained Python client exists for it, so the few lines needed live here.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from billowin.errors import ServiceError
from billowin.ports import ComponentHealth

SYSTEM = "haproxy"


def check_config(haproxy_bin: str, path: Path) -> str | None:
    """Return ``None`` when ``path`` is a valid configuration, else HAProxy's complaint."""
    try:
        proc = subprocess.run(
            [haproxy_bin, "-c", "-f", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run {haproxy_bin} -c: {exc}"
    if proc.returncode == 0:
        return None
    output = (proc.stderr + proc.stdout).splitlines()
    alerts = [line for line in output if "ALERT" in line] or output
    return "\n".join(alerts).strip() or f"haproxy -c exited {proc.returncode}"


def runtime_command(sock_path: Path, command: str, *, timeout: float = 3.0) -> str:
    """Send one command to the runtime API socket and return the whole answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(sock_path))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise ServiceError(SYSTEM, f"runtime API at {sock_path}: {exc}") from exc
    return b"".join(chunks).decode(errors="replace")


def show_info(sock_path: Path) -> dict[str, str]:
    info = {}
    for line in runtime_command(sock_path, "show info").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


class HAProxyRouter:
    """The ``Router`` port: is HAProxy answering its runtime API, and would it take a configuration?"""

    def __init__(self, socket_path: Path | None, haproxy_bin: str = "haproxy") -> None:
        self._socket = socket_path
        self._bin = haproxy_bin

    def check_config(self, path: Path) -> str | None:
        return check_config(self._bin, path)

    def health(self) -> ComponentHealth:
        if self._socket is None:
            return ComponentHealth(SYSTEM, False, error="BILLOWIN_HAPROXY_SOCKET is not set")
        try:
            info = show_info(self._socket)
        except ServiceError as exc:
            return ComponentHealth(SYSTEM, False, address=str(self._socket), error=exc.message)
        return ComponentHealth(SYSTEM, True, version=info.get("Version"), address=str(self._socket))
