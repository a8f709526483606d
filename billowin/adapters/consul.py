"""Consul, through py-consul: KV, sessions, health of the agent, where healthy instances are,
and force-leave for a node taken out of the cluster.

Every key and prefix is checked (``check_key``), and every node name (``check_node_ref``),
before it becomes part of a URL:
py-consul puts it in the path as it is, and ``..`` there would reach other
endpoints (``billowin/deliveries/../../../agent/leave`` is ``PUT /v1/agent/leave``).

The HTTP session reads the environment (proxies, CA bundle, ``.netrc``) once, when
the adapter is made, not on every call: requests' per-call look-up (every
environment variable scanned, ``~/.netrc`` looked for) was about a fifth of the
client's CPU for each KV call (0.1 ms of 0.5 ms).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import consul
import requests
import requests.adapters
import requests.utils

from billowin.errors import InvalidInput, NotFound, ServiceError, Unreachable
from billowin.names import check_key, check_node_ref
from billowin.ports import ComponentHealth, Instance, KVEntry, KVWrite
from billowin.settings import Settings

SYSTEM = "consul"
POOL_SIZE = 64
# Operations per transaction: Consul 1.14 (what Billowin installs) takes 128, older releases 64.
MAX_TXN_OPS = 64


def _txn_op(write: KVWrite) -> dict[str, Any]:
    check_key(write.key)
    if not isinstance(write.value, bytes):
        raise TypeError(f"KV values are bytes, not {type(write.value).__name__}")
    op: dict[str, Any] = {"Verb": "set", "Key": write.key, "Value": base64.b64encode(write.value).decode()}
    if write.cas is not None:
        op.update(Verb="cas", Index=write.cas)
    return {"KV": op}


def _stale_only(exc: consul.ConsulException) -> bool:
    """Whether a refused transaction failed only on check-and-set (HTTP 409, "index is stale")."""
    code, _, body = str(exc).partition(" ")
    if code != "409":
        return False
    try:
        errors = json.loads(body).get("Errors") or []
    except (ValueError, AttributeError):
        return False
    return bool(errors) and all("index is stale" in str(e.get("What", "")) for e in errors)


def _environment_once(http: Any) -> None:
    """What requests would read from the environment on every call, read now, and then not
    again (``trust_env`` off): the proxy for Consul's address (``HTTPS_PROXY``, ``NO_PROXY``…),
    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` when certificates are verified against the
    default bundle, and ``.netrc`` credentials for Consul's host."""
    session: requests.Session = http.session
    url = http.base_uri
    session.proxies.update(requests.utils.get_environ_proxies(url))
    if http.verify is True:
        http.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    if session.auth is None:
        session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False


class ConsulRegistry:
    """The ``Coordinator`` (KV, sessions) and ``ServiceRegistry`` ports on a real Consul agent."""

    def __init__(self, settings: Settings) -> None:
        scheme, host, port = settings.hostport("consul")
        self._address = settings.consul_addr
        token = settings.consul_token.get_secret_value() if settings.consul_token else None
        self._client = consul.Consul(host=host, port=port, scheme=scheme, token=token)
        # The API's thread pool calls Consul from many threads at once (webhooks, workers,
        # blocking queries): keep that many connections alive instead of reconnecting.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        self._client.http.session.mount("http://", adapter)
        self._client.http.session.mount("https://", adapter)
        if token:
            # py-consul leaves the token off some calls (``txn.put``, ``agent.self``); on the
            # session, every request carries it, and with ACLs on none goes out anonymous.
            self._client.http.session.headers["X-Consul-Token"] = token
        _environment_once(self._client.http)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except requests.RequestException as exc:
            raise Unreachable(SYSTEM, self._address) from exc
        except consul.ConsulException as exc:
            if "no node found" in str(exc).lower():  # force-leave of a name that is no member
                raise NotFound(f"Consul has no {what}") from exc
            raise ServiceError(SYSTEM, f"{what} failed: {exc}") from exc

    # -- KV: Billowin's own small records ----------------------------------
    def kv_get(self, key: str) -> tuple[int, bytes | None]:
        """``(modify_index, value)``; ``(0, None)`` when the key does not exist."""
        check_key(key)
        _, entry = self._call(f"read of {key}", self._client.kv.get, key)
        if entry is None:
            return 0, None
        return int(entry["ModifyIndex"]), entry["Value"]

    def kv_put(self, key: str, value: bytes, *, cas: int | None = None) -> bool:
        """Write ``value``; with ``cas`` only if the key's modify index is still ``cas`` (0: absent)."""
        check_key(key)
        ok: bool = self._call(f"write of {key}", self._client.kv.put, key, value, cas=cas)
        return ok

    def kv_list(self, prefix: str) -> list[tuple[str, bytes]]:
        check_key(prefix, prefix=True, root=True)
        _, entries = self._call(f"read of {prefix}", self._client.kv.get, prefix, recurse=True)
        return [(e["Key"], e["Value"] or b"") for e in entries or []]

    def kv_entries(self, prefix: str) -> list[KVEntry]:
        check_key(prefix, prefix=True, root=True)
        _, entries = self._call(f"read of {prefix}", self._client.kv.get, prefix, recurse=True)
        return [KVEntry(e["Key"], int(e.get("ModifyIndex") or 0), e["Value"] or b"") for e in entries or []]

    def kv_keys(self, prefix: str) -> list[str]:
        check_key(prefix, prefix=True, root=True)
        _, keys = self._call(f"keys under {prefix}", self._client.kv.get, prefix, keys=True)
        return list(keys or [])

    def kv_list_wait(self, prefix: str, index: int | None, wait: str = "30s") -> tuple[int, list[KVEntry]]:
        """Block until something under ``prefix`` changes after ``index`` (or ``wait`` passes; at
        once for ``None``); the new index and every entry under ``prefix``, read together."""
        check_key(prefix, prefix=True, root=True)
        new_index, entries = self._call(
            f"watch of {prefix}", self._client.kv.get, prefix, index=index, wait=wait, recurse=True
        )
        found = [KVEntry(e["Key"], int(e.get("ModifyIndex") or 0), e["Value"] or b"") for e in entries or []]
        return int(new_index or 0), found

    def kv_wait(self, prefix: str, index: int | None, wait: str = "30s") -> int:
        """Block until something under ``prefix`` changes (or ``wait`` passes); returns the new index."""
        check_key(prefix, prefix=True, root=True)
        new_index, _ = self._call(
            f"watch of {prefix}", self._client.kv.get, prefix, index=index, wait=wait, keys=True
        )
        return int(new_index or 0)

    # -- sessions: locks that die with their holder ------------------------
    def session_create(self, name: str, ttl: int = 15) -> str:
        session: str = self._call(
            "session", self._client.session.create, name=name, ttl=ttl, behavior="delete", lock_delay=0
        )
        return session

    def session_renew(self, session: str) -> bool:
        try:
            return self._call("session renew", self._client.session.renew, session) is not None
        except ServiceError:
            return False

    def session_destroy(self, session: str) -> None:
        self._call("session", self._client.session.destroy, session)

    def kv_acquire(self, key: str, session: str, value: bytes = b"") -> bool:
        check_key(key)
        ok: bool = self._call(f"lock {key}", self._client.kv.put, key, value, acquire=session)
        return ok

    def kv_release(self, key: str, session: str) -> None:
        check_key(key)
        self._call(f"unlock {key}", self._client.kv.put, key, b"", release=session)

    def kv_delete_tree(self, prefix: str) -> None:
        check_key(prefix, prefix=True)  # never the empty prefix: that would delete everything
        self._call(f"delete of {prefix}", self._client.kv.delete, prefix, recurse=True)

    def kv_txn(self, writes: Sequence[KVWrite]) -> bool:
        """Every write or none, in one ``PUT /v1/txn``; False (nothing written) when a ``cas`` fails."""
        if len(writes) > MAX_TXN_OPS:
            raise InvalidInput(
                f"a transaction of {len(writes)} writes is over Consul's limit of {MAX_TXN_OPS}",
                hint="Fewer apps per repository and branch, or split the change.",
            )
        ops = [_txn_op(w) for w in writes]  # every key checked before anything is sent
        if not ops:
            return True
        ok: bool = self._call("transaction", self._txn, ops)
        return ok

    def _txn(self, ops: list[dict[str, Any]]) -> bool:
        try:
            self._client.txn.put(ops)
        except consul.ConsulException as exc:
            if _stale_only(exc):
                return False
            raise
        return True

    # -- members: the gossip pool ------------------------------------------
    def force_leave(self, node: str, *, prune: bool = True) -> None:
        """``consul force-leave [-prune] <node>``: Consul 1.14 takes ``?prune`` (since 1.13)."""
        check_node_ref(node)  # py-consul puts it in the path as it is
        self._call(f"member {node}", self._client.agent.force_leave, node, prune=prune)

    def health(self) -> ComponentHealth:
        try:
            info = self._call("agent info", self._client.agent.self)
        except ServiceError as exc:
            return ComponentHealth(SYSTEM, False, address=self._address, error=exc.message)
        return ComponentHealth(SYSTEM, True, version=info["Config"]["Version"], address=self._address)

    @staticmethod
    def _instances(service: str, entries: list[dict[str, Any]]) -> list[Instance]:
        out = []
        for entry in entries:
            svc = entry["Service"]
            out.append(
                Instance(
                    service=service,
                    address=svc.get("Address") or entry["Node"]["Address"],
                    port=int(svc["Port"]),
                    tags=tuple(svc.get("Tags") or ()),
                    node=entry["Node"]["Node"],
                )
            )
        return out

    def health_checks(self) -> list[dict[str, Any]]:
        _, checks = self._call("health checks", self._client.health.state, "any")
        return list(checks or [])

    def healthy_instances(self, service: str) -> list[Instance]:
        _, entries = self._call(f"health of {service}", self._client.health.service, service, passing=True)
        return self._instances(service, entries)

    def wait_for_healthy(self, service: str, *, count: int = 1, timeout: float = 60) -> list[Instance]:
        """Block (Consul blocking queries) until ``count`` instances pass their checks.

        Returns what is healthy at the deadline, which may be fewer.
        """
        deadline = time.monotonic() + timeout
        index: str | None = None
        instances: list[Instance] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return instances
            wait = f"{max(1, int(min(remaining, 30)))}s"
            new_index, entries = self._call(
                f"health of {service}",
                self._client.health.service,
                service,
                passing=True,
                index=index,
                wait=wait,
            )
            # An index that goes backwards means Consul restarted: start over.
            index = new_index if index is None or int(new_index) >= int(index) else None
            instances = self._instances(service, entries)
            if len(instances) >= count:
                return instances
