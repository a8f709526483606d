"""In-memory stand-ins for the real systems, with the semantics the code relies on.

- ``InMemoryKV``: the ``Coordinator`` port (Consul KV + sessions) with a raft-like
  global index, per-key create/modify indexes, real check-and-set, all-or-nothing
  transactions, blocking waits that really block, session locks with
  ``behavior = delete``, and the same key check as the adapter (``billowin.names.check_key``).
- ``FakeScheduler``: the parts of the ``Scheduler`` port (Nomad) the platform uses:
  jobs with task groups, scale, restart, stop, and allocations a test sets; client nodes
  (``add_node``) that drain (one allocation told to stop, or gone, per look with
  ``drain_progress``), become eligible again and are purged.
- ``FakeMembers``: the ``ClusterMembers`` port (Consul's gossip pool): force-leave, or a failure.
- ``InMemoryConfig``: the ``ConfigStore`` port: numbered, immutable versions per app.
- ``RecordingStatuses``: the ``CommitStatuses`` port, remembering every report.
- ``FakeBuilder`` and ``FakeDeployer``: what the pipeline's worker calls on a builder
  and a deployer, recording their arguments; the deployer keeps real release records.
- ``FakeAuthority``: the ``CertificateAuthority`` port (an ACME CA): it presents challenges to
  the real solvers, then signs real certificates with a CA of its own, or fails as told.

Nothing here talks to a network or imports ``billowin.adapters``.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from billowin.build.builder import BuildRecord
from billowin.config.vars import validate_app, validate_values
from billowin.errors import AccountUnknown, BillowinError, Conflict, InvalidInput, NotFound, ServiceError
from billowin.names import check_key, check_node_ref
from billowin.ports import AcmeAccount, ComponentHealth, DeployResult, KVEntry, KVWrite, PendingChallenge
from billowin.release.jobspec import Process
from billowin.release.store import Release, ReleaseStatus, ReleaseStore

DURATION = re.compile(r"^(?P<n>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m|h)$")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wait(wait: str) -> float:
    """A Consul ``wait`` duration (``"500ms"``, ``"5s"``, ``"1m"``) in seconds."""
    match = DURATION.fullmatch(wait)
    if match is None:
        raise ValueError(f"not a Consul wait duration: {wait!r}")
    return float(match["n"]) * UNITS[match["unit"]]


# -- Consul: KV and sessions ---------------------------------------------------------------
MAX_TXN_OPS = 64


@dataclass
class _Entry:
    value: bytes
    create_index: int
    modify_index: int
    lock_index: int = 0
    session: str | None = None


@dataclass
class _Session:
    name: str
    ttl: int
    held: set[str] = field(default_factory=set)
    renewals: int = 0


class InMemoryKV:
    """The ``Coordinator`` port in memory, thread-safe behind one lock.

    Every write (put, acquire, release, delete) advances one global index and
    stamps it on the key as its ModifyIndex (CreateIndex when it is new), like
    Consul's raft index. ``max_wait`` caps every blocking wait, to keep tests fast.
    ``between_read_and_write`` (if set) runs after each ``kv_get`` returns, outside
    the lock: tests use it to force other threads in between a read and its cas write.
    """

    def __init__(
        self,
        *,
        max_wait: float | None = None,
        between_read_and_write: Callable[[], None] | None = None,
    ) -> None:
        self.max_wait = max_wait
        self.between_read_and_write = between_read_and_write
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._index = 1  # Consul's indexes start above 0
        self._entries: dict[str, _Entry] = {}
        self._deleted: dict[str, int] = {}  # tombstones: key -> index of its deletion
        self._sessions: dict[str, _Session] = {}
        self.waits = 0  # how many kv_wait calls blocked (tests check nothing busy-polls)

    # -- helpers for tests -----------------------------------------------------------------
    @property
    def index(self) -> int:
        with self._lock:
            return self._index

    def entry(self, key: str) -> dict[str, Any] | None:
        """The key's metadata as Consul shows it (``CreateIndex``, ``ModifyIndex``, ``Session``…)."""
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                return None
            return {
                "Key": key,
                "Value": e.value,
                "CreateIndex": e.create_index,
                "ModifyIndex": e.modify_index,
                "LockIndex": e.lock_index,
                "Session": e.session,
            }

    def holder(self, key: str) -> str | None:
        """The session holding the lock ``key``, if any."""
        with self._lock:
            e = self._entries.get(key)
            return e.session if e else None

    def live_sessions(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def renewals(self, session: str) -> int:
        with self._lock:
            s = self._sessions.get(session)
            return s.renewals if s else 0

    def expire(self, session: str) -> None:
        """Simulate the session's TTL lapsing: the same as destroying it."""
        self.session_destroy(session)

    # -- internals (call with the lock held) ---------------------------------------------------
    def _bump(self) -> int:
        self._index += 1
        self._changed.notify_all()
        return self._index

    def _delete_keys(self, keys: list[str]) -> None:
        if not keys:
            return
        index = self._bump()
        for key in keys:
            entry = self._entries.pop(key)
            if entry.session is not None and entry.session in self._sessions:
                self._sessions[entry.session].held.discard(key)
            self._deleted[key] = index

    def _prefix_index(self, prefix: str) -> int:
        """The index of the last change under ``prefix`` (writes and deletions)."""
        found = [e.modify_index for k, e in self._entries.items() if k.startswith(prefix)]
        found += [i for k, i in self._deleted.items() if k.startswith(prefix)]
        return max(found, default=0)

    def _under(self, prefix: str) -> list[tuple[str, _Entry]]:
        return sorted((k, e) for k, e in self._entries.items() if k.startswith(prefix))

    # -- KeyValueStore -------------------------------------------------------------------
    def kv_get(self, key: str) -> tuple[int, bytes | None]:
        check_key(key)
        with self._lock:
            entry = self._entries.get(key)
            found = (0, None) if entry is None else (entry.modify_index, entry.value)
        if self.between_read_and_write is not None:
            self.between_read_and_write()
        return found

    def kv_put(self, key: str, value: bytes, *, cas: int | None = None) -> bool:
        if not isinstance(value, bytes):
            raise TypeError(f"KV values are bytes, not {type(value).__name__}")
        check_key(key)
        with self._lock:
            entry = self._entries.get(key)
            if cas is not None:
                if cas == 0 and entry is not None:
                    return False
                if cas != 0 and (entry is None or entry.modify_index != cas):
                    return False
            index = self._bump()
            if entry is None:
                self._entries[key] = _Entry(value, create_index=index, modify_index=index)
            else:
                entry.value = value
                entry.modify_index = index
            self._deleted.pop(key, None)
            return True

    def kv_list(self, prefix: str) -> list[tuple[str, bytes]]:
        check_key(prefix, prefix=True, root=True)
        with self._lock:
            return [(k, e.value) for k, e in self._under(prefix)]

    def kv_entries(self, prefix: str) -> list[KVEntry]:
        check_key(prefix, prefix=True, root=True)
        with self._lock:
            return [KVEntry(k, e.modify_index, e.value) for k, e in self._under(prefix)]

    def kv_keys(self, prefix: str) -> list[str]:
        check_key(prefix, prefix=True, root=True)
        with self._lock:
            return [k for k, _ in self._under(prefix)]

    def kv_wait(self, prefix: str, index: int | None, wait: str = "30s") -> int:
        """Block until something under ``prefix`` changes after ``index``, or ``wait`` passes.

        ``index=None`` (or 0) answers at once, as Consul does for a first query.
        """
        return self.kv_list_wait(prefix, index, wait)[0]

    def kv_list_wait(self, prefix: str, index: int | None, wait: str = "30s") -> tuple[int, list[KVEntry]]:
        """``kv_wait``, then every entry under ``prefix``, read under the same lock as the index."""
        check_key(prefix, prefix=True, root=True)
        timeout = parse_wait(wait)
        if self.max_wait is not None:
            timeout = min(timeout, self.max_wait)
        with self._changed:
            if index:
                self.waits += 1
                deadline = time.monotonic() + timeout
                while self._prefix_index(prefix) <= index:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
            return self._index, [KVEntry(k, e.modify_index, e.value) for k, e in self._under(prefix)]

    def kv_delete_tree(self, prefix: str) -> None:
        check_key(prefix, prefix=True)
        with self._lock:
            self._delete_keys([k for k, _ in self._under(prefix)])

    def kv_txn(self, writes: Sequence[KVWrite]) -> bool:
        """All writes or none, at one index (as Consul applies a transaction in one raft entry).

        Each ``cas`` is checked against the store as the earlier writes of the same
        transaction left it; one that fails writes nothing and answers False.
        """
        if len(writes) > MAX_TXN_OPS:
            raise InvalidInput(f"a transaction of {len(writes)} writes is over Consul's {MAX_TXN_OPS}")
        for write in writes:
            check_key(write.key)
            if not isinstance(write.value, bytes):
                raise TypeError(f"KV values are bytes, not {type(write.value).__name__}")
        if not writes:
            return True
        with self._lock:
            upcoming = self._index + 1  # the index every write of this transaction gets
            seen: dict[str, int] = {}  # key -> its modify index as this transaction sees it (0: absent)
            for write in writes:
                entry = self._entries.get(write.key)
                current = seen.get(write.key, entry.modify_index if entry is not None else 0)
                if write.cas is not None and write.cas != current:
                    return False
                seen[write.key] = upcoming
            index = self._bump()
            for write in writes:
                entry = self._entries.get(write.key)
                if entry is None:
                    self._entries[write.key] = _Entry(write.value, create_index=index, modify_index=index)
                else:
                    entry.value = write.value
                    entry.modify_index = index
                self._deleted.pop(write.key, None)
            return True

    # -- Sessions ----------------------------------------------------------------------------
    def session_create(self, name: str, ttl: int = 15) -> str:
        session = str(uuid.uuid4())
        with self._lock:
            self._sessions[session] = _Session(name, ttl)
        return session

    def session_renew(self, session: str) -> bool:
        with self._lock:
            found = self._sessions.get(session)
            if found is None:
                return False
            found.renewals += 1
            return True

    def session_destroy(self, session: str) -> None:
        """End the session; the keys it held are deleted (``behavior = delete``)."""
        with self._lock:
            found = self._sessions.pop(session, None)
            if found is None:
                return  # Consul answers true for an unknown session too
            self._delete_keys(sorted(k for k in found.held if k in self._entries))

    def kv_acquire(self, key: str, session: str, value: bytes = b"") -> bool:
        if not isinstance(value, bytes):
            raise TypeError(f"KV values are bytes, not {type(value).__name__}")
        check_key(key)
        with self._lock:
            holder = self._sessions.get(session)
            if holder is None:
                # Consul answers 500 "invalid session"; the adapter turns that into ServiceError.
                raise ServiceError("consul", f"lock {key} failed: invalid session {session!r}")
            entry = self._entries.get(key)
            if entry is not None and entry.session not in (None, session):
                return False
            index = self._bump()
            if entry is None:
                entry = self._entries[key] = _Entry(value, create_index=index, modify_index=index)
            entry.value = value
            entry.modify_index = index
            if entry.session is None:
                entry.lock_index += 1
                entry.session = session
            holder.held.add(key)
            self._deleted.pop(key, None)
            return True

    def kv_release(self, key: str, session: str) -> None:
        check_key(key)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.session != session:
                return  # Consul answers false: nothing changes
            entry.session = None
            entry.value = b""
            entry.modify_index = self._bump()
            if session in self._sessions:
                self._sessions[session].held.discard(key)


# -- Nomad ----------------------------------------------------------------------------------
def make_alloc(
    job_id: str,
    group: str,
    index: int,
    *,
    version: int,
    status: str = "running",
    desired: str = "run",
    restarts: int = 0,
    created_ns: int | None = None,
    alloc_id: str | None = None,
    node: Mapping[str, Any] | None = None,
    cpu: int = 100,
    memory: int = 256,
) -> dict[str, Any]:
    """One allocation as Nomad lists it (``<job>.<group>[<index>]``), on ``node`` (one of
    ``make_node``) if given, holding ``cpu`` MHz and ``memory`` MiB."""
    return {
        "ID": alloc_id or str(uuid.uuid4()),
        "JobID": job_id,
        "Name": f"{job_id}.{group}[{index}]",
        "TaskGroup": group,
        "JobVersion": version,
        "ClientStatus": status,
        "DesiredStatus": desired,
        "CreateTime": created_ns if created_ns is not None else time.time_ns(),
        "TaskStates": {group: {"State": status, "Restarts": restarts}},
        "NodeID": node["ID"] if node else "",
        "NodeName": node["Name"] if node else "",
        "AllocatedResources": {
            "Shared": {"DiskMB": 300},
            "Tasks": {group: {"Cpu": {"CpuShares": cpu}, "Memory": {"MemoryMB": memory, "MemoryMaxMB": 0}}},
        },
    }


def make_node(
    name: str,
    *,
    node_id: str | None = None,
    status: str = "ready",
    eligible: bool = True,
    cpu: int = 4000,
    memory: int = 7800,
    reserved_cpu: int = 0,
    reserved_memory: int = 0,
    meta: Mapping[str, str] | None = None,
    address: str = "10.0.0.1",
    consul_name: str | None = None,
) -> dict[str, Any]:
    """One client node as ``GET /v1/node/<id>`` answers it (the parts Billowin reads, and a
    ``SecretID`` the adapter drops)."""
    attributes = {"unique.network.ip-address": address, "nomad.version": "1.6.3"}
    if consul_name is not None:
        attributes["unique.consul.name"] = consul_name
    return {
        "ID": node_id or str(uuid.uuid4()),
        "Name": name,
        "Datacenter": "dc1",
        "NodeClass": "",
        "NodePool": "default",
        "Status": status,
        "SchedulingEligibility": "eligible" if eligible else "ineligible",
        "Drain": False,
        "DrainStrategy": None,
        "LastDrain": None,
        "Attributes": attributes,
        "Meta": {"connect.log_level": "info", **(meta or {})},
        "NodeResources": {"Cpu": {"CpuShares": cpu}, "Memory": {"MemoryMB": memory}},
        "ReservedResources": {"Cpu": {"CpuShares": reserved_cpu}, "Memory": {"MemoryMB": reserved_memory}},
        "SecretID": str(uuid.uuid4()),
    }


# What ``GET /v1/nodes`` lists of each node (no resources, meta or attributes).
STUB_FIELDS = (
    "ID", "Name", "Datacenter", "NodeClass", "NodePool", "Status", "SchedulingEligibility", "Drain",
    "LastDrain",
)  # fmt: skip


class FakeScheduler:
    """Jobs with task groups, and allocations a test sets (``allocs``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._modify_index = 10
        self.allocs: list[dict[str, Any]] = []
        self.scaled: list[tuple[str, str, int, str]] = []
        self.restarted: list[tuple[str, str | None, int]] = []
        self.stopped: list[tuple[str, bool]] = []
        self.client_nodes: dict[str, dict[str, Any]] = {}  # full nodes, by id
        self.drains: list[tuple[str, float, dict[str, str]]] = []
        self.activated: list[str] = []
        self.purged: list[str] = []
        # Builds on Nomad: Variables by path, tasks' output by (alloc, task, stream), alloc files.
        self.variables: dict[str, dict[str, str]] = {}
        self.outputs: dict[tuple[str, str, str], bytes] = {}
        self.files: dict[tuple[str, str], str] = {}
        # Like Nomad's drainer, but one step per look: each ``node`` call of a node that drains
        # (or whose drain just ended) stops one of its allocations (``_drain_step``).
        self.drain_progress = False

    def _next_index(self) -> int:
        self._modify_index += 1
        return self._modify_index

    def add_job(
        self,
        job_id: str,
        groups: Mapping[str, int] | None = None,
        *,
        type: str = "service",
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Register a job as if a deploy had (version 0, one task group per process type)."""
        with self._lock:
            self._jobs[job_id] = {
                "ID": job_id,
                "Type": type,
                "Stop": False,
                "Version": 0,
                "JobModifyIndex": self._next_index(),
                "TaskGroups": [{"Name": n, "Count": c} for n, c in (groups or {"web": 1}).items()],
                "Meta": dict(meta or {}),
            }

    # -- Probe ---------------------------------------------------------------------------------
    def health(self) -> ComponentHealth:
        return ComponentHealth("nomad", True, version="fake")

    # -- jobs -----------------------------------------------------------------------------------
    def current(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return copy.deepcopy(job) if job is not None else None

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {k: j[k] for k in ("ID", "Type", "Stop", "Version", "JobModifyIndex")}
                for j in self._jobs.values()
            ]

    def submit(self, job: dict[str, Any], *, expect_modify_index: int | None = None) -> str:
        """Register a job dict; with ``expect_modify_index`` only if nobody changed it since (0: new)."""
        with self._lock:
            existing = self._jobs.get(job["ID"])
            if expect_modify_index is not None:
                found = existing["JobModifyIndex"] if existing else 0
                if found != expect_modify_index:
                    raise Conflict(f"the job changed while this deploy ran: modify index {found}")
            stored = copy.deepcopy(job)
            stored["Version"] = existing["Version"] + 1 if existing else 0
            stored["JobModifyIndex"] = self._next_index()
            stored.setdefault("Stop", False)
            self._jobs[job["ID"]] = stored
            return f"eval-{stored['JobModifyIndex']}"

    def scale(self, job_id: str, group: str, count: int, *, message: str = "") -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(f"Nomad has no job {job_id!r}")
            groups = [g for g in job["TaskGroups"] if g["Name"] == group]
            if not groups:
                raise InvalidInput(f"Nomad refused the job {job_id!r}: group {group!r} not found")
            groups[0]["Count"] = count
            job["Version"] += 1
            job["JobModifyIndex"] = self._next_index()
            self.scaled.append((job_id, group, count, message))

    def restart(self, job_id: str, group: str | None = None) -> int:
        with self._lock:
            running = [
                a
                for a in self.allocs
                if a["JobID"] == job_id
                and a.get("ClientStatus") == "running"
                and (group is None or a.get("TaskGroup") == group)
            ]
            self.restarted.append((job_id, group, len(running)))
            return len(running)

    def stop(self, job_id: str, *, purge: bool = True) -> None:
        with self._lock:
            self.stopped.append((job_id, purge))
            if purge:
                self._jobs.pop(job_id, None)
            elif job_id in self._jobs:
                self._jobs[job_id]["Stop"] = True
                self._jobs[job_id]["JobModifyIndex"] = self._next_index()

    # -- allocations ---------------------------------------------------------------------------
    def allocations(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(a) for a in self.allocs if a["JobID"] == job_id]

    def all_allocations(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(a) for a in self.allocs]

    def live_allocations(self) -> list[dict[str, Any]]:
        return [a for a in self.all_allocations() if a.get("ClientStatus") in ("pending", "running")]

    def allocation(self, alloc_id: str) -> dict[str, Any]:
        with self._lock:
            for alloc in self.allocs:
                if alloc["ID"] == alloc_id:
                    return copy.deepcopy(alloc)
        raise NotFound(f"Nomad has no allocation {alloc_id!r}")

    # -- client nodes --------------------------------------------------------------------------
    def add_node(self, name: str, **options: Any) -> dict[str, Any]:
        """Register a client node (``make_node``'s options); returns it, for ``make_alloc(node=…)``."""
        node = make_node(name, **options)
        with self._lock:
            self.client_nodes[node["ID"]] = node
        return copy.deepcopy(node)

    def _client_node(self, node_id: str) -> dict[str, Any]:
        node = self.client_nodes.get(node_id)
        if node is None:
            raise NotFound(f"Nomad has no node {node_id}")
        return node

    def nodes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    **{k: copy.deepcopy(n[k]) for k in STUB_FIELDS},
                    "Address": n["Attributes"]["unique.network.ip-address"],
                }
                for n in self.client_nodes.values()
            ]

    def node(self, node_id: str) -> dict[str, Any]:
        with self._lock:
            node = self._client_node(node_id)
            drained = (node["LastDrain"] or {}).get("Status") == "complete"
            if self.drain_progress and (node["Drain"] or drained):
                self._drain_step(node)
            found = copy.deepcopy(node)
        found.pop("SecretID", None)
        return found

    def _drain_step(self, node: dict[str, Any]) -> None:
        """Tell one allocation to stop, or else let one that was told go; like Nomad's drainer,
        the drain is over once every allocation was told, not once every one has gone."""
        live = [a for a in self.allocs if a.get("NodeID") == node["ID"] and a["ClientStatus"] in LIVE]
        running = [a for a in live if a["DesiredStatus"] == "run"]
        if running:
            running[0].update(DesiredStatus="stop", DesiredTransition={"Migrate": True})
        elif live:
            live[0]["ClientStatus"] = "complete"
        if len(running) <= 1:
            node.update(Drain=False, DrainStrategy=None)
            node["LastDrain"]["Status"] = "complete"

    def node_allocations(self, node_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._client_node(node_id)
            return [copy.deepcopy(a) for a in self.allocs if a.get("NodeID") == node_id]

    def drain_node(self, node_id: str, *, deadline: float, meta: Mapping[str, str] | None = None) -> None:
        with self._lock:
            node = self._client_node(node_id)
            force = datetime.now(UTC) + timedelta(seconds=deadline)
            node.update(
                Drain=True,
                SchedulingEligibility="ineligible",
                DrainStrategy={
                    "Deadline": int(deadline * 1e9),
                    "ForceDeadline": force.isoformat().replace("+00:00", "Z"),
                    "IgnoreSystemJobs": False,
                },
                LastDrain={"Status": "draining", "Meta": dict(meta or {})},
            )
            self.drains.append((node_id, deadline, dict(meta or {})))

    def finish_drain(self, node_id: str) -> None:
        """What Nomad's drainer does in the end: every live allocation stopped, the drain over."""
        with self._lock:
            node = self._client_node(node_id)
            for alloc in self.allocs:
                if alloc.get("NodeID") == node_id and alloc["ClientStatus"] in LIVE:
                    alloc.update(ClientStatus="complete", DesiredStatus="stop")
            node.update(Drain=False, DrainStrategy=None)
            node["LastDrain"]["Status"] = "complete"

    def activate_node(self, node_id: str) -> None:
        with self._lock:
            node = self._client_node(node_id)
            if node["Drain"]:
                node["LastDrain"]["Status"] = "canceled"
            node.update(Drain=False, DrainStrategy=None, SchedulingEligibility="eligible")
            self.activated.append(node_id)

    def purge_node(self, node_id: str) -> None:
        with self._lock:
            self._client_node(node_id)
            del self.client_nodes[node_id]
            self.purged.append(node_id)

    # -- not needed by the unit tests -------------------------------------------------------
    # -- builds on Nomad ------------------------------------------------------------------------
    def put_variable(self, path: str, items: Mapping[str, str]) -> None:
        with self._lock:
            self.variables[path] = dict(items)

    def delete_variable(self, path: str) -> None:
        with self._lock:
            self.variables.pop(path, None)

    def task_output(self, alloc_id: str, task: str, stream: str, offset: int) -> bytes:
        with self._lock:
            return self.outputs.get((alloc_id, task, stream), b"")[offset:]

    def allocation_file(self, alloc_id: str, path: str) -> str | None:
        with self._lock:
            return self.files.get((alloc_id, path))

    def parse(self, hcl: str) -> dict[str, Any]:
        raise NotImplementedError("FakeScheduler does not parse HCL")

    def plan(self, job: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def wait_for_deployment(
        self, job_id: str, *, timeout: float, after_version: int | None = None
    ) -> DeployResult:
        raise NotImplementedError

    def allocation_stats(self, alloc_id: str) -> dict[str, Any]:
        raise NotImplementedError


LIVE = ("pending", "running")


class FakeMembers:
    """The ``ClusterMembers`` port: Consul's gossip pool, by node name; ``error`` makes every
    force-leave fail (a token without operator:write, say)."""

    def __init__(self, members: Sequence[str] = (), *, error: BillowinError | None = None) -> None:
        self.members = set(members)
        self.error = error
        self.left: list[tuple[str, bool]] = []

    def force_leave(self, node: str, *, prune: bool = True) -> None:
        check_node_ref(node)
        if self.error is not None:
            raise self.error
        if node not in self.members:
            raise NotFound(f"Consul has no member {node}")
        self.members.discard(node)
        self.left.append((node, prune))


# -- config vars ------------------------------------------------------------------------------
class InMemoryConfig:
    """The ``ConfigStore`` port: each write is a new immutable version (1, 2, …) of the app's vars."""

    backend = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, list[dict[str, str]]] = {}

    def health(self) -> ComponentHealth:
        return ComponentHealth("config (memory)", True)

    def write(self, app: str, values: Mapping[str, str]) -> int:
        validate_app(app)
        checked = validate_values(values)
        with self._lock:
            versions = self._versions.setdefault(app, [])
            versions.append(dict(checked))
            return len(versions)

    def read(self, app: str, version: int) -> dict[str, str]:
        validate_app(app)
        with self._lock:
            versions = self._versions.get(app, [])
            if not 1 <= version <= len(versions):
                raise NotFound(f"app {app} has no config version {version}")
            return dict(versions[version - 1])

    def latest(self, app: str) -> tuple[int, dict[str, str]]:
        validate_app(app)
        with self._lock:
            versions = self._versions.get(app, [])
            return (len(versions), dict(versions[-1])) if versions else (0, {})

    def delete(self, app: str) -> None:
        validate_app(app)
        with self._lock:
            self._versions.pop(app, None)

    def template(self, app: str, version: int) -> str:
        return f'{{{{ with nomadVar "billowin/config/{app}/{version}" }}}}…{{{{ end }}}}'

    def job_vault_policies(self, app: str) -> list[str]:
        return []


# -- GitHub commit statuses ------------------------------------------------------------------------
@dataclass(frozen=True)
class StatusReport:
    repository: str
    sha: str
    state: str
    description: str
    target_url: str | None


class RecordingStatuses:
    """The ``CommitStatuses`` port: remembers every report; ``error`` makes each report raise it."""

    def __init__(self, error: BillowinError | None = None) -> None:
        self.reports: list[StatusReport] = []
        self.error = error
        self._lock = threading.Lock()

    def report(self, repository: str, sha: str, state: str, description: str, target_url: str | None) -> None:
        with self._lock:
            self.reports.append(StatusReport(repository, sha, state, description, target_url))
        if self.error is not None:
            raise self.error

    def states(self) -> list[str]:
        return [r.state for r in self.reports]


class RecordingDeployments:
    """The ``Deployments`` port: numbers each deployment, remembers every status; ``error`` makes
    each call raise it."""

    def __init__(self, error: BillowinError | None = None) -> None:
        self.created: list[tuple[str, str, str]] = []  # (repository, sha, environment)
        self.statuses: list[tuple[int, str, str | None]] = []  # (deployment, state, environment_url)
        self.error = error

    def create_deployment(self, repository: str, sha: str, environment: str, description: str) -> int:
        if self.error is not None:
            raise self.error
        self.created.append((repository, sha, environment))
        return len(self.created)

    def deployment_status(
        self, repository: str, deployment: int, state: str, description: str, environment_url: str | None
    ) -> None:
        if self.error is not None:
            raise self.error
        self.statuses.append((deployment, state, environment_url))


# -- the worker's builder and deployer -------------------------------------------------------------
@dataclass(frozen=True)
class BuildCall:
    app: str
    repository: str
    sha: str


class FakeBuilder:
    """Builds nothing: ``build`` answers a succeeded ``BuildRecord`` with ``processes`` (the Procfile).

    Set ``error`` to make every build raise it (a ``BuildFailed`` as a failed build would).
    """

    def __init__(self, processes: Mapping[str, str] | None = None, *, registry: str = "reg") -> None:
        self.processes = dict(processes or {"web": "python app.py"})
        self.registry = registry
        self.error: BillowinError | None = None
        self.calls: list[BuildCall] = []
        self.stale_removals = 0

    def build(self, app: str, repository: str, sha: str, **_: object) -> BuildRecord:
        self.calls.append(BuildCall(app, repository, sha))
        if self.error is not None:
            raise self.error
        now = datetime.now(UTC)
        return BuildRecord(
            app=app,
            sha=sha,
            status="succeeded",
            language="python",
            runtime="python 3.14.7 (debian forky)",
            runtime_source=".python-version",
            processes=dict(self.processes),
            image=f"{self.registry}/{app}:{sha}",
            digest=f"sha256:{(sha * 2)[:64]}",
            started_at=now,
            finished_at=now,
            seconds=0.0,
        )

    def remove_stale_build_containers(self) -> int:
        self.stale_removals += 1
        return 0


@dataclass(frozen=True)
class DeployCall:
    app: str
    image: str
    processes: list[Process]
    domains: list[str]
    release_command: str | None
    cause: str
    sha: str | None
    rollback_of: str | None
    config_version: int | None
    timeout: float
    predeploy: tuple[Any, ...] = ()  # DeployTasks: app.json's scripts
    postdeploy: tuple[Any, ...] = ()


@dataclass(frozen=True)
class RollbackCall:
    app: str
    number: int | None
    timeout: float


def _quiet(_msg: str) -> None:
    return None


class FakeDeployer:
    """Records deploys and keeps real release records (``releases``) in the given KV.

    Each deploy creates a release and marks it live; with ``unhealthy`` set it is marked
    failed with that description instead; with ``error`` set, deploy raises it.
    """

    def __init__(self, kv: Any, *, config: Any = None) -> None:
        self.releases = ReleaseStore(kv)
        self.config = config
        self.unhealthy: str | None = None
        self.error: BillowinError | None = None
        self.deploys: list[DeployCall] = []
        self.rollbacks: list[RollbackCall] = []

    def deploy(
        self,
        app: str,
        image: str,
        processes: list[Process],
        *,
        domains: list[str] | None = None,
        keep_scale: bool = True,
        deadlines: dict[str, str] | None = None,
        timeout: float = 180,
        progress: Callable[[str], None] = _quiet,
        rollback_of: str | None = None,
        config_version: int | None = None,
        release_command: str | None = None,
        cause: str = "",
        sha: str | None = None,
        runtime: str | None = None,
        output: Callable[[str], None] = _quiet,
        predeploy: Sequence[Any] = (),
        postdeploy: Sequence[Any] = (),
    ) -> Release:
        self.deploys.append(
            DeployCall(
                app,
                image,
                list(processes),
                list(domains or []),
                release_command,
                cause,
                sha,
                rollback_of,
                config_version,
                timeout,
                tuple(predeploy),
                tuple(postdeploy),
            )
        )
        if self.error is not None:
            raise self.error
        if config_version is None:
            config_version = self.config.latest(app)[0] if self.config is not None else 0
        release = self.releases.create(
            app,
            image,
            list(processes),
            list(domains or []),
            rollback_of=rollback_of,
            config_version=config_version,
            cause=cause,
            sha=sha,
            runtime=runtime,
        )
        progress(f"{app} {release.name}: rolling out")
        if self.unhealthy is not None:
            release.status, release.description = ReleaseStatus.FAILED, self.unhealthy
        else:
            release.status = ReleaseStatus.LIVE
            release.description = f"rollback to {rollback_of}" if rollback_of else "deployed"
        release.finished_at = datetime.now(UTC)
        self.releases.save(release)
        progress(f"{app} {release.name}: {release.status.value} ({release.description})")
        return release

    def rollback(
        self,
        app: str,
        number: int | None = None,
        *,
        domains: list[str] | None = None,
        timeout: float = 180,
        progress: Callable[[str], None] = _quiet,
    ) -> Release:
        self.rollbacks.append(RollbackCall(app, number, timeout))
        if number is None:
            live = [r for r in self.releases.list(app) if r.status == ReleaseStatus.LIVE]
            if len(live) < 2:
                raise InvalidInput(f"{app} has no earlier live release to roll back to")
            target = live[-2]
        else:
            target = self.releases.get(app, number)
        return self.deploy(
            app,
            target.image,
            target.processes,
            domains=target.domains,
            timeout=timeout,
            progress=progress,
            rollback_of=target.name,
            config_version=target.config_version,
            cause=f"rollback to {target.name}",
            sha=target.sha,
        )


# -- An ACME CA -------------------------------------------------------------------------------
class FakeAuthority:
    """The ``CertificateAuthority`` port: accounts, and orders signed by an in-memory CA.

    ``order`` presents one challenge per name to the solver of its kind (DNS-01 for a
    wildcard), then takes them down, like the real adapter; ``fail_with`` (an exception) makes
    every order raise it after that; ``forget_accounts`` makes the next order raise
    ``AccountUnknown`` for every account registered so far. ``orders`` counts what was asked.
    """

    def __init__(self, directory_url: str = "https://ca.test/directory", lifetime_days: float = 90) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory_url = directory_url
        self.lifetime = lifetime_days
        self.registrations: list[tuple[str, str]] = []  # (email, eab kid)
        self.orders: list[tuple[str, tuple[str, ...]]] = []  # (account uri, names)
        self.presented: list[PendingChallenge] = []
        self.fail_with: BaseException | None = None
        self._known: set[str] = set()
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake ACME CA")])
        now = datetime.now(UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )

    def register(self, email: str, *, eab_kid: str = "", eab_hmac_key: str = "") -> AcmeAccount:
        uri = f"{self.directory_url.rsplit('/', 1)[0]}/acct/{len(self.registrations) + 1}"
        self.registrations.append((email, eab_kid))
        self._known.add(uri)
        key = '{"kty": "EC", "crv": "P-256", "d": "fake-private-part"}'
        return AcmeAccount(self.directory_url, uri, key, email)

    def forget_accounts(self) -> None:
        self._known.clear()

    def order(
        self,
        account: AcmeAccount,
        names: Sequence[str],
        key_pem: bytes,
        solvers: Mapping[str, Any],
    ) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID

        if account.uri not in self._known:
            raise AccountUnknown("the CA does not know this account")
        self.orders.append((account.uri, tuple(names)))
        challenges = []
        for i, name in enumerate(names):
            kind = "dns-01" if name.startswith("*.") else "http-01"
            base = name.removeprefix("*.")
            token = f"tok{i:02d}{uuid.uuid4().hex}"[:43]
            answer, txt = f"{token}.{'t' * 43}", f"_acme-challenge.{base}"
            challenges.append(PendingChallenge(kind, base, token, answer, txt, "v" * 43))
        for kind, solver in solvers.items():
            mine = [c for c in challenges if c.kind == kind]
            if mine:
                solver.present(mine)
                self.presented.extend(mine)
                solver.cleanup(mine)
        if self.fail_with is not None:
            raise self.fail_with
        key = serialization.load_pem_private_key(key_pem, password=None)
        now = datetime.now(UTC).replace(microsecond=0)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=self.lifetime))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        return (leaf.public_bytes(pem) + self.ca_cert.public_bytes(pem)).decode()


def own_certificate(names: Sequence[str], *, days: float = 90, expired: bool = False) -> tuple[str, str]:
    """A certificate a user might bring (``certs:add``): (chain PEM with its CA, key PEM).

    Its own one-off CA signs it; with ``expired`` it ended yesterday.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Own Test CA")])
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = (
        (now - timedelta(days=30), now - timedelta(days=1)) if expired else (now, now + timedelta(days=days))
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=60))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return chain.decode(), key_pem.decode()


class InMemorySecrets:
    """The ``SecretStore`` port: numbered versions per name, like Vault's KV v2."""

    def __init__(self) -> None:
        self.versions: dict[str, list[dict[str, str]]] = {}

    def put(self, name: str, data: Mapping[str, str]) -> int:
        self.versions.setdefault(name, []).append(dict(data))
        return len(self.versions[name])

    def get(self, name: str, version: int | None = None) -> dict[str, str] | None:
        found = self.versions.get(name) or []
        if not found or (version is not None and not 1 <= version <= len(found)):
            return None
        return dict(found[(version or len(found)) - 1])

    def delete(self, name: str) -> None:
        self.versions.pop(name, None)


# -- the Dockerfile recipe's BuildKit -------------------------------------------------------------
@dataclass(frozen=True)
class BuildKitCall:
    context: str
    dockerfile: str
    tag: str
    labels: dict[str, str]
    files: tuple[str, ...]  # what the context held at the top when the build started


class FakeBuildKit:
    """The ``DockerfileBuildTool`` of ``build/dockerfile.py`` (``adapters/buildkit.py``): records
    each build, logs ``output`` as BuildKit's ``--progress=plain`` would, then raises ``error`` if
    set; ``inspect`` answers ``config`` for an image it built, ``NotFound`` for any other."""

    def __init__(self, config: Mapping[str, Any] | None = None, output: Sequence[str] = ()) -> None:
        self.config = dict(config or {})
        self.output = list(output)
        self.error: BillowinError | None = None
        self.calls: list[BuildKitCall] = []
        self.bounds: list[dict[str, int]] = []
        self.unbounded: str | None = None  # what ``bound`` answers: why the limits were not set

    def bound(self, *, memory_mb: int, pids: int, cpu_shares: int) -> str | None:
        self.bounds.append({"memory_mb": memory_mb, "pids": pids, "cpu_shares": cpu_shares})
        return self.unbounded

    def build(self, context: Any, *, dockerfile: Any, tag: str, labels: dict[str, str], log: Any) -> None:
        files = tuple(sorted(p.name for p in context.iterdir()))
        self.calls.append(BuildKitCall(str(context), str(dockerfile), tag, dict(labels), files))
        for line in self.output:
            log(line)
        if self.error is not None:
            raise self.error

    def inspect(self, ref: str) -> dict[str, Any]:
        if not any(call.tag == ref for call in self.calls) or self.error is not None:
            raise NotFound(f"no image {ref}")
        return copy.deepcopy(self.config)
