"""``login`` and ``whoami``: which API the CLI talks to, with which token."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import SecretStr

from billowin.cli.client import ApiClient, ClientConfig, config_path, load_config
from billowin.cli.main import app
from billowin.cli.output import err, fail
from billowin.errors import BillowinError


@app.command("login")
def login(
    api_url: Annotated[str, typer.Option(help="The Billowin API, e.g. https://billowin.example.com.")] = "",
    token: Annotated[str, typer.Option(help="An API token (from `billowin tokens:create`).")] = "",
) -> None:
    """Save the API address and token for later commands (checked against the API first)."""
    current = load_config()
    url = api_url or current.api_url
    secret = token or typer.prompt("API token", hide_input=True)
    config = ClientConfig(api_url=url, api_token=SecretStr(secret))
    try:
        with ApiClient(config) as client:
            client.get("/apps")
    except BillowinError as exc:
        fail(exc)
    path = config.save()
    err.print(f"[green]Logged in[/] to {url}; saved to {path} (mode 0600).")


@app.command("whoami")
def whoami() -> None:
    """Which API the CLI talks to, and where its login is kept."""
    config = load_config()
    print(f"API: {config.api_url}")
    print(f"Token: {'set' if config.api_token else 'not set'}")
    print(f"Login file: {config_path()}")
