"""``billowin certs`` and ``billowin domains``: how certificates are shown."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from typer.testing import CliRunner

from billowin.cli import app
from tests.fakes import own_certificate
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
    if request.url.path == "/apps/shop/redirect":
        return httpx.Response(200, json={"enabled": True})
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


def test_certs_add_sends_the_files_and_shows_what_is_served(
    serve: Callable[[Handler], list[httpx.Request]],  # noqa: F811
    tmp_path: Path,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/apps/shop/certs":
            return httpx.Response(200, json=ROWS[:1])
        return answer(request)

    seen = serve(handler)
    chain, key = own_certificate(["shop.apps.test"])
    (tmp_path / "shop.crt").write_text(chain)
    (tmp_path / "shop.key").write_text(key)
    result = CliRunner().invoke(
        app, ["certs:add", "shop", str(tmp_path / "shop.crt"), str(tmp_path / "shop.key")]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("shop.apps.test  valid  until ")
    sent = json.loads(seen[-1].content)
    assert sent == {"chain": chain, "key": key}
    assert key.splitlines()[1] not in result.output


def test_certs_add_refuses_a_file_that_is_not_pem_before_calling_the_api(
    serve: Callable[[Handler], list[httpx.Request]],  # noqa: F811
    tmp_path: Path,
) -> None:
    seen = serve(answer)
    (tmp_path / "cert.der").write_bytes(b"\x30\x82\xff\xfe")
    result = CliRunner().invoke(
        app, ["certs:add", "shop", str(tmp_path / "cert.der"), str(tmp_path / "none")]
    )
    assert result.exit_code == 1
    assert "is not a PEM certificate" in " ".join(result.output.split())  # however the line wraps
    assert seen == []


def test_certs_remove_and_the_redirect_switch(
    serve: Callable[[Handler], list[httpx.Request]],  # noqa: F811
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE" and request.url.path == "/apps/shop/certs/www.shop.example":
            return httpx.Response(204)
        if request.method == "PUT" and request.url.path == "/apps/shop/redirect":
            return httpx.Response(200, json=json.loads(request.content))
        return answer(request)

    seen = serve(handler)
    result = CliRunner().invoke(app, ["certs:remove", "shop", "www.shop.example"])
    assert result.exit_code == 0 and "removed the certificate of www.shop.example" in result.output
    result = CliRunner().invoke(app, ["certs:redirect", "shop", "off"])
    assert result.exit_code == 0 and result.output.strip() == "HTTP to HTTPS redirect for shop: off"
    assert json.loads(seen[-1].content) == {"enabled": False}
    result = CliRunner().invoke(app, ["certs:redirect", "shop", "maybe"])
    assert result.exit_code == 1 and "neither on nor off" in result.output
    assert len(seen) == 2
