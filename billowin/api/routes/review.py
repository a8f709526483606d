"""``/apps/{app}/review-apps``: review apps, one per pull request (``billowin/review/apps.py``).

``GET`` lists them with the settings (config keys, never values; ``read``); ``PUT`` turns
them on or off and sets the rules (``admin``: the settings may copy another app's config);
``POST …/{number}/approve`` lets a fork's pull request build (``deploy``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from billowin.api.answers import AppName
from billowin.api.deps import SystemDep, require
from billowin.apps.access import Action
from billowin.names import DNS_LABEL
from billowin.review.apps import settings_from
from billowin.review.model import Forks, ReviewApp, ReviewAppsView, parse_ttl

router = APIRouter(prefix="/apps", tags=["review apps"])

PullNumber = Annotated[int, Path(ge=1, le=999_999_999, description="The pull request's number.")]


class ReviewAppsChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool
    max: int | None = Field(
        default=None, ge=1, le=100, description="Live review apps at most; the oldest go."
    )
    ttl: str | None = Field(
        default=None,
        max_length=12,
        description="Destroyed after this long without a push or deploy: 7d, 12h, 0.",
    )
    config_from: str | None = Field(
        default=None,
        max_length=63,
        pattern=f"^(|{DNS_LABEL.pattern})$",
        description="Start each review app with this app's config vars (never for forks); '' clears it.",
    )
    config: dict[str, str] | None = Field(default=None, description="Config vars every review app gets.")
    forks: Forks | None = None


@router.get("/{app}/review-apps", response_model=ReviewAppsView, dependencies=[require(Action.REVIEW_APPS)])
async def review_apps(app: AppName, system: SystemDep) -> ReviewAppsView:
    return await asyncio.to_thread(system.review_apps.view, app)


@router.put(
    "/{app}/review-apps", response_model=ReviewAppsView, dependencies=[require(Action.REVIEW_APPS_CONFIGURE)]
)
async def configure_review_apps(app: AppName, body: ReviewAppsChange, system: SystemDep) -> ReviewAppsView:
    reviews = system.review_apps

    # What the caller left out (None) keeps its stored value.
    change: dict[str, object] = body.model_dump(exclude_none=True, exclude={"ttl"})
    if body.ttl is not None:
        change["ttl_seconds"] = parse_ttl(body.ttl)

    def apply() -> ReviewAppsView:
        return reviews.configure(app, settings_from(reviews.store.settings(app), change))

    return await asyncio.to_thread(apply)


@router.post(
    "/{app}/review-apps/{number}/approve",
    response_model=ReviewApp,
    dependencies=[require(Action.REVIEW_APPS_APPROVE)],
)
async def approve_review_app(app: AppName, number: PullNumber, system: SystemDep) -> ReviewApp:
    return await asyncio.to_thread(system.review_apps.approve, app, number)
