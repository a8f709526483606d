"""``/apps/{app}/volumes``: persistent volumes mounted into an app's process types
(``Platform.add_volume``). Adding or removing one rolls out a new release; a process type with
a volume runs only on the node that holds it, and is deployed stop-first."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from billowin.api.answers import AppName
from billowin.api.deps import require
from billowin.api.routes.apps import PlatformDep
from billowin.apps.access import Action
from billowin.apps.store import VOLUME_NAME, VOLUME_PATH, AppVolume
from billowin.pipeline.jobs import Job

router = APIRouter(prefix="/apps", tags=["volumes"])

VolumeName = Annotated[str, Path(pattern=VOLUME_NAME.pattern, description="The volume's name.")]


class VolumeAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=VOLUME_NAME.pattern, description="Lowercase letters, digits and '-'.")
    path: str = Field(pattern=VOLUME_PATH.pattern, max_length=200, description="Where, like /data.")
    process: str = Field("web", pattern=r"^[a-z][a-z0-9_-]{0,30}$", description="The process type.")


@router.get("/{app}/volumes", response_model=list[AppVolume], dependencies=[require(Action.VOLUMES)])
async def volumes(app: AppName, p: PlatformDep) -> list[AppVolume]:
    return await asyncio.to_thread(p.volumes, app)


@router.post(
    "/{app}/volumes", status_code=202, response_model=Job, dependencies=[require(Action.VOLUMES_ADD)]
)
async def add_volume(app: AppName, body: VolumeAdd, p: PlatformDep) -> Job:
    volume = AppVolume(name=body.name, path=body.path, process=body.process)
    return await asyncio.to_thread(p.add_volume, app, volume)


@router.delete(
    "/{app}/volumes/{name}",
    status_code=202,
    response_model=Job,
    dependencies=[require(Action.VOLUMES_REMOVE)],
)
async def remove_volume(app: AppName, name: VolumeName, p: PlatformDep) -> Job:
    return await asyncio.to_thread(p.remove_volume, app, name)
