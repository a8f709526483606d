"""The API application factory: ``create_app(settings)``.

uvicorn runs it with ``--factory``; settings then come from the environment.
Every route names its access rule (``billowin.api.deps``); ``create_app``
refuses to build an app with a route that does not, so none is forgotten.
The webhooks under ``/hooks/`` verify signatures instead. Every call that
changes something is written to the audit log (``billowin.api.audit``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles

from billowin.api.answers import ERRORS, validation_error
from billowin.api.audit import AuditMiddleware
from billowin.api.deps import LoginRequired, access_rule, public
from billowin.api.routes import (
    access,
    acme,
    addons,
    apps,
    dashboard,
    health,
    hooks,
    monitoring,
    nodes,
    pipeline,
    review,
    shell,
    volumes,
)
from billowin.apps.access import Action
from billowin.errors import BillowinError
from billowin.settings import Settings
from billowin.system import System

API_VERSION = "1"  # the HTTP API's version, in the OpenAPI document (never the package's)
SIGNED = "/hooks/"  # routes that verify a signature instead of a token


def create_app(settings: Settings | None = None, *, system: System | None = None) -> FastAPI:
    settings = settings or Settings()
    system = system or System(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Blocking calls to Consul and Nomad run in threads (asyncio.to_thread). The default
        # pool has cpu_count + 4 threads: on a 2-core box, 50 concurrent webhooks would queue
        # behind 6 of them. These threads mostly wait on the network, so allow many.
        executor = ThreadPoolExecutor(max_workers=settings.api_threads, thread_name_prefix="billowin-api")
        asyncio.get_running_loop().set_default_executor(executor)
        system.app_cache.start()  # the webhooks' app list, kept current by a blocking query
        if system.worker:
            system.worker.start()
        system.monitoring.start()
        if system.backups:
            system.backups.start()
        if settings.acme_auto:
            system.cert_manager.start()
        if system.worker:
            system.review_apps.start()  # a pipeline to queue their builds in
            system.addons.start()  # provisions add-ons and takes their scheduled backups
        yield
        if system.worker:
            system.addons.stop()
            system.review_apps.stop()
        if settings.acme_auto:
            system.cert_manager.stop()
        if system.backups:
            system.backups.stop()
        system.monitoring.stop()
        if system.worker:
            system.worker.stop()
        system.app_cache.stop()

    app = FastAPI(
        title="Billowin",
        version=API_VERSION,
        description="A self-hosted Heroku.",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.add_exception_handler(RequestValidationError, validation_error)
    app.state.settings = settings
    app.state.system = system

    @app.exception_handler(BillowinError)
    async def _billowin_error(request: Request, exc: BillowinError) -> Response:
        if isinstance(exc, LoginRequired) or (
            request.url.path.startswith("/dashboard") and "text/html" in request.headers.get("accept", "")
        ):
            return dashboard.error_page(request, exc)
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": type(exc).__name__, "message": exc.message, "hint": exc.hint},
        )

    app.include_router(health.router)
    app.include_router(acme.router)
    app.include_router(hooks.router)
    app.include_router(pipeline.router)
    app.include_router(apps.router)
    app.include_router(monitoring.router)
    app.include_router(access.router)
    app.include_router(nodes.router)
    app.include_router(review.router)
    app.include_router(addons.router)
    app.include_router(shell.router)
    app.include_router(volumes.router)
    app.include_router(dashboard.router)
    app.mount(
        "/static", StaticFiles(directory=str(Path(__file__).resolve().parent / "static")), name="static"
    )

    @app.get("/", include_in_schema=False, dependencies=[public(Action.HOME)])
    async def _home() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    check_access_rules(app)
    app.add_middleware(AuditMiddleware, audit=system.audit)
    return app


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every route of the app, those of the routers it includes too."""
    found = (context.original_route for context in iter_route_contexts(app.routes))
    return [route for route in found if isinstance(route, APIRoute)]


def check_access_rules(app: FastAPI) -> None:
    """Refuse an app with a route that names no access rule (the webhooks verify signatures)."""
    missing = [
        f"{','.join(sorted(route.methods or ()))} {route.path}"
        for route in api_routes(app)
        if not route.path.startswith(SIGNED) and access_rule(route) is None
    ]
    if missing:
        raise RuntimeError(
            "these routes name no access rule (`require`, `page`, `data`, `form` or `public` "
            f"from billowin.api.deps): {'; '.join(missing)}"
        )
