"""Fetch an app's source at one exact commit, with a real ``git`` and no shell.

Only ``https://`` URLs and local paths are accepted. Transports git would
otherwise honour (``ext::``, ``file://``, ``ssh://``, ``git://``…) and refs that
look like options are refused before git runs.

An https host is resolved once, here, and every address it resolves to must be
globally routable (not loopback, private, shared ``100.64.0.0/10``, link-local,
metadata, multicast or reserved, also when wrapped in an IPv6 form such as
``::ffff:127.0.0.1``) unless ``BILLOWIN_ALLOW_PRIVATE_REPOSITORIES`` is set. A name
that does not resolve is refused; numeric hosts must be written plainly (no
``2130706433`` or ``0x7f.1``). git is then pinned to exactly the addresses that were
checked (``http.curloptResolve``, git ≥ 2.37), so a second DNS answer (rebinding)
is never used, and redirects are refused (``http.followRedirects=false``).

Credentials never reach git's argv or anything shown: a deploy token, or
credentials written in the URL (which are taken out of it), travel to git as an
``Authorization`` header through its environment (``GIT_CONFIG_COUNT``), and
``redact_url`` / ``redact`` take them out of every URL and message shown.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from pydantic import SecretStr

from billowin.errors import InvalidInput, ServiceError

SHA = re.compile(r"^[0-9a-f]{40}$")

# Only these transports, whatever the caller's git configuration says; never follow a redirect.
GIT_SAFETY = [
    "-c",
    "protocol.allow=never",
    "-c",
    "protocol.https.allow=always",
    "-c",
    "protocol.file.allow=always",
    "-c",
    "http.followRedirects=false",
]
MIN_GIT = (2, 37)  # http.curloptResolve

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
# "scheme://<anything up to the authority's last @>": the credentials part of a URL in any text.
USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@")
SHARED = ipaddress.ip_network("100.64.0.0/10")
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_GIT_CONFIG_ENV = re.compile(r"^GIT_CONFIG_(COUNT|KEY_\d+|VALUE_\d+|PARAMETERS)$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Remote:
    """A repository, checked and (for https) resolved once: what git is given, and how."""

    url: str  # what git fetches: no credentials, the host as checked
    shown: str  # for messages: credentials redacted
    pins: tuple[str, ...] = ()  # http.curloptResolve entries: host:port:address[,address…]
    username: str | None = None  # credentials that were written in the URL
    password: str | None = None


def redact_url(url: str) -> str:
    """``url`` with any credentials in it replaced by ``***`` (``https://***@host/repo.git``)."""
    return USERINFO.sub(r"\1***@", url)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` without URL credentials or any of ``secrets``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return USERINFO.sub(r"\1***@", text)


def check_sha(sha: str) -> str:
    if not SHA.match(sha):
        raise InvalidInput(f"{sha!r} is not a full 40-character commit SHA", hint="Deploy an exact commit.")
    return sha


def check_repository(url: str, *, allow_private: bool = False) -> str:
    """What git would fetch for ``url`` (an https URL or an existing local path), or refuse it."""
    return resolve_repository(url, allow_private=allow_private).url


def resolve_repository(url: str, *, allow_private: bool = False) -> Remote:
    """Check ``url`` and, for https, resolve its host once; see the module docstring."""
    shown = redact_url(url)
    if url.startswith("-") or "::" in url.split("/")[0]:
        raise InvalidInput(f"refusing repository {shown!r}: not an https URL or a local path")
    parts = urlsplit(url)
    if parts.scheme == "https":
        if UNSAFE.search(url):  # where URL parsers disagree (Python's, curl's)
            raise InvalidInput(
                f"refusing repository {shown!r}: it contains spaces, control characters or backslashes"
            )
        return _https(parts, shown, allow_private)
    if parts.scheme:
        raise InvalidInput(f"refusing repository {shown!r}: only https:// URLs and local paths are supported")
    path = Path(url)
    if not path.is_absolute() or not path.exists():
        raise InvalidInput(f"repository path {url!r} must be an absolute path to an existing repository")
    return Remote(url=str(path), shown=str(path))


def _https(parts: SplitResult, shown: str, allow_private: bool) -> Remote:
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"repository URL {shown!r} has an invalid port") from exc
    host = parts.hostname or ""  # lowercased, without IPv6 brackets
    if host.endswith("."):  # one trailing dot is the same name; git is given it without
        host = host[:-1]
    if not host:
        raise InvalidInput(f"repository URL {shown!r} has no host")
    literal = _ip_literal(host)
    if literal is None:
        if not HOSTNAME.match(host):
            raise InvalidInput(
                f"refusing repository {shown!r}: {host!r} is not a host name",
                hint="Use an ASCII host name (xn-- for international names) or a plain IP address.",
            )
        numeric = _legacy_ipv4(host)
        if numeric is not None:
            if not allow_private:
                _refuse_unless_public(shown, host, numeric)
            raise InvalidInput(
                f"refusing repository {shown!r}: write the address {host} as {numeric}",
            )
    addresses = [literal] if literal is not None else _resolve(host, port or 443)
    if not addresses:
        raise InvalidInput(
            f"refusing repository {shown!r}: {host} does not resolve",
            hint="Check the repository's host name (and this machine's DNS).",
        )
    if not allow_private:
        for address in addresses:
            _refuse_unless_public(shown, host, address)
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    pins: tuple[str, ...] = ()
    if literal is None:
        pins = (f"{host}:{port or 443}:{','.join(_pin(a) for a in addresses)}",)
    clean = urlunsplit(("https", netloc, parts.path, parts.query, ""))
    return Remote(
        url=clean,
        shown=clean,
        pins=pins,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address of a host written as inet_aton reads it (``2130706433``, ``0x7f.1``, ``127.1``)."""
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def _pin(address: Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in net for net in (*NAT64, IPV4_COMPATIBLE)):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_public_address(address: Address) -> bool:
    """Is ``address`` globally routable, and so is every IPv4 address it wraps?"""
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        candidates.extend(embedded_ipv4(address))
    for a in candidates:
        if (
            not a.is_global
            or a.is_private
            or a.is_loopback
            or a.is_link_local
            or a.is_multicast
            or a.is_reserved
            or a.is_unspecified
            or (isinstance(a, ipaddress.IPv4Address) and a in SHARED)
        ):
            return False
    return True


def _refuse_unless_public(shown: str, host: str, address: Address) -> None:
    if not is_public_address(address):
        where = host if str(address) == host else f"{host} ({address})"
        raise InvalidInput(
            f"refusing repository {shown!r}: {where} is a loopback, private, shared or metadata address",
            hint="Set BILLOWIN_ALLOW_PRIVATE_REPOSITORIES=true to build from your own network.",
        )


@functools.cache
def git_version(git: str = "git") -> tuple[int, int]:
    try:
        out = subprocess.run([git, "version"], capture_output=True, text=True, check=False, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0, 0)
    match = re.search(r"(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _authorization(token: SecretStr | None, remote: Remote) -> str | None:
    if token is not None:
        user, password = "x-access-token", token.get_secret_value()
    elif remote.username is not None or remote.password is not None:
        user, password = remote.username or "", remote.password or ""
    else:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def git_environment(config: dict[str, str]) -> dict[str, str]:
    """The environment git runs with: no prompts, no system config, ``config`` as GIT_CONFIG_*."""
    env = {k: v for k, v in os.environ.items() if not _GIT_CONFIG_ENV.match(k)}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_COUNT": str(len(config))})
    for i, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


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
    remote = resolve_repository(url, allow_private=allow_private)
    check_sha(sha)
    pins: list[str] = []
    config: dict[str, str] = {}
    header = None
    if remote.url.startswith("https://"):
        version = git_version()
        if version < MIN_GIT:
            raise ServiceError(
                "git",
                f"git {version[0]}.{version[1]} cannot pin the address Billowin checked for "
                f"{remote.shown} (http.curloptResolve needs git 2.37); refusing to fetch it unpinned",
                hint="Install git 2.37 or newer on the Billowin host.",
            )
        for pin in remote.pins:
            pins += ["-c", f"http.curloptResolve={pin}"]
        header = _authorization(token, remote)
        if header is not None:  # in git's environment, never its argv (`ps` shows argv to everyone)
            config["http.extraHeader"] = f"Authorization: {header}"
    # A username long enough to be a token (``https://<token>@host``) is hidden too.
    username = remote.username if remote.username and len(remote.username) >= 8 else None
    secrets = (token.get_secret_value() if token else None, remote.password, username, header)
    env = git_environment(config)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    git_fetch = ["git", *GIT_SAFETY, *pins, "-C", str(dest), "fetch", "--quiet", "--depth", "1"]
    steps = [
        ["git", "init", "--quiet", str(dest)],
        [*git_fetch, "--", remote.url, sha],
        ["git", "-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "--quiet", "FETCH_HEAD"],
    ]
    for argv in steps:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise ServiceError(
                "git", f"fetching {sha[:12]} from {remote.shown} took longer than {timeout:.0f}s"
            ) from exc
        if proc.returncode != 0:
            shutil.rmtree(dest, ignore_errors=True)
            raise ServiceError(
                "git",
                f"cannot fetch {sha[:12]} from {remote.shown}: {redact(proc.stderr.strip(), *secrets)}",
                hint="Check the repository URL, the commit and, for a private repository, its token.",
            )
    return dest
