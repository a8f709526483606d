"""The cluster's nodes: ``nodes``, ``nodes:drain``, ``nodes:activate``, ``nodes:remove`` (admin only).

NODE is a node's name or at least the first 8 characters of its id (what ``nodes`` shows).
``nodes:drain`` follows the drain until nothing is left to move (``--no-wait``: it only starts
it), and says how to undo it; ``nodes:remove`` asks for the node again before it takes it out.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from billowin.cli.client import ApiClient
from billowin.cli.main import JsonOpt, app
from billowin.cli.output import api_call, err, fail, out, print_json
from billowin.errors import BillowinError
from billowin.nodes import DEFAULT_DEADLINE, parse_deadline

NodeArg = Annotated[
    str, typer.Argument(metavar="NODE", help="The node's name, or at least the first 8 characters of its id.")
]
POLL_SECONDS = 2.0  # how often a followed drain is looked at again
STATE_COLOURS = {"ready": "green", "draining": "yellow", "ineligible": "yellow", "down": "red"}


def _path(node: str) -> str:
    return f"/nodes/{quote(node, safe='')}"


def nodes_table(found: list[dict[str, Any]]) -> Table:
    table = Table("node", "id", "address", "state", "eligible", "allocs", "cpu", "memory", "roles")
    for n in found:
        colour = STATE_COLOURS.get(n["state"], "red")
        table.add_row(
            n["name"],
            n["id"][:8],
            n["address"],
            f"[{colour}]{n['state']}[/]",
            "yes" if n["eligible"] else "no",
            str(n["allocations"]),
            f"{n['cpu_mhz']}/{n['cpu_total_mhz']} MHz",
            f"{n['memory_mib']}/{n['memory_total_mib']} MiB",
            ",".join(n["roles"]) or "-",
        )
    return table


@app.command("nodes")
def nodes(as_json: JsonOpt = False) -> None:
    """The cluster's nodes: state, eligibility, running allocations, CPU and memory allocated."""
    found = api_call(lambda c: c.get("/nodes"))
    if as_json:
        return print_json(found)
    if not found:
        err.print("Nomad knows no client node.")
        return None
    out.print(nodes_table(found))
    return None


def _undo(name: str) -> None:
    err.print(f"To put it back in service: `billowin nodes:activate {name}`.", highlight=False)


def follow_drain(client: ApiClient, node: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
    """Look at a draining node until its drain ends and what it stopped is gone (or it goes
    down, or the drain is canceled), printing what is left."""
    left = node["allocations_left"]

    def going_on(node: dict[str, Any]) -> bool:
        if node["status"] == "down" or node.get("last_drain") == "canceled":
            return False
        # A drain is over once every allocation was told to stop; they take a moment to go.
        return bool(node["draining"] or node["allocations_left"])

    with err.status(f"{node['name']}: draining…", spinner="dots") as status:
        while going_on(node):
            time.sleep(POLL_SECONDS)
            node = client.get(_path(node["id"]))
            if node["allocations_left"] != left and not quiet:
                left = node["allocations_left"]
                at = f"{datetime.now():%H:%M:%S}"
                err.print(f"  [dim]{at}[/] {left} allocation(s) left to move", highlight=False)
            status.update(f"{node['name']}: draining, {node['allocations_left']} allocation(s) left…")
    return node


@app.command("nodes:drain")
def nodes_drain(
    node: NodeArg,
    deadline: Annotated[
        str, typer.Option(help="How long allocations have to move (90s, 5m, 1h); what is left then stops.")
    ] = DEFAULT_DEADLINE,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Start the drain and return.")] = False,
    last_node: Annotated[
        bool, typer.Option("--last-node", help="Drain it even if no other node can take its apps: they stop.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Drain a node: nothing new goes there, and what runs there moves to other nodes."""
    try:
        parse_deadline(deadline)  # the API checks it too; this says so before anything is sent
    except BillowinError as exc:
        fail(exc)
    body = {"deadline": deadline, "last_node": last_node}

    def drain(client: ApiClient) -> dict[str, Any]:
        started: dict[str, Any] = client.post(f"{_path(node)}/drain", json=body)
        name = started["name"]
        err.print(
            f"Draining {name} ({started['id'][:8]}): nothing new is placed there, and its "
            f"{started['allocations_left']} allocation(s) move to other nodes; what is left after "
            f"{deadline} is stopped.",
            highlight=False,
        )
        if no_wait:
            err.print("Follow it with `billowin nodes`.", highlight=False)
            return started
        try:
            return follow_drain(client, started, quiet=as_json)
        except KeyboardInterrupt:
            err.print(f"The drain of {name} goes on; follow it with `billowin nodes`.", highlight=False)
            _undo(name)
            raise typer.Exit(130) from None

    done = api_call(drain)
    if as_json:
        print_json(done)
    name = done["name"]
    if no_wait:
        _undo(name)
        return
    if done["status"] == "down":
        err.print(f"[bold red]{name} went down while draining[/]: Nomad reschedules what it ran elsewhere.")
        err.print(f"Take it out with `billowin nodes:remove {name} --confirm {name}`.", highlight=False)
        raise typer.Exit(1)
    if done.get("last_drain") == "canceled":
        state = done["state"]
        err.print(f"[bold red]The drain of {name} was canceled[/] (`nodes:activate`?): it is {state}.")
        raise typer.Exit(1)
    err.print(f"[green]{name} is drained[/]: nothing runs there, and nothing new is placed there.")
    _undo(name)
    remove = f"billowin nodes:remove {name} --confirm {name}"
    err.print(f"To take it out for good: stop its Nomad agent, then `{remove}`.", highlight=False)


@app.command("nodes:activate")
def nodes_activate(node: NodeArg, as_json: JsonOpt = False) -> None:
    """Make a node eligible for new allocations again (ending its drain, if one is under way)."""
    done = api_call(lambda c: c.post(f"{_path(node)}/activate"))
    if as_json:
        return print_json(done)
    err.print(
        f"[green]{done['name']} is {done['state']}[/]: new allocations may be placed there again; what "
        "moved away stays where it went until it is rescheduled (a deploy, a scale or a restart).",
        highlight=False,
    )
    return None


@app.command("nodes:remove")
def nodes_remove(
    node: NodeArg,
    confirm: Annotated[str, typer.Option(help="NODE again, to confirm.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Take a down or drained node out of the cluster for good (Nomad purges it; its Consul agent leaves)."""
    if confirm != node:
        confirm = typer.prompt(f"This takes {node} out of the cluster for good. Type {node} again to confirm")
    if confirm != node:
        fail(BillowinError(f"{confirm!r} is not {node!r}: nothing was removed", hint="Type NODE exactly."))
    done = api_call(lambda c: c.request("DELETE", _path(node), params={"confirm": confirm}))
    if as_json:
        return print_json(done)
    consul = {"left": "its agent left", "not-a-member": "it was no member", "failed": "see below"}
    err.print(
        f"[green]Removed[/] {done['name']} ({done['id'][:8]}): Nomad forgot it; Consul: "
        f"{consul.get(done['consul'], done['consul'])}.",
        highlight=False,
    )
    for warning in done["warnings"]:
        err.print(f"[yellow]warning:[/] {warning['message']}", highlight=False)
        if warning.get("hint"):
            err.print(f"[yellow]what to do:[/] {warning['hint']}", highlight=False)
    return None
