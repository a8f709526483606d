"""``billowin certs`` and ``billowin domains``: how certificates are shown."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from typer.testing import CliRunner

from billowin.cli import app
from tests.unit.test_monitoring_cli import Handler, serve  # noqa: F401 - the fixture

ROWS = [
    {
        "name": "shop.apps.test", "certificate": "shop.apps.test", "status": "valid", "source": "acme",
        "issuer": "CN=Pebble Intermediate", "not_after": "2027-03-01T00:00:00+00:00", "last_error": "",
        "hint": "", "next_attempt": None,
    },
    {
        "name": "nowhere.example", "certificate": "nowhere.example", "status": "failed", "source": "acme",
        "issuer": "", "not_after": None, "last_error": "nowhere.example: the CA's http-01 check failed",
        "hint": "Point the name at this router.", "next_attempt": "2027-01-15T12:05:00+00:00",
    },
]  # fmt: skip


def answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/apps/shop/certs":
        return httpx.Response(200, json=ROWS)
    if request.url.path == "/apps/shop/domains":
        return httpx.Response(200, json=["nowhere.example"])
    return httpx.Response(404, json={"error": "NotFound", "message": "no", "hint": ""})


def test_certs_shows_each_name_with_its_status_expiry_issuer_and_a_plain_reason(
    serve: Callable[[Handler], list[httpx.Request]],  # noqa: F811
) -> None:
    serve(answer)
    result = CliRunner().invoke(app, ["certs", "shop"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("shop.apps.test  valid  until ") and "Pebble" in lines[0]
    assert lines[1] == "nowhere.example  failed"
    assert "the CA's http-01 check failed" in lines[2] and "Point the name at this router." in lines[3]
    assert lines[4].startswith("  next attempt: ")


def test_domains_shows_each_domains_https_status(serve: Callable[[Handler], list[httpx.Request]]) -> None:  # noqa: F811
    serve(answer)
    result = CliRunner().invoke(app, ["domains", "shop"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "nowhere.example  https: failed"
