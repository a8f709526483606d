from __future__ import annotations

import asyncio

import httpx

from billowin.api.app import create_app
from billowin.errors import BillowinError, Conflict, NotFound, Unreachable
from billowin.settings import Settings


def test_every_error_says_what_to_do_next() -> None:
    err = Unreachable("nomad", "http://127.0.0.1:4646")
    assert isinstance(err, BillowinError)
    assert "cannot reach http://127.0.0.1:4646" in str(err)
    assert "make up" in err.hint
    assert Conflict("x").hint


def test_errors_map_to_plain_http_answers() -> None:
    app = create_app(Settings(pipeline=False))

    @app.get("/boom")
    def boom() -> None:
        raise NotFound("no app 'shop'", hint="List apps with `billowin apps`.")

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/boom")

    resp = asyncio.run(get())
    assert resp.status_code == 404
    assert resp.json() == {
        "error": "NotFound",
        "message": "no app 'shop'",
        "hint": "List apps with `billowin apps`.",
    }
