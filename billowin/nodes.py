"""The cluster's nodes, Heroku-CLI style: list them, drain one, put it back, take one out for good.

A node is a Nomad client (``Scheduler``); its Consul agent is a member of the gossip pool
(``ClusterMembers``). Users name a node as Nomad's CLI does, by its name or by a prefix of its
id (at least 8 characters: what ``billowin nodes`` shows, so a stray digit never picks a node by
chance); a name or prefix that fits no node, or more than one, is refused with the choices.

- ``drain``: Nomad's drain (the node becomes ineligible, its allocations move elsewhere, what is
  left at the deadline is stopped). Draining the last node that could take the work is refused
  unless asked for in so many words (``last_node``): it would stop every app on it, with nowhere
  to go.
- ``activate``: ends a drain, if any, and makes the node eligible again. What moved away stays
  where it went; new placements may use the node again.
- ``remove``: only a node that is down, or drained (ineligible, no drain under way, nothing left
  running on it). Nomad purges it, then its Consul agent is forced to leave (pruned). Consul's
  answer never undoes the purge: a failure there is reported with what to do by hand.
  A purged node whose Nomad agent still runs registers again at its next heartbeat, so the
  answer says to stop that agent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from billowin.errors import BillowinError, Conflict, InvalidInput, NotFound
from billowin.names import SHORT_NODE_ID, check_node_ref, is_node_id_prefix
from billowin.ports import ClusterMembers, Scheduler

# A drain's deadline, as the CLI takes it: 90s, 5m, 1h (Nomad's own ``-deadline`` is a Go duration).
DEADLINE = re.compile(r"^([1-9][0-9]{0,4})(s|m|h)$")
DEADLINE_UNITS = {"s": 1, "m": 60, "h": 3600}
MAX_DEADLINE = 24 * 3600
DEFAULT_DEADLINE = "5m"
ROLE_META = "billowin."  # a node's meta ``billowin.<role> = "true"`` gives it that role (``build``)
LIVE = ("pending", "running")  # what a drain still has to move
CHOICES_SHOWN = 20


class NodeInfo(BaseModel):
    """One Nomad client node, like a line of ``nomad node status`` with its allocated resources."""

    id: str
    name: str
    address: str
    datacenter: str
    node_class: str = ""
    pool: str = ""
    version: str = ""
    roles: list[str] = Field(default_factory=list, description='From meta billowin.<role> = "true".')
    status: str = Field(description="Nomad's: initializing, ready, down or disconnected.")
    state: str = Field(description="ready, draining, ineligible, down, initializing or disconnected.")
    eligible: bool
    draining: bool
    drain_deadline: datetime | None = Field(None, description="When a drain stops what is left.")
    last_drain: str | None = Field(None, description="The last drain: draining, complete or canceled.")
    allocations: int = Field(description="Allocations running on the node.")
    allocations_left: int = Field(description="Allocations pending or running: what a drain still moves.")
    cpu_mhz: int = Field(description="CPU allocated to what runs there.")
    cpu_total_mhz: int = Field(description="CPU the node offers (what it has, less what it keeps).")
    memory_mib: int
    memory_total_mib: int
    consul_name: str = Field(description="The name of the node's Consul agent.")


class Notice(BaseModel):
    """Something that went wrong, or needs doing, after the part that worked."""

    message: str
    hint: str = ""


class NodeRemoved(BaseModel):
    id: str
    name: str
    nomad: str = Field("purged", description="Nomad forgot the node.")
    consul: str = Field(description="left (pruned), not-a-member (nothing to do), or failed.")
    warnings: list[Notice] = Field(default_factory=list)


def parse_deadline(text: str) -> int:
    """``"5m"`` → 300 seconds; ``InvalidInput`` for anything else or over a day."""
    match = DEADLINE.fullmatch(text)
    seconds = int(match[1]) * DEADLINE_UNITS[match[2]] if match else 0
    if not match or seconds > MAX_DEADLINE:
        raise InvalidInput(
            f"{text!r} is not a drain deadline", hint="Give one like 90s, 5m or 1h (at most 24h)."
        )
    return seconds


def _state(node: Mapping[str, Any]) -> str:
    status = str(node.get("Status") or "unknown")
    if status != "ready":
        return status  # down, disconnected, initializing: whatever else it is, it runs nothing new
    if node.get("Drain") or node.get("DrainStrategy"):
        return "draining"
    if node.get("SchedulingEligibility") != "eligible":
        return "ineligible"
    return "ready"


def _schedulable(node: Mapping[str, Any]) -> bool:
    """Whether Nomad may place new allocations on the node (a list stub or a full node)."""
    return _state(node) == "ready"


def _terminal(alloc: Mapping[str, Any]) -> bool:
    """Nomad's ``TerminalStatus``: what no longer holds the node's resources."""
    return alloc.get("DesiredStatus") in ("stop", "evict") or alloc.get("ClientStatus") in (
        "complete",
        "failed",
        "lost",
    )


def _allocated(allocs: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """CPU (MHz) and memory (MiB) the node's non-terminal allocations hold, as ``nomad node status``."""
    cpu = memory = 0
    for alloc in allocs:
        if _terminal(alloc):
            continue
        for task in ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).values():
            cpu += int(((task or {}).get("Cpu") or {}).get("CpuShares") or 0)
            memory += int(((task or {}).get("Memory") or {}).get("MemoryMB") or 0)
    return cpu, memory


def _offered(node: Mapping[str, Any], kind: str, field: str) -> int:
    total = int(((node.get("NodeResources") or {}).get(kind) or {}).get(field) or 0)
    kept = int(((node.get("ReservedResources") or {}).get(kind) or {}).get(field) or 0)
    return max(0, total - kept)


def describe(node: Mapping[str, Any], allocs: Iterable[Mapping[str, Any]]) -> NodeInfo:
    """A full node (``Scheduler.node``) and its allocations, as the API shows them."""
    allocs = list(allocs)
    attributes = node.get("Attributes") or {}
    meta = node.get("Meta") or {}
    drain = node.get("DrainStrategy") or {}
    cpu, memory = _allocated(allocs)
    deadline = drain.get("ForceDeadline")
    return NodeInfo(
        id=node["ID"],
        name=node.get("Name") or node["ID"],
        address=attributes.get("unique.network.ip-address") or node.get("Address") or "",
        datacenter=node.get("Datacenter") or "",
        node_class=node.get("NodeClass") or "",
        pool=node.get("NodePool") or "",
        version=attributes.get("nomad.version") or node.get("Version") or "",
        roles=sorted(
            key.removeprefix(ROLE_META)
            for key, value in meta.items()
            if key.startswith(ROLE_META) and str(value).lower() == "true"
        ),
        status=str(node.get("Status") or "unknown"),
        state=_state(node),
        eligible=node.get("SchedulingEligibility") == "eligible",
        draining=bool(node.get("Drain") or drain),
        # Nomad writes the zero time for a drain without a deadline.
        drain_deadline=datetime.fromisoformat(deadline) if deadline and deadline[:4] != "0001" else None,
        last_drain=(node.get("LastDrain") or {}).get("Status"),
        allocations=sum(1 for a in allocs if a.get("ClientStatus") == "running"),
        allocations_left=sum(1 for a in allocs if a.get("ClientStatus") in LIVE),
        cpu_mhz=cpu,
        cpu_total_mhz=_offered(node, "Cpu", "CpuShares"),
        memory_mib=memory,
        memory_total_mib=_offered(node, "Memory", "MemoryMB"),
        consul_name=attributes.get("unique.consul.name") or node.get("Name") or "",
    )


def _choices(nodes: Iterable[Mapping[str, Any]]) -> str:
    shown = [f"{n.get('Name')} ({n['ID'][:SHORT_NODE_ID]}, {_state(n)})" for n in nodes]
    more = len(shown) - CHOICES_SHOWN
    return ", ".join(shown[:CHOICES_SHOWN]) + (f" and {more} more" if more > 0 else "")


class Nodes:
    """The node verbs the API offers (``billowin/api/routes/nodes.py``).

    ``members`` is asked for Consul's gossip pool only when a node is removed: listing,
    draining and activating need Nomad alone, so they connect to nothing else.
    """

    def __init__(self, nomad: Scheduler, members: Callable[[], ClusterMembers]) -> None:
        self.nomad = nomad
        self.members = members

    # -- which node -----------------------------------------------------------------------
    def resolve(self, ref: str, nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The node ``ref`` names (its list stub): its exact name, else a prefix of its id."""
        check_node_ref(ref)
        nodes = self.nomad.nodes() if nodes is None else nodes
        found = [n for n in nodes if n.get("Name") == ref]
        by_id = ref.lower()
        if not found and is_node_id_prefix(by_id):
            found = [n for n in nodes if str(n["ID"]).startswith(by_id)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise Conflict(
                f"{ref!r} names {len(found)} nodes: {_choices(found)}",
                hint="Name the one you mean by its id (more of it if need be), as `billowin nodes` shows.",
            )
        if not nodes:
            raise NotFound(
                "Nomad knows no client node",
                hint="Is a Nomad agent running with `client { enabled = true }`? Its log says why not.",
            )
        short = len(ref) < SHORT_NODE_ID and all(c in "0123456789abcdef" for c in by_id)
        raise NotFound(
            f"no node is named {ref!r}" + ("" if short else f" or has an id starting {ref!r}"),
            hint=(f"An id takes at least its first {SHORT_NODE_ID} characters. " if short else "")
            + f"The cluster's nodes: {_choices(nodes)}.",
        )

    def _describe(self, node_id: str) -> NodeInfo:
        return describe(self.nomad.node(node_id), self.nomad.node_allocations(node_id))

    # -- looking ----------------------------------------------------------------------------
    def all(self) -> list[NodeInfo]:
        """Every client node, by name."""
        found = []
        for stub in self.nomad.nodes():
            try:
                found.append(self._describe(stub["ID"]))
            except NotFound:  # purged since the list was read
                continue
        return sorted(found, key=lambda n: (n.name, n.id))

    def get(self, ref: str) -> NodeInfo:
        return self._describe(self.resolve(ref)["ID"])

    # -- changing ---------------------------------------------------------------------------
    def drain(
        self, ref: str, *, deadline: str = DEFAULT_DEADLINE, last_node: bool = False, by: str = ""
    ) -> NodeInfo:
        """Start (or update) a drain of ``ref``; its allocations move within ``deadline``."""
        seconds = parse_deadline(deadline)
        nodes = self.nomad.nodes()
        node = self.resolve(ref, nodes)
        if not last_node and not any(n["ID"] != node["ID"] and _schedulable(n) for n in nodes):
            self._refuse_last(ref, node)
        meta = {"message": "billowin nodes:drain"} | ({"by": by[:100]} if by else {})
        self.nomad.drain_node(node["ID"], deadline=seconds, meta=meta)
        return self._describe(node["ID"])

    def _refuse_last(self, ref: str, node: Mapping[str, Any]) -> None:
        """No other node can take new allocations: a drain would stop what runs on ``node`` for
        good, and (were it eligible) leave nowhere for any deploy to go. Fine only for a node
        that runs nothing and takes nothing already."""
        name = node.get("Name") or node["ID"]
        live = sum(1 for a in self.nomad.node_allocations(node["ID"]) if a.get("ClientStatus") in LIVE)
        if not live and not _schedulable(node):
            return
        stops = f"stops the {live} allocation(s) it runs, with nowhere for them to go"
        if not _schedulable(node):
            message = f"no other node can take new allocations: draining {name} {stops}"
        else:
            message = f"{name} is the only node that can take new allocations: draining it leaves none, " + (
                f"and {stops}" if live else "so no app can be deployed or restarted"
            )
        raise Conflict(
            message,
            hint="Add a node first (or `billowin nodes:activate` one); to drain it anyway, and stop "
            f"what runs there, `billowin nodes:drain {ref} --last-node`.",
        )

    def activate(self, ref: str) -> NodeInfo:
        """End any drain of ``ref`` and make it eligible for new allocations again."""
        node = self.resolve(ref)
        self.nomad.activate_node(node["ID"])
        return self._describe(node["ID"])

    def remove(self, ref: str) -> NodeRemoved:
        """Purge a down or drained node from Nomad, then force its Consul agent to leave."""
        node_id = self.resolve(ref)["ID"]
        allocs = self.nomad.node_allocations(node_id)
        info = describe(self.nomad.node(node_id), allocs)
        stopping = sum(1 for a in allocs if a.get("ClientStatus") in LIVE and a.get("DesiredStatus") != "run")
        self._check_removable(ref, info, stopping)
        warnings: list[Notice] = []
        if info.status == "ready":
            warnings.append(
                Notice(
                    message=f"{info.name}'s Nomad agent still runs: it registers the node again at its "
                    "next heartbeat, and Nomad may place allocations there once it is eligible",
                    hint=f"Stop the Nomad agent on {info.address or info.name} now (`systemctl stop "
                    "billowin-nomad` on a production box); if `billowin nodes` lists the node again, "
                    "remove it once it is down.",
                )
            )
        self.nomad.purge_node(node_id)
        try:
            self.members().force_leave(info.consul_name, prune=True)
            consul = "left"
        except NotFound:
            consul = "not-a-member"  # Consul never knew it by that name, or already forgot it
        except BillowinError as exc:
            consul = "failed"
            warnings.append(
                Notice(
                    message=f"Nomad forgot {info.name}, but Consul did not let it go: {exc.message}",
                    hint=f"On a Consul server, with a token that has operator:write: "
                    f"`consul force-leave -prune {info.consul_name}`.",
                )
            )
        return NodeRemoved(id=info.id, name=info.name, consul=consul, warnings=warnings)

    @staticmethod
    def _check_removable(ref: str, info: NodeInfo, stopping: int) -> None:
        """A node is taken out only once nothing runs there that still needs it."""
        if info.status == "down":
            return
        if info.draining:
            raise Conflict(
                f"{info.name} is still draining: {info.allocations_left} allocation(s) left to move",
                hint=f"Wait for the drain to end (`billowin nodes` shows it), then remove {ref} again.",
            )
        if info.eligible:
            runs = f"; it runs {info.allocations_left} allocation(s)" if info.allocations_left else ""
            raise Conflict(
                f"{info.name} is {info.state}, and eligible for new allocations{runs}",
                hint=f"Drain it first: `billowin nodes:drain {ref}`; once it is drained, stop its Nomad "
                f"agent and `billowin nodes:remove {ref} --confirm {ref}`.",
            )
        if info.status != "ready":
            raise Conflict(
                f"{info.name} is {info.status}: it may come back with what it runs",
                hint=f"Wait until Nomad marks it down, or drain it: `billowin nodes:drain {ref}`.",
            )
        if info.allocations_left and info.allocations_left == stopping:
            # A drain ends once it has told every allocation to stop; each then takes its
            # shutdown delay and kill timeout to go.
            raise Conflict(
                f"{info.name} is drained, but {stopping} allocation(s) there are still stopping",
                hint=f"Wait a few seconds (`billowin nodes` shows them go), then remove {ref} again.",
            )
        if info.allocations_left:
            raise Conflict(
                f"{info.name} is ineligible but still runs {info.allocations_left} allocation(s)",
                hint=f"Drain it, so they move elsewhere: `billowin nodes:drain {ref}`.",
            )
