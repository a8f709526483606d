"""What a node needs to join a cluster, and the cluster registry's TLS and credentials.

The first server of a cluster makes every secret (as a single production box does,
:mod:`billowin.stack.acl`); a node that joins gets a copy of the ones it needs, the **join
secrets**, and nothing else:

=========================  ================================================================
``consul-gossip.key``      Consul's gossip encryption key (every agent)
``nomad-gossip.key``       Nomad's (servers only: Nomad clients do not gossip)
``consul-agent``           the Consul agent's token (registers its node)
``consul-nomad``           Nomad's Consul token (registers apps' services)
``consul-router``          the router's Consul token (reads services, certificates)
``consul-dns``             the agent's default token, which Consul's DNS answers with
``nomad-router``           the router's Nomad token (read only)
``registry-ca.pem``        the CA the registry's certificate is signed by (every engine trusts it)
``registry-password``      the registry's password (Nomad pulls with it, Billowin pushes with it)
``consul-bootstrap``       servers only: each server's configuration names it, as whichever
                           server is elected first makes it
=========================  ================================================================

Nomad's bootstrap token and the API's tokens never leave the first server. Rotating a
secret: make a new one on the first server (``billowin install`` makes what is missing,
so delete the token file there and run it again), hand the join secrets to each node again
(``billowin install --join`` on it), and restart the agents that use it.

The registry is HTTPS with a CA of its own (made here, ten years) and a certificate for its
address, and asks for basic auth (an htpasswd file of one bcrypt hash, as the registry
reads no other kind). Each node's Docker Engine trusts the CA through
``/etc/docker/certs.d/<registry>/ca.crt``, the place Docker reads for each registry.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets as pysecrets
import shutil
from pathlib import Path
from typing import Any

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from billowin.errors import ConfigError
from billowin.stack.acl import Secrets
from billowin.stack.process import write_private

REGISTRY_USER = "billowin"
DOCKER_CERTS_DIR = Path("/etc/docker/certs.d")
CLIENT_SECRETS = (
    "consul-gossip.key",
    "consul-agent.token",
    "consul-nomad.token",
    "consul-router.token",
    "consul-dns.token",
    "nomad-router.token",
    "registry-ca.pem",
    "registry-password.token",
)
# Each server's configuration names Consul's bootstrap token: whichever server is elected first
# makes it.
SERVER_SECRETS = (*CLIENT_SECRETS, "nomad-gossip.key", "consul-bootstrap.token")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def ensure_registry_tls(secrets: Secrets, host: str) -> None:
    """The registry's CA (once) and a certificate for ``host`` (an address or a DNS name)."""
    ca_key_path, ca_path = secrets.dir / "registry-ca.key", secrets.dir / "registry-ca.pem"
    now = datetime.datetime.now(datetime.UTC)
    if not (ca_key_path.is_file() and ca_path.is_file()):
        key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("billowin registry CA"))
            .issuer_name(_name("billowin registry CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        write_private(ca_key_path, _pem_key(key))
        write_private(ca_path, ca.public_bytes(serialization.Encoding.PEM).decode())
    cert_path = secrets.dir / "registry.pem"
    if cert_path.is_file() and _covers(cert_path, host):
        return
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([_san(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write_private(secrets.dir / "registry-key.pem", _pem_key(key))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _covers(cert_path: Path, host: str) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return _san(host) in list(names)


def ensure_registry_password(secrets: Secrets) -> str:
    """The registry's password (made once) and its htpasswd file for the registry."""
    password = secrets.get("registry-password")
    if password is None:
        password = pysecrets.token_urlsafe(24)
        secrets.put("registry-password", password)
    htpasswd = secrets.dir / "registry.htpasswd"
    line = htpasswd.read_text().strip() if htpasswd.is_file() else ""
    user, _, hashed = line.partition(":")
    if user != REGISTRY_USER or not hashed or not bcrypt.checkpw(password.encode(), hashed.encode()):
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
        write_private(htpasswd, f"{REGISTRY_USER}:{hashed}\n")
    return password


def trust_registry(ca_file: Path, registry: str, certs_dir: Path = DOCKER_CERTS_DIR) -> Path:
    """Make this machine's Docker Engines trust the registry's CA; the file written."""
    target = certs_dir / registry / "ca.crt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_file, target)
    target.chmod(0o644)
    return target


def distrust_registry(registry: str, certs_dir: Path = DOCKER_CERTS_DIR) -> None:
    shutil.rmtree(certs_dir / registry, ignore_errors=True)


def write_join_secrets(source: Secrets, facts: dict[str, Any], path: Path, *, server: bool) -> list[str]:
    """The join secrets of a server (``server``) or of a client, and the cluster's facts (its
    domain, servers, registry and API addresses), as one JSON file readable by its owner only:
    copy it to the new node (``scp``), give it to ``billowin install --join``, delete it."""
    names = SERVER_SECRETS if server else CLIENT_SECRETS
    found = {name: (source.dir / name).read_text() for name in names if (source.dir / name).is_file()}
    missing = [name for name in names if name not in found]
    if missing:
        raise ConfigError(
            f"{source.dir} lacks {', '.join(missing)}",
            hint="Run `billowin join-secrets` on the cluster's first server, once it is installed.",
        )
    write_private(path, json.dumps({"version": 1, "server": server, "cluster": facts, "secrets": found}))
    return sorted(found)


def read_join_secrets(path: Path, target: Secrets) -> dict[str, Any]:
    """Put the join secrets of ``path`` under ``target``; the cluster's facts, and ``server``."""
    data = _join_file(path)
    secrets: dict[str, str] = data["secrets"]
    facts: dict[str, Any] = data["cluster"]
    server = bool(data["server"])
    allowed = set(SERVER_SECRETS if server else CLIENT_SECRETS)
    for name, text in secrets.items():
        if name not in allowed:  # a file name from elsewhere never becomes a path here
            raise ConfigError(f"{path} holds {name!r}, which is not a join secret")
        write_private(target.dir / name, text)
    target.dir.chmod(0o700)
    return {**facts, "server": server}


def join_facts(path: Path) -> dict[str, Any]:
    """The cluster's facts in a join-secrets file (its domain, servers…), without its secrets."""
    facts: dict[str, Any] = _join_file(path)["cluster"]
    return facts


def _join_file(path: Path) -> dict[str, Any]:
    """The file ``write_join_secrets`` wrote, with its three parts, or a clear error."""
    try:
        data = json.loads(path.read_text())
        if not (isinstance(data["secrets"], dict) and isinstance(data["cluster"], dict)):
            raise TypeError("its secrets and cluster are not objects")
        data["server"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a file of join secrets: {exc}",
            hint="Make it on the cluster's first server with `billowin join-secrets FILE`.",
        ) from exc
    return dict(data)
