"""What the app's instances say and do: ``logs`` (``--tail`` streams) and ``run``
(a one-off command in a fresh container, its output streamed back)."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Annotated, Any

import typer

from billowin.cli.client import ApiClient
from billowin.cli.main import AppArg, app
from billowin.cli.output import api_call, err
from billowin.cli.shell import interact, is_terminal


@app.command("logs")
def logs(
    name: AppArg,
    tail: Annotated[bool, typer.Option("--tail", "-t", help="Keep streaming new lines.")] = False,
    num: Annotated[int, typer.Option("--num", "-n", help="How many recent lines.")] = 100,
    process: Annotated[str | None, typer.Option("--process", "-p", help="Only this process type.")] = None,
) -> None:
    """Recent log lines of every instance, merged; --tail keeps streaming (Ctrl-C stops)."""
    params: dict[str, Any] = {"lines": num, "tail": tail}
    if process:
        params["process"] = process

    def stream(c: ApiClient) -> None:
        for line in c.stream_lines("GET", f"/apps/{name}/logs", params=params):
            print(line, flush=True)

    try:
        api_call(stream)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def shell_line(argv: list[str]) -> str:
    """What the container's ``sh -c`` runs for ``argv``: one argument as typed, several quoted."""
    return argv[0] if len(argv) == 1 else shlex.join(argv)


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    name: AppArg,
    command: Annotated[list[str], typer.Argument(help="The command, e.g. -- python3 manage.py migrate")],
    timeout: Annotated[float, typer.Option(help="Stop it after this many seconds.")] = 600,
    interactive: Annotated[
        bool | None,
        typer.Option(
            "--interactive/--no-interactive",
            "-i",
            help="Attach stdin (and a terminal, when this is one). The default on a terminal.",
        ),
    ] = None,
) -> None:
    """Run a one-off command in a fresh container of the current release, with its config vars.

    Several arguments run as exactly those arguments (each one quoted for the container's
    shell); a single argument is a shell command line, so `run APP -- 'echo $HOME; ls'` works.
    On a terminal it is interactive (`billowin run APP -- bash`); `-i` attaches piped stdin.
    """
    text = shell_line(command)
    if interactive if interactive is not None else is_terminal():
        if not is_terminal():
            err.print(f"Running `{text}` on {name}…", highlight=False)
        params = {"command": text, "timeout": max(10, min(int(timeout), 86400))}
        raise typer.Exit(interact(f"/apps/{name}/shell", params))
    exit_code = 1

    def stream(c: ApiClient) -> None:
        nonlocal exit_code
        err.print(f"Running `{text}` on {name}…", highlight=False)
        for raw in c.stream_lines("POST", f"/apps/{name}/runs", json={"command": text, "timeout": timeout}):
            event = json.loads(raw)
            if "exit_code" in event:
                exit_code = int(event["exit_code"])
            elif event["stream"] == "stderr":
                print(event["text"], file=sys.stderr, flush=True)
            else:
                print(event["text"], flush=True)

    api_call(stream)
    raise typer.Exit(exit_code)
