"""Downloads for runtime providers: one HTTP client, checksums checked before anything is
unpacked, offer lists cached on disk.

Every failure to reach a server becomes ``Unreachable`` here, once: ``auto`` mode moves on to
the next provider on it. A checksum that does not match is ``BuildFailed``: never a fallback,
since it means the archive is not what its publisher signed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from billowin.errors import BillowinError, BuildFailed

OFFER_TTL = 3600.0  # seconds an offer list is fresh; a stale one is used when the server is down
CONNECT_TIMEOUT = 5.0
_DOWN: dict[str, float] = {}  # host -> until when it is taken as unreachable (this process)
DOWN_FOR = 600.0


class Unreachable(BillowinError):
    """A runtime provider's server did not answer (no route, refused, timed out, or 5xx)."""


def _host(url: str) -> str:
    return httpx.URL(url).host


def _client() -> httpx.Client:
    ca = os.environ.get("SSL_CERT_FILE")  # a TLS-inspecting proxy's CA, as pip and npm take it
    return httpx.Client(
        timeout=httpx.Timeout(120.0, connect=CONNECT_TIMEOUT),
        follow_redirects=True,
        verify=ssl.create_default_context(cafile=ca) if ca else True,
        headers={"User-Agent": "billowin-runtimes"},
    )


def get_json(url: str, *, headers: dict[str, str] | None = None) -> Any:
    return json.loads(get_bytes(url, headers=headers))


def get_bytes(url: str, *, headers: dict[str, str] | None = None) -> bytes:
    host = _host(url)
    if _DOWN.get(host, 0.0) > time.monotonic():
        raise Unreachable(f"{host} did not answer a moment ago")
    try:
        with _client() as client:
            resp = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        _DOWN[host] = time.monotonic() + DOWN_FOR
        raise Unreachable(f"{host} is unreachable: {exc}") from exc
    if resp.status_code >= 500:
        _DOWN[host] = time.monotonic() + DOWN_FOR
        raise Unreachable(f"{url} answered HTTP {resp.status_code}")
    if resp.status_code != 200:
        raise Unreachable(f"{url} answered HTTP {resp.status_code}")
    return resp.content


def cached_offer(cache: Path, name: str, load: Any) -> Any:
    """``load()``'s answer, kept in ``cache/<name>.json`` for ``OFFER_TTL``; when the server is
    down, the last answer however old (offers only grow; an install then fails plainly). A
    server that did not answer is not asked again for ``DOWN_FOR``, by any process."""
    path = cache / f"{name}.json"
    down = cache / f"{name}.down"  # when the server last failed: each build is its own process
    with contextlib.suppress(OSError, ValueError):
        if time.time() - path.stat().st_mtime < OFFER_TTL:
            return json.loads(path.read_text())
    try:
        with contextlib.suppress(OSError):
            if time.time() - down.stat().st_mtime < DOWN_FOR:
                raise Unreachable(
                    f"{down.read_text().strip()} (asked again after {DOWN_FOR / 60:.0f} minutes)"
                )
        value = load()
    except Unreachable as exc:
        if not down.is_file() or time.time() - down.stat().st_mtime >= DOWN_FOR:
            cache.mkdir(parents=True, exist_ok=True)
            down.write_text(exc.message)
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
        raise
    down.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
    return value


def download(url: str, dest: Path, *, sha256: str | None = None, sri: str | None = None) -> Path:
    """``url`` into ``dest`` (atomically), checked against a hex SHA-256 or an npm-style
    ``sha512-<base64>`` integrity string; a file already there with the right sum is kept."""
    if dest.is_file() and _matches(dest.read_bytes(), sha256, sri):
        return dest
    data = get_bytes(url)
    if not _matches(data, sha256, sri):
        raise BuildFailed(
            f"{url} does not match its published checksum; nothing was installed from it",
            hint="Try again later; if it persists, the mirror serves a corrupted or altered file.",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


def _matches(data: bytes, sha256: str | None, sri: str | None) -> bool:
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        return False
    if sri is not None:
        algorithm, _, digest = sri.partition("-")
        if algorithm not in ("sha512", "sha256", "sha384"):
            return False
        if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != digest:
            return False
    return sha256 is not None or sri is not None
