"""FastAPI dependencies: the settings and the ``System`` (``billowin.system``), injected, never global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from billowin.apps.tokens import TokenRecord
from billowin.errors import Unauthorized
from billowin.settings import Settings
from billowin.system import System


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_system(request: Request) -> System:
    system: System = request.app.state.system
    return system


SystemDep = Annotated[System, Depends(get_system)]


COOKIE = "billowin_token"  # set by the dashboard's login form: HttpOnly, SameSite=Strict


def token_from(request: Request) -> str:
    """The token a request carries: ``Authorization: Bearer …``, else the dashboard's cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return request.cookies.get(COOKIE, "")


def require_token(request: Request, system: SystemDep) -> TokenRecord:
    """Every endpoint but ``/health`` and the webhooks needs a valid ``Authorization: Bearer`` token."""
    token = token_from(request)
    record = system.tokens.verify(token) if token else None
    if record is None:
        raise Unauthorized(
            "a valid API token is required",
            hint="Send `Authorization: Bearer <token>`; an admin makes one: `billowin tokens:create NAME`.",
        )
    return record


TokenDep = Annotated[TokenRecord, Depends(require_token)]
