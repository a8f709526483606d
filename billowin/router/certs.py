"""The router's certificates on disk: what HAProxy's ``bind … ssl crt-list`` reads.

consul-template cannot write one file per certificate, so the reload step
(``billowin/router/reload.py``) calls ``sync`` before it checks each render. ``sync`` reads the
certificate store (Consul KV, ``billowin/certs/``) and writes, under the router's
``certs/`` directory (0700)::

    default.pem        a self-signed certificate, made once: HAProxy starts, and answers a
                       name with no certificate, before any certificate exists
    <id>.pem           chain + key of every stored certificate that has not expired (0600)
    crt-list           one line per ``<id>.pem`` with the names it is stored for as SNI filters;
                       HAProxy picks one by SNI
    https-hosts.map    every name a certificate covers (a wildcard as ``*.<domain>``): the
                       hosts whose plain HTTP is redirected to HTTPS

A failed renewal keeps the previous chain and key in the store, so the old certificate is
served until it expires. Files are replaced atomically and only when their bytes change;
``sync`` says whether anything did, and the reload step then reloads HAProxy hitlessly
(master-worker, listeners passed over), so a new or renewed certificate goes live without
dropping a connection. Nothing here logs a key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from billowin.ports import CertificateStore

DEFAULT = "default.pem"
CRT_LIST = "crt-list"
HTTPS_HOSTS = "https-hosts.map"
# An app whose owner switched the redirect off has a key here; the template reads it.
NO_REDIRECT_PREFIX = "billowin/router/no-redirect"


@dataclass(frozen=True)
class Served:
    """One certificate as the router serves it."""

    cert_id: str
    names: tuple[str, ...]
    pem: bytes  # chain, then key


def self_signed_pem(common_name: str = "billowin default certificate") -> bytes:
    """A self-signed ECDSA certificate and its key, for a name nobody asked for."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def served_certificates(store: CertificateStore, now: datetime) -> list[Served]:
    """Every stored certificate with a chain and key that has not expired, in id order."""
    out = []
    for record in store.all():
        if record.not_after is None or record.not_after <= now:
            continue
        pair = store.key_pair(record.id)
        if pair is None:
            continue
        try:
            leaf = x509.load_pem_x509_certificates(pair.chain_pem.encode())[0]
        except ValueError:
            continue
        if leaf.not_valid_after_utc <= now:
            continue
        chain = pair.chain_pem.rstrip("\n") + "\n"
        out.append(Served(record.id, record.names, (chain + pair.key_pem.rstrip("\n") + "\n").encode()))
    return out


def _write(path: Path, data: bytes, mode: int) -> bool:
    """Replace ``path`` atomically with ``data`` (file mode ``mode``); whether it changed."""
    with contextlib.suppress(OSError):
        if path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
            return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def _lines(values: Iterable[str]) -> bytes:
    return "".join(f"{v}\n" for v in values).encode()


def sync(directory: Path, certificates: list[Served]) -> bool:
    """Write what HAProxy reads for HTTPS into ``directory``; whether any file changed."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    changed = False
    default = directory / DEFAULT
    if not default.is_file():
        changed |= _write(default, self_signed_pem(), 0o600)
    keep = {DEFAULT, CRT_LIST, HTTPS_HOSTS}
    for cert in certificates:
        name = f"{cert.cert_id}.pem"
        keep.add(name)
        changed |= _write(directory / name, cert.pem, 0o600)
    hosts: dict[str, None] = {}
    for cert in certificates:
        for n in cert.names:
            hosts[n] = None
    # crt-list and maps first name the new files, and are written after them. Each line's SNI
    # filters are the names the certificate is stored for, not whatever else it covers: a
    # certificate one app's owner uploads never answers for another app's name.
    lines = (f"{directory / f'{c.cert_id}.pem'} {' '.join(c.names)}" for c in certificates)
    changed |= _write(directory / CRT_LIST, _lines(lines), 0o600)
    changed |= _write(directory / HTTPS_HOSTS, _lines(f"{h} 1" for h in hosts), 0o644)
    for path in directory.iterdir():
        if path.name not in keep and path.suffix == ".pem":
            path.unlink(missing_ok=True)
            changed = True
    return changed
