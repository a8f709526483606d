"""Fetch an app's source at one exact commit, with a real ``git`` and no shell.

Only ``https://`` URLs and local paths are accepted. Transports git would
otherwise honour (``ext::``, ``file://``, ``ssh://``, ``git://``…), refs that
look like options, and https URLs pointing at loopback, private or cloud
metadata addresses (unless allowed) are refused before git runs.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import SecretStr

from billowin.errors import InvalidInput, ServiceError

SHA = re.compile(r"^[0-9a-f]{40}$")

# Only these transports, whatever the caller's git configuration says.
GIT_SAFETY = [
    "-c",
    "protocol.allow=never",
    "-c",
    "protocol.https.allow=always",
    "-c",
    "protocol.file.allow=always",
]


def check_sha(sha: str) -> str:
    if not SHA.match(sha):
        raise InvalidInput(f"{sha!r} is not a full 40-character commit SHA", hint="Deploy an exact commit.")
    return sha


def check_repository(url: str, *, allow_private: bool = False) -> str:
    """Return ``url`` if it is an https URL or an existing local path, else refuse it."""
    if url.startswith("-") or "::" in url.split("/")[0]:
        raise InvalidInput(f"refusing repository {url!r}: not an https URL or a local path")
    parts = urlsplit(url)
    if parts.scheme == "https":
        host = parts.hostname or ""
        if not host:
            raise InvalidInput(f"repository URL {url!r} has no host")
        if not allow_private:
            for address in _addresses(host):
                if address.is_loopback or address.is_private or address.is_link_local or address.is_reserved:
                    raise InvalidInput(
                        f"refusing repository {url!r}: {host} is a loopback, private or metadata address",
                        hint="Set BILLOWIN_ALLOW_PRIVATE_REPOSITORIES=true to build from your own network.",
                    )
        return url
    if parts.scheme:
        raise InvalidInput(f"refusing repository {url!r}: only https:// URLs and local paths are supported")
    path = Path(url)
    if not path.is_absolute() or not path.exists():
        raise InvalidInput(f"repository path {url!r} must be an absolute path to an existing repository")
    return str(path)


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return []
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def fetch(
    url: str,
    sha: str,
    dest: Path,
    *,
    token: SecretStr | None = None,
    allow_private: bool = False,
    timeout: float = 300,
) -> Path:
    """Make ``dest`` a clean checkout of ``url`` at ``sha`` (no ``.git`` history beyond it)."""
    url = check_repository(url, allow_private=allow_private)
    check_sha(sha)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    auth: list[str] = []
    if token is not None and url.startswith("https://"):
        basic = base64.b64encode(f"x-access-token:{token.get_secret_value()}".encode()).decode()
        auth = ["-c", f"http.extraHeader=Authorization: Basic {basic}"]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    steps = [
        ["git", "init", "--quiet", str(dest)],
        ["git", *GIT_SAFETY, *auth, "-C", str(dest), "fetch", "--quiet", "--depth", "1", "--", url, sha],
        ["git", "-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD"],
    ]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if proc.returncode != 0:
            shutil.rmtree(dest, ignore_errors=True)
            message = (
                proc.stderr.strip().replace(token.get_secret_value(), "***") if token else proc.stderr.strip()
            )
            raise ServiceError(
                "git",
                f"cannot fetch {sha[:12]} from {url}: {message}",
                hint="Check the repository URL, the commit and, for a private repository, its token.",
            )
    return dest
