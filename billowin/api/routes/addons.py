"""``/apps/{app}/addons``: Postgres and Redis add-ons (``billowin/addons/service.py``).

Every route names the app: an add-on is seen through an app it is attached to, with that
app's access rules, and no answer holds a credential (URLs are shown with ``********``).
Attaching also needs the right to change the add-on's own app: it hands its credentials over.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from billowin.addons.backups import Backup, RestoreResult
from billowin.addons.model import MAX_NAME, AddonView
from billowin.addons.service import CreateResult
from billowin.api.answers import AppName
from billowin.api.deps import SystemDep, require
from billowin.apps.access import Action, Caller
from billowin.names import DNS_LABEL
from billowin.pipeline.jobs import Job

router = APIRouter(prefix="/apps", tags=["add-ons"])

AddonName = Annotated[
    str, Path(pattern=DNS_LABEL.pattern, max_length=MAX_NAME, description="The add-on's name.")
]
BackupId = Annotated[str, Path(pattern=r"^b[0-9]{3,6}$", description="A backup's id, like b001.")]
VAR = r"^[A-Z][A-Z0-9_]{0,62}$"


class AddonCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=40, description="postgres or redis.")
    name: str | None = Field(None, max_length=MAX_NAME, pattern=DNS_LABEL.pattern)
    version: str | None = Field(None, pattern=r"^[0-9]{1,3}$", description="A major version: 15, 7…")
    as_: str | None = Field(None, alias="as", pattern=VAR, description="The config var; DATABASE_URL…")


class Attach(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_: str | None = Field(None, alias="as", pattern=VAR)


class Restore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    into: str | None = Field(
        None, max_length=MAX_NAME, pattern=DNS_LABEL.pattern, description="Another add-on of the app."
    )


class Destroyed(BaseModel):
    name: str
    jobs: list[Job]


@router.get("/{app}/addons", response_model=list[AddonView], dependencies=[require(Action.ADDONS)])
async def addons(app: AppName, system: SystemDep) -> list[AddonView]:
    return await asyncio.to_thread(system.addons.listing, app)


@router.post(
    "/{app}/addons",
    status_code=202,
    response_model=CreateResult,
    dependencies=[require(Action.ADDONS_CREATE)],
)
async def create_addon(app: AppName, body: AddonCreate, system: SystemDep) -> CreateResult:
    return await asyncio.to_thread(
        system.addons.create, app, body.kind, name=body.name, version=body.version, as_=body.as_
    )


@router.get("/{app}/addons/{name}", response_model=AddonView, dependencies=[require(Action.ADDONS)])
async def addon_info(app: AppName, name: AddonName, system: SystemDep) -> AddonView:
    def info() -> AddonView:
        return system.addons.info_of(system.addons.of_app(app, name))

    return await asyncio.to_thread(info)


@router.delete(
    "/{app}/addons/{name}", response_model=Destroyed, dependencies=[require(Action.ADDONS_DESTROY)]
)
async def destroy_addon(
    app: AppName,
    name: AddonName,
    system: SystemDep,
    confirm: Annotated[str, Query(max_length=MAX_NAME, description="The add-on's name again.")] = "",
) -> Destroyed:
    def destroy() -> Destroyed:
        system.addons.of_app(app, name)
        return Destroyed(name=name, jobs=system.addons.destroy(name, confirm=confirm))

    return await asyncio.to_thread(destroy)


@router.put("/{app}/addons/{name}/attachment", status_code=202, response_model=Job | None)
async def attach_addon(
    app: AppName,
    name: AddonName,
    body: Attach,
    system: SystemDep,
    caller: Annotated[Caller, require(Action.ADDONS_ATTACH)],
) -> Job | None:
    """Attach the add-on ``name`` (of another app) to ``app``: its URL becomes a config var of ``app``."""

    def attach() -> Job | None:
        owner = system.addons.store.get(name).app
        if not caller.may(Action.ADDONS_ATTACH, owner):
            raise caller.refusal(Action.ADDONS_ATTACH, owner)
        return system.addons.attach(name, app, body.as_)

    return await asyncio.to_thread(attach)


@router.delete(
    "/{app}/addons/{name}/attachment",
    status_code=202,
    response_model=Job | None,
    dependencies=[require(Action.ADDONS_ATTACH)],
)
async def detach_addon(app: AppName, name: AddonName, system: SystemDep) -> Job | None:
    return await asyncio.to_thread(system.addons.detach, name, app)


@router.get(
    "/{app}/addons/{name}/backups", response_model=list[Backup], dependencies=[require(Action.ADDON_BACKUPS)]
)
async def backups(app: AppName, name: AddonName, system: SystemDep) -> list[Backup]:
    def listed() -> list[Backup]:
        return system.addons.backups.of(system.addons.of_app(app, name))

    return await asyncio.to_thread(listed)


@router.post(
    "/{app}/addons/{name}/backups",
    status_code=201,
    response_model=Backup,
    dependencies=[require(Action.ADDON_BACKUPS_CAPTURE)],
)
async def capture_backup(app: AppName, name: AddonName, system: SystemDep) -> Backup:
    return await asyncio.to_thread(system.addons.capture, app, name)


@router.post(
    "/{app}/addons/{name}/backups/{backup}/restore",
    response_model=RestoreResult,
    dependencies=[require(Action.ADDON_BACKUPS_RESTORE)],
)
async def restore_backup(
    app: AppName, name: AddonName, backup: BackupId, body: Restore, system: SystemDep
) -> RestoreResult:
    return await asyncio.to_thread(system.addons.restore, app, name, backup, into=body.into)
