"""``GET /pipeline/{app}/jobs[/{id}]``: every deploy job, its steps, and its build log.

Jobs need a read token for the app; the build log (it carries app output) a deploy token.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from billowin.api.answers import AppName, JobId
from billowin.api.deps import SystemDep, require
from billowin.apps.access import Action
from billowin.errors import NotFound
from billowin.pipeline.jobs import Job

router = APIRouter(prefix="/pipeline", tags=["pipeline"])


@router.get("/{app}/jobs", response_model=list[Job], dependencies=[require(Action.DEPLOYS)])
async def jobs(app: AppName, system: SystemDep) -> list[Job]:
    await asyncio.to_thread(system.apps.get, app)
    return await asyncio.to_thread(system.jobs.list, app)


@router.get("/{app}/jobs/{job_id}", response_model=Job, dependencies=[require(Action.DEPLOY_STATUS)])
async def job(app: AppName, job_id: JobId, system: SystemDep) -> Job:
    found = await asyncio.to_thread(system.jobs.get, app, job_id)
    if found is None:
        raise NotFound(f"{app} has no job {job_id}")
    return found


@router.get(
    "/{app}/jobs/{job_id}/log", response_class=PlainTextResponse, dependencies=[require(Action.BUILD_LOG)]
)
async def job_log(app: AppName, job_id: JobId, system: SystemDep) -> str:
    await job(app, job_id, system)  # this route's own "no job" answer
    text: str = await asyncio.to_thread(system.platform.build_log, app, job_id)
    return text
