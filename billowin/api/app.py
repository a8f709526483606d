"""The API application factory: ``create_app(settings)``.

uvicorn runs it with ``--factory``; settings then come from the environment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from billowin import __version__
from billowin.api.routes import apps, dashboard, health, hooks, monitoring, pipeline
from billowin.errors import BillowinError
from billowin.settings import Settings
from billowin.system import System


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    system = System(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Blocking calls to Consul and Nomad run in threads (asyncio.to_thread). The default
        # pool has cpu_count + 4 threads: on a 2-core box, 50 concurrent webhooks would queue
        # behind 6 of them. These threads mostly wait on the network, so allow many.
        executor = ThreadPoolExecutor(max_workers=settings.api_threads, thread_name_prefix="billowin-api")
        asyncio.get_running_loop().set_default_executor(executor)
        if system.worker:
            system.worker.start()
        system.monitoring.start()
        yield
        system.monitoring.stop()
        if system.worker:
            system.worker.stop()

    app = FastAPI(
        title="Billowin", version=__version__, description="A self-hosted Heroku.", lifespan=lifespan
    )
    app.state.settings = settings
    app.state.system = system

    @app.exception_handler(BillowinError)
    async def _billowin_error(_request: Request, exc: BillowinError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": type(exc).__name__, "message": exc.message, "hint": exc.hint},
        )

    app.include_router(health.router)
    app.include_router(hooks.router)
    app.include_router(pipeline.router)
    app.include_router(apps.router)
    app.include_router(monitoring.router)
    app.include_router(dashboard.router)
    app.mount(
        "/static", StaticFiles(directory=str(Path(__file__).resolve().parent / "static")), name="static"
    )

    @app.get("/", include_in_schema=False)
    async def _home() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    return app
