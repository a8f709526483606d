"""An add-on on a production box keeps its rows through a power cut.

The notes fixture app (tests/fixtures/apps/addons) is built once on the session's stack, and
its image and the Postgres add-on image are pushed to the box's registry (the box has no base
image of its own to build from). On the box, through its API: the app, a Postgres add-on, a
row. Then every process of the box is SIGKILLed at once (dockerd and Postgres too), the box
starts again from the same root, and the app serves the same row.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from billowin.addons.model import Kind
from billowin.stack.single_box import SingleBox
from billowin.system import System

from .conftest import Cli, deploy_sample, wait_for
from .production import api_client, copy_image, live, new_box, power_cut, router_client, running

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "addons"
SERVING_WITHIN = 120  # seconds, from the box starting again to the row being served


def notes(router: httpx.Client, host: str, method: str = "GET", body: str = "") -> str:
    params = {"body": body} if body else None
    try:
        resp = router.request(method, "/notes", params=params, headers={"Host": host})
    except httpx.TransportError as exc:
        return f"transport error {exc}"
    return resp.text.strip() if resp.status_code == 200 else f"HTTP {resp.status_code}: {resp.text[:200]}"


def ready(api: httpx.Client, app: str, name: str) -> dict[str, Any] | None:
    resp = api.get(f"/apps/{app}/addons/{name}")
    assert resp.status_code == 200, resp.text
    found: dict[str, Any] = resp.json()
    assert found["state"] != "failed", found["reason"]
    return found if found["state"] == "ready" and all(a["linked"] for a in found["attachments"]) else None


def test_a_power_cut_keeps_a_postgres_add_on_s_rows(
    stack: SingleBox, cli: Cli, tmp_path_factory: pytest.TempPathFactory, destroy_after: list[str]
) -> None:
    built = f"pcb{uuid.uuid4().hex[:6]}"
    job, log = deploy_sample(cli, SAMPLE, tmp_path_factory.mktemp("src") / built, built, destroy_after)
    assert job["state"] == "live", log[-2000:]
    app_image = cli.json("releases", built)[0]["image"]
    addon_image = System(stack.settings).addons.images.ensure(Kind.POSTGRES, "15", print)

    box = new_box(tmp_path_factory.mktemp("addon-cut"))
    app = f"pc{uuid.uuid4().hex[:6]}"
    host = f"{app}.prod.test"
    with running(box):
        registry = f"127.0.0.1:{box.ports.registry}"
        image = copy_image(stack.settings, app_image, registry)
        copy_image(stack.settings, addon_image, registry)
        token = System(box.settings).tokens.create("addon power cut")
        with api_client(box, token) as api, router_client(box) as router:
            assert api.post("/apps", json={"name": app, "repository": "/nonexistent"}).status_code == 201
            deployed = api.post(f"/apps/{app}/deploys", json={"image": image})
            assert deployed.status_code == 202, deployed.text
            live(api, app, deployed.json())
            made = api.post(f"/apps/{app}/addons", json={"kind": "postgres"})
            assert made.status_code == 202, made.text
            name = made.json()["addon"]["name"]
            addon = wait_for(lambda: ready(api, app, name), 300, f"{name} to be ready")
            live(api, app, api.get(f"/apps/{app}/deploys/{addon['attachments'][0]['job']}").json())
            # Five empty answers in a row: the release without DATABASE_URL has drained.
            steady = lambda: all(notes(router, host) == "" for _ in range(5))  # noqa: E731
            wait_for(steady, 60, f"{host} to read its empty table")
            assert notes(router, host, "POST", "kept") == "kept"

        killed = power_cut(box)
        assert killed >= 9

        box.start()
        with router_client(box) as router:
            wait_for(lambda: notes(router, host) == "kept", SERVING_WITHIN, f"{host} to serve its row again")
