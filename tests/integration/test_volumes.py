"""Persistent volumes for apps (``volumes:add``) on the real stack: files outlive deploys, the
process type is pinned to the node holding them (``ps`` says so) and deploys go stop-first."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from billowin.stack.single_box import SingleBox
from billowin.system import System

from .conftest import Cli, wait_for
from .test_addons import head, notes_app, page, serves


def test_a_volume_keeps_an_apps_files_through_deploys_and_goes_with_the_app(
    stack: SingleBox, cli: Cli, router: httpx.Client, tmp_path: Path, destroy_after: list[str]
) -> None:
    app = f"vol{uuid.uuid4().hex[:6]}"
    notes_app(cli, tmp_path, destroy_after, app)
    added = cli("volumes:add", app, "data", "/data")
    assert "stop the old instances before starting new ones" in added.stderr
    assert f"{app} v2 is live" in added.stderr

    serves(router, app, "/", "notes app")
    assert page(router, app, "/file?text=kept", "POST") == (200, "kept")
    cli("deploy", app, "--sha", head(tmp_path / app), "--wait")
    serves(router, app, "/file", "kept")

    # Pinned to the node that holds the volume, and shown so; its deploys are stop-first.
    [volume] = cli.json("volumes", app)
    assert volume["name"] == "data" and volume["path"] == "/data" and volume["node"]
    assert "(pinned: volume data)" in cli("ps", app).stdout
    system = System(stack.settings)
    [web] = [g for g in (system.nomad.current(app) or {})["TaskGroups"] if g["Name"] == "web"]
    assert (web["Update"] or {}).get("Canary", 0) == 0
    pins = [(c["LTarget"], c["RTarget"]) for c in web["Constraints"] or []]
    assert ("${node.unique.id}", volume["node"]) in pins

    # A path that is not a plain one, or a system directory, is refused plainly.
    for bad in ("/etc", "/data/../etc", "data", "/local/x"):
        refused = cli("volumes:add", app, "other", bad, ok=False)
        assert refused.returncode == 1, bad

    # Taken off: the app no longer sees the files, but they are kept until the app goes.
    cli("volumes:remove", app, "data")
    gone = lambda: all(page(router, app, "/file")[0] == 500 for _ in range(5))  # noqa: E731
    wait_for(gone, 60, "the release without the volume to be the only one answering")
    docker_volume = f"billowin-vol-{app}-data"
    assert system.docker.volume_exists(docker_volume)
    cli("apps:destroy", app, "--confirm", app)
    destroy_after.remove(app)
    assert not system.docker.volume_exists(docker_volume)
