"""Custom domains and certificates: ``domains``, ``domains:add``, ``domains:remove``, ``certs``,
``certs:add``, ``certs:remove`` and ``certs:redirect``.

Adding or removing one is a rollout of the routes; ``--wait`` (the default) follows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, fail, finish_job, out, print_json, when
from billowin.errors import InvalidInput

# A certificate file or a key file is a few kilobytes; anything far larger is the wrong file.
PEM_LIMIT = 65536


@app.command("domains")
def domains(name: AppArg, as_json: JsonOpt = False) -> None:
    """The app's custom domains (it always answers at <app>.<domain> too)."""
    found = api_call(lambda c: c.get(f"/apps/{name}/domains"))
    if as_json:
        return print_json(found)
    status = {row["name"]: row["status"] for row in api_call(lambda c: c.get(f"/apps/{name}/certs"))}
    for d in found:
        out.print(f"{d}  https: {status.get(d, 'none')}")
    return None


@app.command("certs")
def certs(name: AppArg, as_json: JsonOpt = False) -> None:
    """Each of the app's names with its certificate: issuer, expiry, status and last error."""
    rows = api_call(lambda c: c.get(f"/apps/{name}/certs"))
    if as_json:
        return print_json(rows)
    show_certs(rows)
    redirect = api_call(lambda c: c.get(f"/apps/{name}/redirect"))["enabled"]
    out.print(f"HTTP to HTTPS redirect: {'on' if redirect else 'off'}")
    return None


def show_certs(rows: list[dict[str, str]]) -> None:
    for row in rows:
        line = f"{row['name']}  {row['status']}"
        if row["not_after"]:
            line += f"  until {when(row['not_after'])}  {row['issuer']}"
        out.print(line)
        if row["last_error"]:
            out.print(f"  last error: {row['last_error']}")
            if row["hint"]:
                out.print(f"  {row['hint']}")
            if row["next_attempt"]:
                out.print(f"  next attempt: {when(row['next_attempt'])}")


def read_pem(path: Path, what: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(PEM_LIMIT + 1)
    except OSError as exc:
        fail(InvalidInput(f"cannot read {what} {path}: {exc.strerror}"))
    if len(data) > PEM_LIMIT:
        fail(InvalidInput(f"{path} is larger than a {what} file can be ({PEM_LIMIT} bytes)"))
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        fail(InvalidInput(f"{path} is not a PEM {what}", hint="PEM is text: '-----BEGIN ...-----'."))


@app.command("certs:add")
def certs_add(
    name: AppArg,
    cert: Annotated[Path, typer.Argument(help="PEM certificate chain, leaf first.")],
    key: Annotated[Path, typer.Argument(help="Its PEM private key, without a passphrase.")],
    as_json: JsonOpt = False,
) -> None:
    """Serve your own certificate for the app's names it covers (Billowin then never renews them)."""
    body = {"chain": read_pem(cert, "certificate"), "key": read_pem(key, "key")}
    rows = api_call(lambda c: c.post(f"/apps/{name}/certs", json=body))
    if as_json:
        return print_json(rows)
    show_certs(rows)
    return None


@app.command("certs:remove")
def certs_remove(name: AppArg, host: Annotated[str, typer.Argument(help="One of the app's names.")]) -> None:
    """Remove the certificate of one of the app's names (with automatic HTTPS, a new one is ordered)."""
    api_call(lambda c: c.request("DELETE", f"/apps/{name}/certs/{host}"))
    out.print(f"removed the certificate of {host}")


@app.command("certs:redirect")
def certs_redirect(
    name: AppArg, state: Annotated[str, typer.Argument(help="on or off", metavar="on|off")]
) -> None:
    """Switch the HTTP to HTTPS redirect of the app on or off."""
    if state not in ("on", "off"):
        fail(InvalidInput(f"{state!r} is neither on nor off", hint=f"billowin certs:redirect {name} off"))
    api_call(lambda c: c.request("PUT", f"/apps/{name}/redirect", json={"enabled": state == "on"}))
    out.print(f"HTTP to HTTPS redirect for {name}: {state}")


@app.command("domains:add")
def domains_add(name: AppArg, domain: str, wait: bool = True, as_json: JsonOpt = False) -> None:
    """Route a custom domain to the app."""
    api_call(
        lambda c: finish_job(c, name, c.post(f"/apps/{name}/domains", json={"domain": domain}), wait, as_json)
    )


@app.command("domains:remove")
def domains_remove(name: AppArg, domain: str, wait: bool = True, as_json: JsonOpt = False) -> None:
    """Stop routing a custom domain to the app."""
    api_call(
        lambda c: finish_job(c, name, c.request("DELETE", f"/apps/{name}/domains/{domain}"), wait, as_json)
    )
