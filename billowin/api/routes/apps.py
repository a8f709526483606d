"""``/apps``: the Heroku-style app API (apps, config vars, domains, ps, releases, deploys, logs, run).

Everything here needs an API token, and each route names the ``Action`` it is
(``require``, from ``billowin.api.deps``; the roles are ``billowin.apps.access``).
Changes that roll something out answer ``202`` with the pipeline job; follow it
with ``GET /apps/{app}/deploys/{id}?wait=…``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from billowin.api.answers import AppName, DomainName, JobId
from billowin.api.deps import SystemDep, audit_note, require
from billowin.api.streams import StreamLimiter
from billowin.apps.access import Action, Caller
from billowin.apps.store import BRANCH, GITHUB_REPO, App, DeployOn
from billowin.build.source import redact_url
from billowin.certs.manager import NameCertificate, certificates_of
from billowin.errors import BillowinError, InvalidInput
from billowin.names import APP_NAME_RULE, DNS_LABEL
from billowin.pipeline.jobs import Job
from billowin.platform import AppInfo, ConfigVars, InstanceStatus, Platform
from billowin.release.store import Release

router = APIRouter(prefix="/apps", tags=["apps"])
T = TypeVar("T")


def platform(system: SystemDep) -> Platform:
    return system.platform


PlatformDep = Annotated[Platform, Depends(platform)]


def streams(system: SystemDep) -> StreamLimiter:
    return system.streams


StreamsDep = Annotated[StreamLimiter, Depends(streams)]


class AppCreate(BaseModel):
    model_config = ConfigDict(regex_engine="python-re")  # the branch rule looks ahead

    name: str = Field(
        pattern=DNS_LABEL.pattern, max_length=63, description=f"The app's name: {APP_NAME_RULE}."
    )
    repository: str = Field(
        min_length=1,
        max_length=2048,
        description="What to build: an https:// URL or a path on the Billowin host.",
    )
    github_repo: str | None = Field(
        None, pattern=GITHUB_REPO.pattern, description="owner/name on GitHub, to match webhooks."
    )
    branch: str = Field("main", pattern=BRANCH.pattern)
    deploy_on: DeployOn = DeployOn.PUSH
    ci_workflow: str | None = None
    webhook_secret: SecretStr | None = Field(None, description="Per-app GitHub webhook secret (write-only).")
    repository_token: SecretStr | None = Field(
        None, description="A deploy token for a private https repository (write-only)."
    )
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


async def drain(items: Iterator[T], stop: threading.Event | None = None) -> AsyncIterator[T]:
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
@router.post("", status_code=201, response_model=AppInfo, dependencies=[require(Action.APPS_CREATE)])
async def create_app(body: AppCreate, p: PlatformDep, request: Request) -> AppInfo:
    audit_note(request).app = body.name  # the path does not name it
    try:
        app = App(
            **body.model_dump(exclude={"webhook_secret", "repository_token"}),
            webhook_secret=body.webhook_secret,
            repository_token=body.repository_token,
        )
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise InvalidInput(problems or "the app was refused") from exc
    await _off(p.create, app)
    info: AppInfo = await _off(p.info, app.name)
    return info


@router.get("", response_model=list[AppSummary])
async def list_apps(p: PlatformDep, caller: Annotated[Caller, require(Action.APPS)]) -> list[AppSummary]:
    """The apps this token may read (every app, for an admin)."""
    every = await _off(p.apps.all)
    readable = set(caller.visible(a.name for a in every))
    apps = [a for a in every if a.name in readable]
    return [
        AppSummary(
            name=a.name,
            url=p.url(a.name),
            repository=a.github_repo or redact_url(a.repository),
            branch=a.branch,
            deploy_on=a.deploy_on.value,
        )
        for a in apps
    ]


@router.get("/{app}", response_model=AppInfo, dependencies=[require(Action.APPS_INFO)])
async def app_info(app: AppName, p: PlatformDep) -> AppInfo:
    info: AppInfo = await _off(p.info, app)
    return info


@router.delete("/{app}", status_code=204, dependencies=[require(Action.APPS_DESTROY)])
async def destroy_app(
    app: AppName,
    p: PlatformDep,
    system: SystemDep,
    confirm: Annotated[str, Query(description="The app's name, again: destroying cannot be undone.")],
) -> Response:
    if confirm != app:
        raise InvalidInput(
            f"destroying {app} removes its instances, images, config and history",
            hint=f"Confirm with ?confirm={app} (CLI: `billowin apps:destroy {app} --confirm {app}`).",
        )
    await _off(p.destroy, app)
    await _off(system.access.forget_app, app)
    return Response(status_code=204)


# -- config vars -------------------------------------------------------------------
async def _config_action(reveal: bool = False) -> Action:
    return Action.CONFIG_REVEAL if reveal else Action.CONFIG  # values need deploy rights


@router.get("/{app}/config", response_model=ConfigVars, dependencies=[require(_config_action)])
async def config(app: AppName, p: PlatformDep, reveal: bool = False) -> ConfigVars:
    """The app's config var names; values only with ``reveal=true`` (a deploy or admin token)."""
    found: ConfigVars = await _off(p.config_vars, app, reveal=reveal)
    return found


@router.patch(
    "/{app}/config", status_code=202, response_model=ConfigChanged, dependencies=[require(Action.CONFIG_SET)]
)
async def change_config(app: AppName, body: ConfigChange, p: PlatformDep) -> ConfigChanged:
    job = await _off(p.change_config, app, body.set, body.unset)
    version = (await _off(p.config_vars, app)).version
    return ConfigChanged(version=version, job=job)


# -- domains ---------------------------------------------------------------------
@router.get("/{app}/domains", response_model=list[str], dependencies=[require(Action.DOMAINS)])
async def domains(app: AppName, p: PlatformDep) -> list[str]:
    found: App = await _off(p.apps.get, app)
    return found.domains


class NameCertificateOut(BaseModel):
    name: str
    certificate: str
    status: str
    source: str
    issuer: str
    not_after: str | None
    last_error: str
    hint: str
    next_attempt: str | None


def _cert_out(r: NameCertificate) -> NameCertificateOut:
    return NameCertificateOut(
        name=r.name,
        certificate=r.certificate,
        status=r.status,
        source=r.source,
        issuer=r.issuer,
        not_after=r.not_after.isoformat() if r.not_after else None,
        last_error=r.last_error,
        hint=r.hint,
        next_attempt=r.next_attempt.isoformat() if r.next_attempt else None,
    )


async def _cert_rows(system: SystemDep, app: str) -> list[NameCertificateOut]:
    found: App = await _off(system.apps.get, app)
    rows = await _off(certificates_of, system.cert_store.get, found, system.settings.domain)
    return [_cert_out(r) for r in rows]


@router.get("/{app}/certs", response_model=list[NameCertificateOut], dependencies=[require(Action.CERTS)])
async def certs(app: AppName, system: SystemDep) -> list[NameCertificateOut]:
    """Each of the app's names with the certificate that covers it, its status and last error."""
    return await _cert_rows(system, app)


class CertificateUpload(BaseModel):
    chain: str = Field(max_length=65536, description="PEM certificates, leaf first, then intermediates.")
    key: SecretStr = Field(max_length=16384, description="The PEM private key, without a passphrase.")


@router.post(
    "/{app}/certs", response_model=list[NameCertificateOut], dependencies=[require(Action.CERTS_ADD)]
)
async def add_certificate(
    app: AppName, body: CertificateUpload, p: PlatformDep, system: SystemDep
) -> list[NameCertificateOut]:
    """Bring your own certificate: it is served for each of the app's names it covers."""
    await _off(p.add_certificate, app, body.chain, body.key.get_secret_value())
    return await _cert_rows(system, app)


@router.delete("/{app}/certs/{name}", status_code=204, dependencies=[require(Action.CERTS_REMOVE)])
async def remove_certificate(app: AppName, name: DomainName, p: PlatformDep) -> None:
    await _off(p.remove_certificate, app, name)


class HttpsRedirect(BaseModel):
    enabled: bool


@router.get("/{app}/redirect", response_model=HttpsRedirect, dependencies=[require(Action.CERTS)])
async def https_redirect(app: AppName, p: PlatformDep) -> HttpsRedirect:
    """Whether plain HTTP is redirected to HTTPS for the app's names that have a certificate."""
    return HttpsRedirect(enabled=await _off(p.https_redirect, app))


@router.put("/{app}/redirect", response_model=HttpsRedirect, dependencies=[require(Action.CERTS_REDIRECT)])
async def set_https_redirect(app: AppName, body: HttpsRedirect, p: PlatformDep) -> HttpsRedirect:
    await _off(p.set_https_redirect, app, body.enabled)
    return body


@router.post(
    "/{app}/domains", status_code=202, response_model=Job, dependencies=[require(Action.DOMAINS_ADD)]
)
async def add_domain(app: AppName, body: DomainAdd, p: PlatformDep) -> Job:
    job: Job = await _off(p.add_domain, app, body.domain)
    return job


@router.delete(
    "/{app}/domains/{domain}",
    status_code=202,
    response_model=Job,
    dependencies=[require(Action.DOMAINS_REMOVE)],
)
async def remove_domain(app: AppName, domain: DomainName, p: PlatformDep) -> Job:
    job: Job = await _off(p.remove_domain, app, domain)
    return job


# -- processes -------------------------------------------------------------------
@router.get("/{app}/ps", response_model=list[InstanceStatus], dependencies=[require(Action.PS)])
async def ps(app: AppName, p: PlatformDep) -> list[InstanceStatus]:
    found: list[InstanceStatus] = await _off(p.ps, app)
    return found


@router.post("/{app}/ps/scale", response_model=dict[str, int], dependencies=[require(Action.PS_SCALE)])
async def scale(app: AppName, body: Scale, p: PlatformDep) -> dict[str, int]:
    done: dict[str, int] = await _off(p.scale, app, body.counts)
    return done


@router.post("/{app}/ps/restart", response_model=dict[str, int], dependencies=[require(Action.PS_RESTART)])
async def restart(app: AppName, body: Restart, p: PlatformDep) -> dict[str, int]:
    return {"restarted": await _off(p.restart, app, body.process)}


# -- releases and deploys ------------------------------------------------------------
@router.get("/{app}/releases", response_model=list[Release], dependencies=[require(Action.RELEASES)])
async def releases(app: AppName, p: PlatformDep) -> list[Release]:
    found: list[Release] = await _off(p.releases, app)
    return found


@router.post(
    "/{app}/releases/rollback", status_code=202, response_model=Job, dependencies=[require(Action.ROLLBACK)]
)
async def rollback(app: AppName, body: Rollback, p: PlatformDep) -> Job:
    job: Job = await _off(p.rollback, app, body.release)
    return job


@router.post("/{app}/deploys", status_code=202, response_model=Job, dependencies=[require(Action.DEPLOY)])
async def deploy(app: AppName, body: DeployRequest, p: PlatformDep) -> Job:
    job: Job = await _off(p.deploy, app, sha=body.sha, image=body.image)
    return job


@router.get("/{app}/deploys", response_model=list[Job], dependencies=[require(Action.DEPLOYS)])
async def deploys(app: AppName, p: PlatformDep) -> list[Job]:
    await _off(p.apps.get, app)
    found: list[Job] = await _off(p.jobs.list, app)
    return found


@router.get("/{app}/deploys/{job_id}", response_model=Job, dependencies=[require(Action.DEPLOY_STATUS)])
async def deploy_status(
    app: AppName,
    job_id: JobId,
    p: PlatformDep,
    limiter: StreamsDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Long-poll: seconds to wait for news.")] = 0,
    seen: Annotated[int, Query(description="Steps the caller has seen; answer once there are more.")] = -1,
) -> Job:
    if wait <= 0:
        found: Job = await _off(p.job, app, job_id, steps_seen=seen)
        return found
    with limiter.slot():  # a long-poll holds a thread: counted with the streams
        job: Job = await _off(p.job, app, job_id, steps_seen=seen, wait=wait)
    return job


@router.get(
    "/{app}/deploys/{job_id}/log",
    response_class=PlainTextResponse,
    dependencies=[require(Action.BUILD_LOG)],
)
async def deploy_log(app: AppName, job_id: JobId, p: PlatformDep) -> str:
    text: str = await _off(p.build_log, app, job_id)
    return text


# -- logs and one-off runs -------------------------------------------------------------
@router.get("/{app}/logs", response_class=StreamingResponse, dependencies=[require(Action.LOGS)])
async def logs(
    app: str,
    p: PlatformDep,
    limiter: StreamsDep,
    lines: Annotated[int, Query(ge=0, le=10_000)] = 100,
    tail: Annotated[bool, Query(description="Keep streaming new lines (chunked).")] = False,
    process: str | None = None,
    format: Annotated[str, Query(pattern="^(text|ndjson)$")] = "text",
) -> StreamingResponse:
    """Recent lines of every instance (stdout and stderr, tagged ``web.1``); ``tail`` streams on."""
    stop = threading.Event()
    limiter.acquire()  # 503 at once when every slot is taken
    try:
        items = await _off(p.log_lines, app, lines=lines, follow=tail, process=process, stop=stop)
    except BaseException:
        limiter.release()
        raise

    async def body() -> AsyncIterator[str]:
        try:
            async for line in drain(items, stop):
                yield (json.dumps(line.to_dict()) if format == "ndjson" else line.render()) + "\n"
        except BillowinError as exc:  # the answer has started: end it with the reason
            yield f"[billowin] the log stream ended: {exc.message}\n"

    media = "application/x-ndjson" if format == "ndjson" else "text/plain; charset=utf-8"
    return StreamingResponse(limiter.hold(body()), media_type=media, headers={"Cache-Control": "no-cache"})


@router.post("/{app}/runs", response_class=StreamingResponse, dependencies=[require(Action.RUN)])
async def run(app: AppName, body: RunRequest, p: PlatformDep, limiter: StreamsDep) -> StreamingResponse:
    """Run a command in a one-off container of the current release; streams NDJSON events.

    Each line is ``{"stream": "stdout"|"stderr", "text": …}``; the last is ``{"exit_code": N}``.
    """
    limiter.acquire()
    try:
        events = await _off(p.run, app, body.command, timeout=body.timeout)
    except BaseException:
        limiter.release()
        raise

    async def stream() -> AsyncIterator[str]:
        try:
            async for event in drain(events):
                if event.exit_code is not None:
                    yield json.dumps({"exit_code": event.exit_code}) + "\n"
                else:
                    yield json.dumps({"stream": event.stream, "text": event.text}) + "\n"
        except BillowinError as exc:  # the answer has started: report it in the stream
            yield json.dumps({"stream": "stderr", "text": f"[billowin] {exc.message}"}) + "\n"
            yield json.dumps({"exit_code": 1}) + "\n"

    return StreamingResponse(limiter.hold(stream()), media_type="application/x-ndjson")
