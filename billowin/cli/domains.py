"""Custom domains: ``domains``, ``domains:add``, ``domains:remove``.

Adding or removing one is a rollout of the routes; ``--wait`` (the default) follows it.
"""

from __future__ import annotations

from billowin.cli.main import AppArg, JsonOpt, app
from billowin.cli.output import api_call, finish_job, out, print_json


@app.command("domains")
def domains(name: AppArg, as_json: JsonOpt = False) -> None:
    """The app's custom domains (it always answers at <app>.<domain> too)."""
    found = api_call(lambda c: c.get(f"/apps/{name}/domains"))
    if as_json:
        return print_json(found)
    for d in found:
        out.print(d)
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
