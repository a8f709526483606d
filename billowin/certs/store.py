"""Certificates, their keys and the ACME account in Consul KV (the ``CertificateStore`` port).

Layout, one tree per certificate id (``billowin.names.certificate_id``)::

    billowin/certs/<id>/meta    JSON: names, status, issuer, serial, not_before, not_after,
                                last_error, hint, failures, next_attempt, updated_at, source,
                                failing_since
    billowin/certs/<id>/chain   PEM, leaf first
    billowin/certs/<id>/key     PEM private key
    billowin/certs/_account     JSON: the ACME directory, account URL, e-mail and private JWK

So the whole HTTPS state is backed up with Consul's snapshot, and every router node reads the
same copy. Chain, key and record are written in one transaction, so a reader never sees a new
chain with an old key. ``get`` and ``all`` read the ``meta`` keys only: listing certificates
never fetches a private key. ``_`` starts no host name, so ``_account`` is never a certificate.

``VaultCertificateStore`` (at the end) keeps the keys and the account in Vault instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from billowin.errors import InvalidInput, ServiceError
from billowin.names import KEY_PART
from billowin.ports import AcmeAccount, CertificateRecord, KeyPair, KeyValueStore, KVWrite, SecretStore

PREFIX = "billowin/certs"
ACCOUNT = f"{PREFIX}/_account"
ACCOUNT_NAME = "_account"  # the Vault secret holding the ACME account, beside billowin-certs/<id>
TIMES = ("not_before", "not_after", "next_attempt", "updated_at", "failing_since")


def _tree(cert_id: str) -> str:
    """``billowin/certs/<id>/`` for an id that is one key part (never ``_account``)."""
    if not isinstance(cert_id, str) or not KEY_PART.fullmatch(cert_id) or not cert_id.strip("."):
        raise InvalidInput(f"{str(cert_id)[:80]!r} is not a certificate id")
    if f"{PREFIX}/{cert_id}" == ACCOUNT:
        raise InvalidInput("_account is the ACME account, not a certificate")
    return f"{PREFIX}/{cert_id}/"


def _meta(cert_id: str) -> str:
    return _tree(cert_id) + "meta"


def encode_record(record: CertificateRecord) -> bytes:
    data: dict[str, Any] = asdict(record)
    data["names"] = list(record.names)
    for name in TIMES:
        value = getattr(record, name)
        data[name] = value.isoformat() if value is not None else None
    return json.dumps(data, sort_keys=True).encode()


def decode_record(raw: bytes) -> CertificateRecord:
    data = json.loads(raw)
    for name in TIMES:
        if data.get(name):
            data[name] = datetime.fromisoformat(data[name])
    data["names"] = tuple(data["names"])
    return CertificateRecord(**data)


def encode_account(account: AcmeAccount) -> dict[str, str]:
    return {
        "directory": account.directory,
        "uri": account.uri,
        "key": account.key_json,
        "email": account.email,
    }


def decode_account(data: dict[str, str]) -> AcmeAccount:
    return AcmeAccount(data["directory"], data["uri"], data["key"], data.get("email", ""))


class ConsulCertificateStore:
    backend = "consul"

    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    def get(self, cert_id: str) -> CertificateRecord | None:
        _, raw = self.kv.kv_get(_meta(cert_id))
        return decode_record(raw) if raw else None

    def all(self) -> list[CertificateRecord]:
        records = []
        for key in self.kv.kv_keys(f"{PREFIX}/"):
            if key.endswith("/meta"):
                _, raw = self.kv.kv_get(key)
                if raw:  # deleted between the two reads
                    records.append(decode_record(raw))
        return sorted(records, key=lambda r: r.id)

    def save(self, record: CertificateRecord, pair: KeyPair | None = None) -> None:
        writes = [KVWrite(_meta(record.id), encode_record(record))]
        if pair is not None:
            writes += [
                KVWrite(_tree(record.id) + "chain", pair.chain_pem.encode()),
                KVWrite(_tree(record.id) + "key", pair.key_pem.encode()),
            ]
        if not self.kv.kv_txn(writes):  # no cas: only a failing Consul refuses it
            raise ServiceError("consul", f"the certificate {record.id} could not be stored")

    def key_pair(self, cert_id: str) -> KeyPair | None:
        tree = _tree(cert_id)
        found = dict(self.kv.kv_list(tree))  # one read: a chain and the key it was stored with
        chain, key = found.get(tree + "chain"), found.get(tree + "key")
        if not chain or not key:
            return None
        return KeyPair(chain.decode(), key.decode())

    def delete(self, cert_id: str) -> None:
        self.kv.kv_delete_tree(_tree(cert_id))

    def account(self) -> AcmeAccount | None:
        _, raw = self.kv.kv_get(ACCOUNT)
        return decode_account(json.loads(raw)) if raw else None

    def save_account(self, account: AcmeAccount) -> None:
        self.kv.kv_put(ACCOUNT, json.dumps(encode_account(account), sort_keys=True).encode())


class VaultCertificateStore(ConsulCertificateStore):
    """The same layout, with every secret in Vault: ``BILLOWIN_CERT_BACKEND=vault`` (the default
    when config vars are in Vault).

    Records and chains (public: every visitor is sent the chain) stay in Consul KV, so each
    router's consul-template still sees a renewal. The private key is a version of the Vault
    secret ``billowin-certs/<id>``, and ``billowin/certs/<id>/key-version`` names that version
    beside its chain, in the same transaction: the key is written to Vault first, so a reader
    never pairs a chain with another key. The ACME account is the Vault secret
    ``billowin-certs/_account``. Consul holds no private key at all.
    """

    backend = "vault"

    def __init__(self, kv: KeyValueStore, secrets: SecretStore) -> None:
        super().__init__(kv)
        self.secrets = secrets

    def save(self, record: CertificateRecord, pair: KeyPair | None = None) -> None:
        writes = [KVWrite(_meta(record.id), encode_record(record))]
        if pair is not None:
            version = self.secrets.put(record.id, {"key": pair.key_pem})
            writes += [
                KVWrite(_tree(record.id) + "chain", pair.chain_pem.encode()),
                KVWrite(_tree(record.id) + "key-version", str(version).encode()),
            ]
        if not self.kv.kv_txn(writes):
            raise ServiceError("consul", f"the certificate {record.id} could not be stored")

    def key_pair(self, cert_id: str) -> KeyPair | None:
        tree = _tree(cert_id)
        found = dict(self.kv.kv_list(tree))
        chain, version = found.get(tree + "chain"), found.get(tree + "key-version")
        if not chain or not version or not version.isdigit():
            return None
        secret = self.secrets.get(cert_id, int(version))
        if not secret or not secret.get("key"):
            return None
        return KeyPair(chain.decode(), secret["key"])

    def delete(self, cert_id: str) -> None:
        super().delete(cert_id)
        self.secrets.delete(cert_id)

    def account(self) -> AcmeAccount | None:
        data = self.secrets.get(ACCOUNT_NAME)
        return decode_account(data) if data else None

    def save_account(self, account: AcmeAccount) -> None:
        self.secrets.put(ACCOUNT_NAME, encode_account(account))
