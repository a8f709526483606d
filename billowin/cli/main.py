"""The ``billowin`` typer app, and the argument types its command modules share.

Each command module (``platform``, ``session``, ``apps``…) adds its commands
with ``@app.command(...)`` when it is imported; ``billowin.cli`` imports them
in the order ``billowin --help`` lists them.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Billowin: a self-hosted Heroku on Nomad, Consul, Docker and HAProxy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

AppArg = Annotated[str, typer.Argument(metavar="APP", help="The app's name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")]
