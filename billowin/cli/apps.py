"""The Heroku-style app verbs of the ``billowin`` CLI, spoken over the HTTP API.

``apps:create``, ``config:set``, ``ps:scale``, ``releases``, ``rollback``,
``logs --tail``, ``run``, ``deploy --wait``… Each is a thin call to the API
(``billowin.client``); long work shows live progress; ``--json`` prints what
the API answered, for scripts. Errors are one plain line and what to do.
"""

from __future__ import annotations

import json
import sys
import webbrowser
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from billowin.apps.store import DeployOn
from billowin.cli.client import ApiClient, ClientConfig, config_path, load_config
from billowin.config.vars import parse_assignments
from billowin.errors import BillowinError

err = Console(stderr=True)
out = Console()

AppArg = Annotated[str, typer.Argument(metavar="APP", help="The app's name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")]
TERMINAL = {"live", "failed", "superseded"}


def fail(exc: BillowinError) -> NoReturn:
    err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
    if exc.hint:
        err.print(f"[yellow]what to do:[/] {exc.hint}", highlight=False)
    raise typer.Exit(1)


def api_call(fn: Callable[[ApiClient], Any]) -> Any:
    try:
        with ApiClient(load_config()) as client:
            return fn(client)
    except BillowinError as exc:
        fail(exc)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def follow_job(client: ApiClient, app: str, job: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
    """Print a pipeline job's steps as they happen, until it is live, failed or superseded."""
    seen = 0
    with err.status(f"{app}: {job['state']}…", spinner="dots") as status:
        while True:
            for step in job["steps"][seen:]:
                if not quiet:
                    err.print(f"  [dim]{step['at'][11:19]}[/] {step['message']}", highlight=False)
            seen = len(job["steps"])
            status.update(f"{app}: {job['state']}…")
            if job["state"] in TERMINAL:
                return job
            job = client.get(f"/apps/{app}/deploys/{job['id']}", params={"wait": 20, "seen": seen})


def finish_job(client: ApiClient, app: str, job: dict[str, Any] | None, wait: bool, as_json: bool) -> None:
    """Follow (or not) a rollout the API queued, and exit non-zero unless it went live."""
    if job is None:
        err.print("Nothing changed.")
        return
    if not wait:
        if as_json:
            print_json(job)
        else:
            err.print(f"Queued job {job['id']}: follow it with `billowin deploy:status {app} {job['id']}`")
        return
    job = follow_job(client, app, job, quiet=as_json)
    if as_json:
        print_json(job)
    if job["state"] == "live":
        err.print(f"[green]{app} {job.get('release') or ''} is live[/]: {job['steps'][-1]['message']}")
        return
    err.print(f"[bold red]{app}: {job['state']}[/]: {job.get('reason') or job['steps'][-1]['message']}")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command()
    def login(
        api_url: Annotated[
            str, typer.Option(help="The Billowin API, e.g. https://billowin.example.com.")
        ] = "",
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

    # -- apps -------------------------------------------------------------------
    @app.command("apps")
    def apps_list(as_json: JsonOpt = False) -> None:
        """List apps."""
        apps = api_call(lambda c: c.get("/apps"))
        if as_json:
            return print_json(apps)
        table = Table("app", "url", "repository", "branch", "deploys on")
        for a in apps:
            table.add_row(a["name"], a["url"], a["repository"], a["branch"], a["deploy_on"])
        out.print(table)
        return None

    @app.command("apps:create")
    def apps_create(
        name: Annotated[str, typer.Argument(help="A DNS label: the app answers at <name>.<domain>.")],
        repository: Annotated[str, typer.Option(help="What to build: an https:// URL or a path.")],
        github_repo: Annotated[str | None, typer.Option(help="owner/name on GitHub, for webhooks.")] = None,
        branch: Annotated[str, typer.Option(help="The branch to follow.")] = "main",
        deploy_on: Annotated[DeployOn, typer.Option(help="push: every push; ci: after CI passes.")] = (
            DeployOn.PUSH
        ),
        ci_workflow: Annotated[str | None, typer.Option(help="Only this GitHub Actions workflow.")] = None,
        domain: Annotated[list[str] | None, typer.Option(help="A custom domain (repeatable).")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Create an app that follows a repository's branch."""
        body = {
            "name": name,
            "repository": repository,
            "github_repo": github_repo,
            "branch": branch,
            "deploy_on": deploy_on.value,
            "ci_workflow": ci_workflow,
            "domains": domain or [],
        }
        info = api_call(lambda c: c.post("/apps", json=body))
        if as_json:
            return print_json(info)
        err.print(f"[green]Created[/] {name}: {info['url']}")
        err.print(
            f"Deploy: `billowin deploy {name} --sha <commit> --wait`, or a GitHub webhook to /hooks/github."
        )
        return None

    @app.command("apps:info")
    def apps_info(name: AppArg, as_json: JsonOpt = False) -> None:
        """An app's URL, current release and processes."""
        info = api_call(lambda c: c.get(f"/apps/{name}"))
        if as_json:
            return print_json(info)
        release = info.get("release") or {}
        table = Table(show_header=False, title=f"=== {name}")
        table.add_row("URL", info["url"])
        table.add_row("Repository", f"{info['github_repo'] or info['repository']} ({info['branch']})")
        table.add_row("Deploys on", info["deploy_on"])
        table.add_row("Domains", ", ".join(info["domains"]) or "-")
        table.add_row("Release", f"v{release['number']} {release['image']}" if release else "not deployed")
        for p in info["processes"]:
            table.add_row(f"Process {p['process']}", f"{p['running']}/{p['desired']} running")
        out.print(table)
        return None

    @app.command("apps:destroy")
    def apps_destroy(
        name: AppArg,
        confirm: Annotated[str, typer.Option(help="The app's name again, to confirm.")] = "",
    ) -> None:
        """Destroy an app: its instances, routes, images, config vars and history."""
        if confirm != name:
            confirm = typer.prompt(f"This destroys {name} for good. Type its name to confirm")
        api_call(lambda c: c.request("DELETE", f"/apps/{name}", params={"confirm": confirm}))
        err.print(f"[green]Destroyed[/] {name}.")

    @app.command("open")
    def open_app(name: AppArg) -> None:
        """Open the app in a browser (prints its URL)."""
        info = api_call(lambda c: c.get(f"/apps/{name}"))
        print(info["url"])
        webbrowser.open(info["url"])

    # -- config vars ------------------------------------------------------------------
    @app.command("config")
    def config(
        name: AppArg,
        reveal: Annotated[bool, typer.Option("--reveal", help="Also print the values.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """The app's config var names (values only with --reveal)."""
        found = api_call(lambda c: c.get(f"/apps/{name}/config", params={"reveal": reveal}))
        if as_json:
            return print_json(found)
        err.print(f"=== {name} config vars (version {found['version']})")
        for key, value in found["values"].items():
            out.print(f"{key}: {value if reveal else '(hidden; --reveal shows it)'}", markup=False)
        return None

    def _change(name: str, set_: dict[str, str], unset: list[str], wait: bool, as_json: bool) -> None:
        def call(c: ApiClient) -> None:
            changed = c.request("PATCH", f"/apps/{name}/config", json={"set": set_, "unset": unset})
            err.print(f"{name}: config version {changed['version']}; rolling it out as a new release")
            finish_job(c, name, changed["job"], wait, as_json)

        api_call(call)

    @app.command("config:set")
    def config_set(
        name: AppArg,
        assignments: Annotated[list[str], typer.Argument(metavar="KEY=VALUE...")],
        wait: Annotated[bool, typer.Option(help="Wait until the new release is live.")] = True,
        as_json: JsonOpt = False,
    ) -> None:
        """Set config vars and roll them out as a new release."""
        try:
            values = parse_assignments(assignments)
        except BillowinError as exc:
            fail(exc)
        _change(name, values, [], wait, as_json)

    @app.command("config:unset")
    def config_unset(
        name: AppArg,
        keys: Annotated[list[str], typer.Argument(metavar="KEY...")],
        wait: Annotated[bool, typer.Option(help="Wait until the new release is live.")] = True,
        as_json: JsonOpt = False,
    ) -> None:
        """Remove config vars and roll that out as a new release."""
        _change(name, {}, keys, wait, as_json)

    # -- domains ----------------------------------------------------------------------
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
            lambda c: finish_job(
                c, name, c.post(f"/apps/{name}/domains", json={"domain": domain}), wait, as_json
            )
        )

    @app.command("domains:remove")
    def domains_remove(name: AppArg, domain: str, wait: bool = True, as_json: JsonOpt = False) -> None:
        """Stop routing a custom domain to the app."""
        api_call(
            lambda c: finish_job(
                c, name, c.request("DELETE", f"/apps/{name}/domains/{domain}"), wait, as_json
            )
        )

    # -- processes --------------------------------------------------------------------------
    @app.command("ps")
    def ps(name: AppArg, as_json: JsonOpt = False) -> None:
        """Every instance: its state, release, restarts and age."""
        found = api_call(lambda c: c.get(f"/apps/{name}/ps"))
        if as_json:
            return print_json(found)
        table = Table("instance", "state", "release", "restarts", "age", "alloc")
        for i in found:
            age = i["age_seconds"]
            shown = (
                ""
                if age is None
                else f"{age // 3600}h{age % 3600 // 60:02d}m"
                if age >= 3600
                else f"{age // 60}m{age % 60:02d}s"
            )
            table.add_row(i["name"], i["state"], i["release"] or "", str(i["restarts"]), shown, i["alloc"])
        out.print(table)
        return None

    @app.command("ps:scale")
    def ps_scale(
        name: AppArg,
        counts: Annotated[list[str], typer.Argument(metavar="TYPE=N...", help="e.g. web=2 worker=1")],
    ) -> None:
        """Set how many instances of each process type run."""
        wanted: dict[str, int] = {}
        for item in counts:
            process, _, number = item.partition("=")
            if not process or not number.isdigit():
                fail(
                    BillowinError(f"{item!r} is not TYPE=N", hint="For example: billowin ps:scale APP web=2")
                )
            wanted[process] = int(number)
        done = api_call(lambda c: c.post(f"/apps/{name}/ps/scale", json={"counts": wanted}))
        err.print("Scaled " + ", ".join(f"{k} to {v}" for k, v in done.items()))

    @app.command("ps:restart")
    def ps_restart(
        name: AppArg, process: Annotated[str | None, typer.Argument(help="Only this process type.")] = None
    ) -> None:
        """Restart the app's instances (all, or one process type)."""
        done = api_call(lambda c: c.post(f"/apps/{name}/ps/restart", json={"process": process}))
        err.print(f"Restarted {done['restarted']} instance(s) of {name}.")

    # -- releases, deploys ---------------------------------------------------------------------
    @app.command("releases")
    def releases(name: AppArg, as_json: JsonOpt = False) -> None:
        """The app's releases, newest first: SHA, image, config version, status, when and why."""
        found = api_call(lambda c: c.get(f"/apps/{name}/releases"))
        if as_json:
            return print_json(found)
        table = Table("release", "status", "sha", "image", "config", "when", "cause")
        for r in reversed(found):
            cause = r.get("cause") or (f"rollback to {r['rollback_of']}" if r.get("rollback_of") else "")
            if r["status"] == "failed" and r.get("description"):
                cause = f"{cause}: {r['description']}" if cause else r["description"]
            table.add_row(
                f"v{r['number']}",
                r["status"],
                (r.get("sha") or "")[:7],
                r["image"],
                f"v{r['config_version']}" if r.get("config_version") else "-",
                _when(r["created_at"]),
                cause,
            )
        out.print(table)
        return None

    @app.command("rollback")
    def rollback(
        name: AppArg,
        release: Annotated[str | None, typer.Argument(help="vN; default: the previous live release.")] = None,
        wait: Annotated[bool, typer.Option(help="Wait until it is live.")] = True,
        as_json: JsonOpt = False,
    ) -> None:
        """Roll back to an earlier release (its image and its config vars), as a new release."""
        number = None
        if release is not None:
            if not release.removeprefix("v").isdigit():
                fail(
                    BillowinError(
                        f"{release!r} is not a release like v3", hint=f"See `billowin releases {name}`."
                    )
                )
            number = int(release.removeprefix("v"))
        api_call(
            lambda c: finish_job(
                c, name, c.post(f"/apps/{name}/releases/rollback", json={"release": number}), wait, as_json
            )
        )

    @app.command("deploy")
    def deploy(
        name: AppArg,
        sha: Annotated[str | None, typer.Option(help="The full commit SHA to build and deploy.")] = None,
        image: Annotated[str | None, typer.Option(help="Or an image that is already built.")] = None,
        wait: Annotated[
            bool, typer.Option(help="Follow it; exit 1 unless it ends up live and healthy.")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Deploy a commit (built first) or an image. With --wait, exits non-zero unless it goes live."""
        api_call(
            lambda c: finish_job(
                c, name, c.post(f"/apps/{name}/deploys", json={"sha": sha, "image": image}), wait, as_json
            )
        )

    @app.command("deploy:status")
    def deploy_status(name: AppArg, job_id: str, wait: bool = True, as_json: JsonOpt = False) -> None:
        """Follow a deploy (or any rollout) the API queued."""
        api_call(lambda c: finish_job(c, name, c.get(f"/apps/{name}/deploys/{job_id}"), wait, as_json))

    @app.command("builds")
    def builds(name: AppArg, as_json: JsonOpt = False) -> None:
        """Recent deploys and builds of the app (the pipeline's jobs)."""
        found = api_call(lambda c: c.get(f"/apps/{name}/deploys"))
        if as_json:
            return print_json(found)
        table = Table("job", "kind", "state", "sha", "release", "when", "what happened")
        for j in reversed(found):
            table.add_row(
                j["id"],
                j["kind"],
                j["state"],
                j["sha"][:7],
                j.get("release") or "",
                _when(j["created_at"]),
                j.get("reason") or j["steps"][-1]["message"],
            )
        out.print(table)
        return None

    @app.command("builds:output")
    def builds_output(name: AppArg, job_id: str) -> None:
        """A deploy's steps and its full build log."""
        print(api_call(lambda c: c.get(f"/apps/{name}/deploys/{job_id}/log")))

    # -- logs and run ----------------------------------------------------------------------
    @app.command("logs")
    def logs(
        name: AppArg,
        tail: Annotated[bool, typer.Option("--tail", "-t", help="Keep streaming new lines.")] = False,
        num: Annotated[int, typer.Option("--num", "-n", help="How many recent lines.")] = 100,
        process: Annotated[
            str | None, typer.Option("--process", "-p", help="Only this process type.")
        ] = None,
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

    @app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def run(
        name: AppArg,
        command: Annotated[list[str], typer.Argument(help="The command, e.g. -- python3 manage.py migrate")],
        timeout: Annotated[float, typer.Option(help="Stop it after this many seconds.")] = 600,
    ) -> None:
        """Run a one-off command in a fresh container of the current release, with its config vars."""
        text = " ".join(command)
        exit_code = 1

        def stream(c: ApiClient) -> None:
            nonlocal exit_code
            err.print(f"Running `{text}` on {name}…", highlight=False)
            for raw in c.stream_lines(
                "POST", f"/apps/{name}/runs", json={"command": text, "timeout": timeout}
            ):
                event = json.loads(raw)
                if "exit_code" in event:
                    exit_code = int(event["exit_code"])
                elif event["stream"] == "stderr":
                    print(event["text"], file=sys.stderr, flush=True)
                else:
                    print(event["text"], flush=True)

        api_call(stream)
        raise typer.Exit(exit_code)

    @app.command("whoami")
    def whoami() -> None:
        """Which API the CLI talks to, and where its login is kept."""
        config = load_config()
        print(f"API: {config.api_url}")
        print(f"Token: {'set' if config.api_token else 'not set'}")
        print(f"Login file: {config_path()}")
