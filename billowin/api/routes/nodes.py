"""``/nodes``: the cluster's Nomad client nodes (admin only): list, drain, activate, remove.

``{node}`` is a node's name or at least the first 8 characters of its id, checked against
the same pattern as everywhere a node is named (``billowin.names.NODE``); one that fits no
node is a 404, one that fits several a 409, each listing the nodes there are. A drain answers
``202`` with the node as it is then: follow it with ``GET /nodes/{node}`` (by its id) until
``draining`` is false. Every change is in the audit log, like every admin call.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from billowin.api.answers import ERROR_SCHEMA
from billowin.api.deps import SystemDep, require
from billowin.apps.access import Action, Caller
from billowin.errors import InvalidInput
from billowin.names import NODE, NODE_RULE
from billowin.nodes import DEADLINE, DEFAULT_DEADLINE, NodeInfo, NodeRemoved, Nodes


def _answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


router = APIRouter(
    prefix="/nodes",
    tags=["nodes"],
    responses={
        404: _answer("No node has that name or id prefix (the message lists those there are)."),
        409: _answer("The name fits several nodes, or the node is not in a state that allows it."),
    },
)

NodeRef = Annotated[str, Path(pattern=NODE.pattern, max_length=128, description=f"The node: {NODE_RULE}.")]


def nodes(system: SystemDep) -> Nodes:
    return system.nodes


NodesDep = Annotated[Nodes, Depends(nodes)]


class DrainRequest(BaseModel):
    deadline: str = Field(
        DEFAULT_DEADLINE,
        pattern=DEADLINE.pattern,
        description="How long allocations have to move (90s, 5m, 1h; at most 24h); what is left then "
        "is stopped.",
    )
    last_node: bool = Field(
        False,
        description="Drain it even when no other node can take new allocations: its apps stop.",
    )


@router.get("", response_model=list[NodeInfo], dependencies=[require(Action.NODES)])
async def list_nodes(n: NodesDep) -> list[NodeInfo]:
    """Every client node: state, eligibility, allocations, CPU and memory allocated of what it offers."""
    found: list[NodeInfo] = await asyncio.to_thread(n.all)
    return found


@router.get("/{node}", response_model=NodeInfo, dependencies=[require(Action.NODES)])
async def node_info(node: NodeRef, n: NodesDep) -> NodeInfo:
    found: NodeInfo = await asyncio.to_thread(n.get, node)
    return found


@router.post("/{node}/drain", status_code=202, response_model=NodeInfo)
async def drain(
    node: NodeRef, body: DrainRequest, caller: Annotated[Caller, require(Action.NODES_DRAIN)], n: NodesDep
) -> NodeInfo:
    """Drain the node: nothing new is placed there, and its allocations move to other nodes."""
    found: NodeInfo = await asyncio.to_thread(
        n.drain, node, deadline=body.deadline, last_node=body.last_node, by=caller.token.name
    )
    return found


@router.post("/{node}/activate", response_model=NodeInfo, dependencies=[require(Action.NODES_ACTIVATE)])
async def activate(node: NodeRef, n: NodesDep) -> NodeInfo:
    """End any drain and make the node eligible for new allocations again."""
    found: NodeInfo = await asyncio.to_thread(n.activate, node)
    return found


@router.delete("/{node}", response_model=NodeRemoved, dependencies=[require(Action.NODES_REMOVE)])
async def remove(
    node: NodeRef,
    n: NodesDep,
    confirm: Annotated[str, Query(description="The node again, as given: removing cannot be undone.")],
) -> NodeRemoved:
    """Take a down or drained node out of the cluster: Nomad purges it, its Consul agent leaves."""
    if confirm != node:
        raise InvalidInput(
            f"removing {node} takes it out of the cluster for good",
            hint=f"Confirm with ?confirm={node} (CLI: `billowin nodes:remove {node} --confirm {node}`).",
        )
    removed: NodeRemoved = await asyncio.to_thread(n.remove, node)
    return removed
