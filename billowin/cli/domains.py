"""Custom domains and certificates: ``domains``, ``domains:add``, ``domains:remove``, ``certs``.

Adding or removing one is a rollout of the routes; ``--wait`` (the default) follows it.
"""

from __future__ import annotations

from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, finish_job, out, print_json, when


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
    return None


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
