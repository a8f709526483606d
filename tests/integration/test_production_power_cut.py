"""A power cut on a production box loses nothing.

Three apps are live (one with config vars and two releases, one with a custom domain) and a
config change is queued. Then every process of the box is SIGKILLed at once: Consul, Nomad,
HAProxy, consul-template, the registry, the API, dockerd, containerd, the shims and the apps'
containers. The box starts again from the same root, as it would at boot, and everything a
user had is there: pages, config values, releases, domains and tokens, and the queued change
runs to the end.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from billowin.stack.single_box import SingleBox

from .production import (
    api_client,
    finished,
    new_box,
    observe,
    populate,
    power_cut,
    running,
    wait_all_serving,
)

SERVING_WITHIN = 60  # seconds, from the first process started again to every app answering


def test_a_power_cut_loses_no_app_config_release_domain_token_or_queued_job(
    stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    box = new_box(tmp_path_factory.mktemp("cut"))
    prefix = f"p{uuid.uuid4().hex[:6]}"
    with running(box):
        world = populate(box, stack.settings, base_image, Path(tmp_path_factory.mktemp("images")), prefix)
        before = observe(world)
        assert before[world.a]["config"] == {"GREETING": "bonjour"}
        assert before[world.a]["page"].startswith("bonjour release=v2")
        with api_client(box, world.token) as api:
            resp = api.patch(f"/apps/{world.c}/config", json={"set": {"FLAVOUR": "vanilla"}})
            assert resp.status_code == 202, resp.text
            queued = resp.json()["job"]

        killed = power_cut(box)
        assert killed >= 9  # the platform's processes, the engine's, and the apps'

        box.start()
        wait_all_serving(world, SERVING_WITHIN)
        after = observe(world)
        for app in (world.a, world.b):
            assert after[app] == before[app], app
        assert after["tokens"] == before["tokens"]
        assert after[world.b]["domains"] == [world.domain_of_b]

        with api_client(box, world.token) as api:
            done = finished(api, world.c, queued)
            assert done["state"] == "live", (done["reason"], done["steps"][-3:])
        final = observe(world)
        assert final[world.c]["config"] == {"FLAVOUR": "vanilla"}
        kept = {r[:3] for r in final[world.c]["releases"]}  # number, image, config version
        assert {r[:3] for r in before[world.c]["releases"]} <= kept
        assert len(kept) == len(before[world.c]["releases"]) + 1  # and the queued change's release
