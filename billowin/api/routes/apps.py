"""``/apps``: the Heroku-style app API (apps, config vars, domains, ps, releases, deploys, logs, run).

Everything here needs an API token. Changes that roll something out answer
``202`` with the pipeline job; follow it with ``GET /apps/{app}/deploys/{id}?wait=…``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field, SecretStr

from billowin.api.deps import SystemDep, require_token
from billowin.apps.store import App, DeployOn
from billowin.errors import BillowinError, InvalidInput
from billowin.pipeline.jobs import Job
from billowin.platform import AppInfo, ConfigVars, InstanceStatus, Platform
from billowin.release.store import Release

router = APIRouter(prefix="/apps", tags=["apps"], dependencies=[Depends(require_token)])
T = TypeVar("T")


def platform(system: SystemDep) -> Platform:
    return system.platform


PlatformDep = Annotated[Platform, Depends(platform)]


class AppCreate(BaseModel):
    name: str
    repository: str = Field(description="What to build: an https:// URL or a path on the Billowin host.")
    github_repo: str | None = Field(None, description="owner/name on GitHub, to match webhooks.")
    branch: str = "main"
    deploy_on: DeployOn = DeployOn.PUSH
    ci_workflow: str | None = None
    webhook_secret: SecretStr | None = Field(None, description="Per-app GitHub webhook secret (write-only).")
    domains: list[str] = Field(default_factory=list)


class AppSummary(BaseModel):
    name: str
    url: str
    repository: str
    branch: str
    deploy_on: str


class ConfigChange(BaseModel):
    set: dict[str, str] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)


class ConfigChanged(BaseModel):
    version: int
    job: Job | None = Field(description="The rollout of the new config; null when nothing changed.")


class DomainAdd(BaseModel):
    domain: str


class Scale(BaseModel):
    counts: dict[str, int] = Field(description='Instances per process type, e.g. {"web": 2, "worker": 1}.')


class Restart(BaseModel):
    process: str | None = Field(None, description="Only this process type; all when empty.")


class Rollback(BaseModel):
    release: int | None = Field(None, description="The release number; default: the previous live one.")


class DeployRequest(BaseModel):
    sha: str | None = Field(
        None, description="A full commit SHA of the app's repository to build and deploy."
    )
    image: str | None = Field(None, description="Or an already-built image reference to deploy.")


class RunRequest(BaseModel):
    command: str = Field(description="Run by the image's `sh -c`, inside a one-off container.")
    timeout: float = Field(600, gt=0, le=3600)


async def _off(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def _drain(items: Iterator[T], stop: threading.Event | None = None) -> AsyncIterator[T]:
    """Iterate a blocking iterator from a thread; stops it when the client goes away."""
    done = object()
    try:
        while True:
            item = await asyncio.to_thread(next, items, done)
            if item is done:
                return
            yield item  # type: ignore[misc]
    finally:
        if stop is not None:
            stop.set()


# -- apps ---------------------------------------------------------------------
@router.post("", status_code=201, response_model=AppInfo)
async def create_app(body: AppCreate, p: PlatformDep) -> AppInfo:
    try:
        app = App(**body.model_dump(exclude={"webhook_secret"}), webhook_secret=body.webhook_secret)
    except ValueError as exc:
        raise InvalidInput(str(exc).splitlines()[-1] if str(exc) else "invalid app") from exc
    await _off(p.create, app)
    info: AppInfo = await _off(p.info, app.name)
    return info


@router.get("", response_model=list[AppSummary])
async def list_apps(p: PlatformDep) -> list[AppSummary]:
    apps = await _off(p.apps.all)
    return [
        AppSummary(
            name=a.name,
            url=p.url(a.name),
            repository=a.github_repo or a.repository,
            branch=a.branch,
            deploy_on=a.deploy_on.value,
        )
        for a in apps
    ]


@router.get("/{app}", response_model=AppInfo)
async def app_info(app: str, p: PlatformDep) -> AppInfo:
    info: AppInfo = await _off(p.info, app)
    return info


@router.delete("/{app}", status_code=204)
async def destroy_app(
    app: str, p: PlatformDep, confirm: Annotated[str, Query(description="The app's name, again.")] = ""
) -> Response:
    if confirm != app:
        raise InvalidInput(
            f"destroying {app} removes its instances, images, config and history",
            hint=f"Confirm with ?confirm={app} (CLI: `billowin apps:destroy {app} --confirm {app}`).",
        )
    await _off(p.destroy, app)
    return Response(status_code=204)


# -- config vars -------------------------------------------------------------------
@router.get("/{app}/config", response_model=ConfigVars)
async def config(app: str, p: PlatformDep, reveal: bool = False) -> ConfigVars:
    """The app's config var names; values only with ``reveal=true``."""
    found: ConfigVars = await _off(p.config_vars, app, reveal=reveal)
    return found


@router.patch("/{app}/config", status_code=202, response_model=ConfigChanged)
async def change_config(app: str, body: ConfigChange, p: PlatformDep) -> ConfigChanged:
    job = await _off(p.change_config, app, body.set, body.unset)
    version = (await _off(p.config_vars, app)).version
    return ConfigChanged(version=version, job=job)


# -- domains ---------------------------------------------------------------------
@router.get("/{app}/domains", response_model=list[str])
async def domains(app: str, p: PlatformDep) -> list[str]:
    found: App = await _off(p.apps.get, app)
    return found.domains


@router.post("/{app}/domains", status_code=202, response_model=Job)
async def add_domain(app: str, body: DomainAdd, p: PlatformDep) -> Job:
    job: Job = await _off(p.add_domain, app, body.domain)
    return job


@router.delete("/{app}/domains/{domain}", status_code=202, response_model=Job)
async def remove_domain(app: str, domain: str, p: PlatformDep) -> Job:
    job: Job = await _off(p.remove_domain, app, domain)
    return job


# -- processes -------------------------------------------------------------------
@router.get("/{app}/ps", response_model=list[InstanceStatus])
async def ps(app: str, p: PlatformDep) -> list[InstanceStatus]:
    found: list[InstanceStatus] = await _off(p.ps, app)
    return found


@router.post("/{app}/ps/scale", response_model=dict[str, int])
async def scale(app: str, body: Scale, p: PlatformDep) -> dict[str, int]:
    done: dict[str, int] = await _off(p.scale, app, body.counts)
    return done


@router.post("/{app}/ps/restart", response_model=dict[str, int])
async def restart(app: str, body: Restart, p: PlatformDep) -> dict[str, int]:
    return {"restarted": await _off(p.restart, app, body.process)}


# -- releases and deploys ------------------------------------------------------------
@router.get("/{app}/releases", response_model=list[Release])
async def releases(app: str, p: PlatformDep) -> list[Release]:
    found: list[Release] = await _off(p.releases, app)
    return found


@router.post("/{app}/releases/rollback", status_code=202, response_model=Job)
async def rollback(app: str, body: Rollback, p: PlatformDep) -> Job:
    job: Job = await _off(p.rollback, app, body.release)
    return job


@router.post("/{app}/deploys", status_code=202, response_model=Job)
async def deploy(app: str, body: DeployRequest, p: PlatformDep) -> Job:
    job: Job = await _off(p.deploy, app, sha=body.sha, image=body.image)
    return job


@router.get("/{app}/deploys", response_model=list[Job])
async def deploys(app: str, p: PlatformDep) -> list[Job]:
    await _off(p.apps.get, app)
    found: list[Job] = await _off(p.jobs.list, app)
    return found


@router.get("/{app}/deploys/{job_id}", response_model=Job)
async def deploy_status(
    app: str,
    job_id: str,
    p: PlatformDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Long-poll: seconds to wait for news.")] = 0,
    seen: Annotated[int, Query(description="Steps the caller has seen; answer once there are more.")] = -1,
) -> Job:
    job: Job = await _off(p.job, app, job_id, steps_seen=seen, wait=wait)
    return job


@router.get("/{app}/deploys/{job_id}/log", response_class=PlainTextResponse)
async def deploy_log(app: str, job_id: str, p: PlatformDep) -> str:
    text: str = await _off(p.build_log, app, job_id)
    return text


# -- logs and one-off runs -------------------------------------------------------------
@router.get("/{app}/logs", response_class=StreamingResponse)
async def logs(
    app: str,
    p: PlatformDep,
    lines: Annotated[int, Query(ge=0, le=10_000)] = 100,
    tail: Annotated[bool, Query(description="Keep streaming new lines (chunked).")] = False,
    process: str | None = None,
    format: Annotated[str, Query(pattern="^(text|ndjson)$")] = "text",
) -> StreamingResponse:
    """Recent lines of every instance (stdout and stderr, tagged ``web.1``); ``tail`` streams on."""
    stop = threading.Event()
    items = await _off(p.log_lines, app, lines=lines, follow=tail, process=process, stop=stop)

    async def body() -> AsyncIterator[str]:
        try:
            async for line in _drain(items, stop):
                yield (json.dumps(line.to_dict()) if format == "ndjson" else line.render()) + "\n"
        except BillowinError as exc:  # the answer has started: end it with the reason
            yield f"[billowin] the log stream ended: {exc.message}\n"

    media = "application/x-ndjson" if format == "ndjson" else "text/plain; charset=utf-8"
    return StreamingResponse(body(), media_type=media, headers={"Cache-Control": "no-cache"})


@router.post("/{app}/runs", response_class=StreamingResponse)
async def run(app: str, body: RunRequest, p: PlatformDep) -> StreamingResponse:
    """Run a command in a one-off container of the current release; streams NDJSON events.

    Each line is ``{"stream": "stdout"|"stderr", "text": …}``; the last is ``{"exit_code": N}``.
    """
    events = await _off(p.run, app, body.command, timeout=body.timeout)

    async def stream() -> AsyncIterator[str]:
        try:
            async for event in _drain(events):
                if event.exit_code is not None:
                    yield json.dumps({"exit_code": event.exit_code}) + "\n"
                else:
                    yield json.dumps({"stream": event.stream, "text": event.text}) + "\n"
        except BillowinError as exc:  # the answer has started: report it in the stream
            yield json.dumps({"stream": "stderr", "text": f"[billowin] {exc.message}"}) + "\n"
            yield json.dumps({"exit_code": 1}) + "\n"

    return StreamingResponse(stream(), media_type="application/x-ndjson")
