"""The platform's own guards, on the real stack through the real API.

- A malformed record never stops deploys for other apps, nor listings.
- A release whose config vars were lost never deploys an empty environment.
- A hostname belongs to one app: Billowin's own names, another app's domain, a domain
  given up since an old release, and racing edits are all handled.
- Destroying an app while it deploys leaves nothing of it running.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from billowin.apps.store import App
from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.gitrepo import commit

from .conftest import REPO, wait_for

TERMINAL = {"live", "failed", "superseded"}


@pytest.fixture(scope="module")
def token(stack: SingleBox) -> str:
    return System(stack.settings).tokens.create("platform security tests")


@pytest.fixture
def api(stack: SingleBox, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.ports.api}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def apps_to_destroy(api: httpx.Client) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        api.delete(f"/apps/{name}", params={"confirm": name}, timeout=400)


def create(api: httpx.Client, name: str, **fields: Any) -> httpx.Response:
    return api.post("/apps", json={"name": name, "repository": "/nonexistent", **fields})


def finished(api: httpx.Client, app: str, job: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    """Follow a queued rollout (long-polls, like `deploy --wait`) until it ends."""
    deadline = time.monotonic() + timeout
    while job["state"] not in TERMINAL:
        assert time.monotonic() < deadline, f"job {job['id']} still {job['state']}: {job['steps'][-1]}"
        resp = api.get(f"/apps/{app}/deploys/{job['id']}", params={"wait": 20, "seen": len(job["steps"])})
        assert resp.status_code == 200, resp.text
        job = resp.json()
    return job


def page(router: httpx.Client, host: str) -> str:
    try:
        resp = router.get("/", headers={"Host": host})
    except httpx.TransportError as exc:
        return f"transport error {exc}"
    return resp.text if resp.status_code == 200 else f"HTTP {resp.status_code}"


def deploy_image(api: httpx.Client, app: str, image: str) -> dict[str, Any]:
    resp = api.post(f"/apps/{app}/deploys", json={"image": image})
    assert resp.status_code == 202, resp.text
    job = finished(api, app, resp.json())
    assert job["state"] == "live", (job["reason"], job["steps"][-3:])
    return job


# -- a malformed record ---------------------------------------------------------------------
def test_a_malformed_record_never_stops_deploys_for_other_apps(
    stack: SingleBox, api: httpx.Client, make_image, router: httpx.Client, app_name: str, apps_to_destroy
) -> None:
    kv = System(stack.settings).kv
    broken = f"{app_name}-broken"
    kv.kv_put(f"billowin/pipeline/{broken}/jobs/00000001", b'{"id": "00000001", "kind": "??", "app": 1}')
    kv.kv_put(f"billowin/apps/{broken}/app", b"{this is not an app")
    try:
        assert create(api, app_name).status_code == 201
        apps_to_destroy.append(app_name)
        job = deploy_image(api, app_name, make_image(app_name, "v1", greeting="still deploying"))
        assert job["state"] == "live", (job["reason"], job["steps"][-3:])
        wait_for(lambda: page(router, f"{app_name}.localhost").startswith("still deploying"), 30, "served")
        listed = api.get("/apps")
        assert listed.status_code == 200 and app_name in [a["name"] for a in listed.json()]
    finally:
        kv.kv_delete_tree(f"billowin/pipeline/{broken}/")
        kv.kv_delete_tree(f"billowin/apps/{broken}/")


# -- lost config --------------------------------------------------------------------------------
def test_a_release_whose_config_vars_were_lost_never_deploys(
    stack: SingleBox, api: httpx.Client, make_image, router: httpx.Client, app_name: str, apps_to_destroy
) -> None:
    assert create(api, app_name).status_code == 201
    apps_to_destroy.append(app_name)
    assert deploy_image(api, app_name, make_image(app_name, "v1"))["state"] == "live"
    changed = api.patch(f"/apps/{app_name}/config", json={"set": {"GREETING": "kept"}})
    assert changed.status_code == 202, changed.text
    assert finished(api, app_name, changed.json()["job"])["state"] == "live"  # v2 runs config version 1
    host = f"{app_name}.localhost"

    def only_v2() -> bool:  # several reads: v1's instance, still draining, may answer one
        return all(page(router, host).startswith("kept release=v2") for _ in range(6))

    wait_for(only_v2, 30, "only v2 to be served")

    System(stack.settings).config.delete(app_name)  # the store loses every version (a wiped Nomad)

    # Any rollout now would start the app with no environment: it fails plainly instead.
    added = api.post(f"/apps/{app_name}/domains", json={"domain": f"{app_name}.example.com"})
    assert added.status_code == 202, added.text
    job = finished(api, app_name, added.json())
    assert job["state"] == "failed" and "were lost; nothing was rolled out" in job["reason"], job
    rolled = api.post(f"/apps/{app_name}/releases/rollback", json={"release": 2})
    job = finished(api, app_name, rolled.json())
    assert job["state"] == "failed" and "no longer has" in job["reason"], job
    # And the release that runs keeps serving what it served.
    assert only_v2()
    history = api.get(f"/apps/{app_name}/releases").json()
    assert [r["status"] for r in history] == ["live", "live", "failed"]  # the rollback's, with why
    assert "no longer has" in history[-1]["description"]


# -- hostnames ----------------------------------------------------------------------------------
def test_a_hostname_belongs_to_one_app(
    stack: SingleBox, api: httpx.Client, make_image, app_name: str, apps_to_destroy
) -> None:
    first, second, third = app_name, f"{app_name}-b", f"{app_name}-c"
    for name in (first, second):
        assert create(api, name).status_code == 201
        apps_to_destroy.append(name)
    mine = f"www.{first}.example.com"
    assert api.post(f"/apps/{first}/domains", json={"domain": mine}).status_code == 202

    taken = api.post(f"/apps/{second}/domains", json={"domain": mine.upper()})
    assert taken.status_code == 409 and first in taken.json()["message"]
    own_name = api.post(f"/apps/{second}/domains", json={"domain": f"{first}.localhost"})
    assert own_name.status_code == 422 and "Billowin's own domain" in own_name.json()["message"]
    at_create = create(api, third, domains=[mine])
    assert at_create.status_code == 409, at_create.text
    assert api.get(f"/apps/{third}").status_code == 404
    assert api.get(f"/apps/{second}/domains").json() == []


def test_racing_domain_edits_all_land(api: httpx.Client, app_name: str, apps_to_destroy) -> None:
    assert create(api, app_name).status_code == 201
    apps_to_destroy.append(app_name)
    wanted = [f"d{i}.{app_name}.example.com" for i in range(8)]
    answers: list[int] = []

    def add(domain: str) -> None:
        answers.append(api.post(f"/apps/{app_name}/domains", json={"domain": domain}).status_code)

    threads = [threading.Thread(target=add, args=(d,)) for d in wanted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [202] * len(wanted)
    assert sorted(api.get(f"/apps/{app_name}/domains").json()) == sorted(wanted)


def test_a_rollback_never_brings_back_a_domain_given_up_since(
    stack: SingleBox, api: httpx.Client, make_image, app_name: str, apps_to_destroy
) -> None:
    other = f"{app_name}-b"
    for name in (app_name, other):
        assert create(api, name).status_code == 201
        apps_to_destroy.append(name)
    domain = f"shop.{app_name}.example.com"
    assert finished(api, app_name, api.post(f"/apps/{app_name}/domains", json={"domain": domain}).json())
    assert deploy_image(api, app_name, make_image(app_name, "v1"))["state"] == "live"  # v1 routes it
    removed = api.request("DELETE", f"/apps/{app_name}/domains/{domain}")
    assert finished(api, app_name, removed.json())["state"] == "live"
    assert api.post(f"/apps/{other}/domains", json={"domain": domain}).status_code == 202

    queued = api.post(f"/apps/{app_name}/releases/rollback", json={"release": 1})
    rolled = finished(api, app_name, queued.json())
    assert rolled["state"] == "live", rolled
    assert api.get(f"/apps/{app_name}/releases").json()[-1]["domains"] == []
    assert domain not in json.dumps(System(stack.settings).nomad.current(app_name))


# -- destroy during a deploy ---------------------------------------------------------------------------
def test_destroying_an_app_while_it_builds_leaves_nothing_running(
    stack: SingleBox, api: httpx.Client, app_name: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "tests" / "fixtures" / "apps" / "go", repo)
    sha = commit(repo)
    System(stack.settings).apps.create(App(name=app_name, repository=str(repo)))
    job = api.post(f"/apps/{app_name}/deploys", json={"sha": sha}).json()
    wait_for(
        lambda: api.get(f"/apps/{app_name}/deploys/{job['id']}").json()["state"] != "queued",
        60,
        "the build to start",
    )
    destroyed = api.delete(f"/apps/{app_name}", params={"confirm": app_name}, timeout=400)
    assert destroyed.status_code == 204, destroyed.text
    assert api.get(f"/apps/{app_name}").status_code == 404

    # Whatever the pipeline was doing for it has ended, and nothing of it runs or comes back.
    engine = docker.from_env()
    label = {"label": f"billowin.build={app_name}"}
    wait_for(lambda: not engine.containers.list(filters=label), 300, "no build of the app to run")
    nomad = System(stack.settings).nomad
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # a deploy that outlived the destroy would register now
        assert nomad.current(app_name) is None, "a job of the destroyed app was registered"
        time.sleep(0.5)


# -- long-lived streams -----------------------------------------------------------------------------
def test_open_log_tails_are_capped_and_every_other_call_still_answers(
    stack: SingleBox, api: httpx.Client, app_name: str, apps_to_destroy
) -> None:
    assert create(api, app_name).status_code == 201
    apps_to_destroy.append(app_name)
    limit = stack.settings.max_streams
    with contextlib.ExitStack() as tails:
        for _ in range(limit):
            resp = tails.enter_context(api.stream("GET", f"/apps/{app_name}/logs", params={"tail": True}))
            assert resp.status_code == 200
        over = api.get(f"/apps/{app_name}/logs", params={"tail": True})
        assert over.status_code == 503 and "BILLOWIN_MAX_STREAMS" in over.json()["hint"], over.text
        assert api.get("/apps").status_code == 200  # the API keeps its threads for the rest
        assert api.get(f"/apps/{app_name}/deploys/00000001", params={"wait": 1}).status_code == 503

    # Closed tails give their slots back, every one of them.
    def all_slots_free() -> bool:
        with contextlib.ExitStack() as again:
            opened = [
                again.enter_context(api.stream("GET", f"/apps/{app_name}/logs", params={"tail": True}))
                for _ in range(limit)
            ]
            return all(resp.status_code == 200 for resp in opened)

    wait_for(all_slots_free, 30, "the closed tails' slots")
