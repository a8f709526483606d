"""When Nomad loses its Variables, a production box refuses to roll out an empty environment.

An app runs with a config var, pinned by its releases. Then Nomad's data is lost (its data
directory wiped, as a dead disk would) and the box starts again: Nomad is new and empty. Every
rollout of the app (a deploy, a config change, a rollback) must now fail with a plain error
that says what was lost and what to do, and no release may go out with no environment.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from billowin.stack.single_box import SingleBox
from billowin.system import System

from .production import api_client, finished, live, new_box, push_image, running, wipe


def test_deploys_refuse_to_roll_out_config_vars_the_store_no_longer_has(
    stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    box = new_box(tmp_path_factory.mktemp("lost"))
    app = f"s{uuid.uuid4().hex[:8]}"
    with running(box):
        token = System(box.settings).tokens.create("safety")
        image = push_image(stack.settings, base_image, box, app, "v1", Path(tmp_path_factory.mktemp("img")))
        with api_client(box, token) as api:
            assert api.post("/apps", json={"name": app, "repository": "/nonexistent"}).status_code == 201
            live(api, app, api.post(f"/apps/{app}/deploys", json={"image": image}).json())
            changed = api.patch(f"/apps/{app}/config", json={"set": {"DATABASE_URL": "postgres://db/shop"}})
            assert changed.status_code == 202, changed.text
            live(api, app, changed.json()["job"])

        box.stop()
        wipe(box.layout.nomad)  # Nomad's state, its Variables and their keys: gone
        box.start()

        with api_client(box, token) as api:
            deployed = api.post(f"/apps/{app}/deploys", json={"image": image})
            assert deployed.status_code == 202, deployed.text
            job = finished(api, app, deployed.json())
            assert job["state"] == "failed", job
            assert "were lost; nothing was rolled out" in job["reason"], job["reason"]

            rolled = api.post(f"/apps/{app}/releases/rollback", json={"release": 2})
            job = finished(api, app, rolled.json())
            assert job["state"] == "failed" and "no longer has" in job["reason"], job

            history = api.get(f"/apps/{app}/releases").json()
            assert [r["config_version"] for r in history if r["status"] == "live"] == [0, 1]
            assert all(r["status"] != "live" for r in history[2:])  # nothing went out without config
            assert api.get(f"/apps/{app}/config").json()["version"] == 0  # the store says: none
