"""``GET /pipeline/{app}/jobs[/{id}]``: every deploy job, its steps, and its build log."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from billowin.api.deps import SystemDep, require_token
from billowin.errors import NotFound
from billowin.pipeline.jobs import Job

router = APIRouter(prefix="/pipeline", tags=["pipeline"], dependencies=[Depends(require_token)])


@router.get("/{app}/jobs", response_model=list[Job])
async def jobs(app: str, system: SystemDep) -> list[Job]:
    await asyncio.to_thread(system.apps.get, app)
    return await asyncio.to_thread(system.jobs.list, app)


@router.get("/{app}/jobs/{job_id}", response_model=Job)
async def job(app: str, job_id: str, system: SystemDep) -> Job:
    found = await asyncio.to_thread(system.jobs.get, app, job_id)
    if found is None:
        raise NotFound(f"{app} has no job {job_id}")
    return found


@router.get("/{app}/jobs/{job_id}/log", response_class=PlainTextResponse)
async def job_log(app: str, job_id: str, system: SystemDep) -> str:
    await job(app, job_id, system)  # this route's own "no job" answer
    text: str = await asyncio.to_thread(system.platform.build_log, app, job_id)
    return text
