"""A production box backed up, wiped and restored loses nothing, and its ACLs still hold.

Three apps are live (one with config vars and two releases, one with a custom domain), and
the box's API takes scheduled backups (every 36 s here) and hands each one to a hook. A
backup with the images is taken, the box is stopped and its root deleted: Consul's and Nomad's
data, the keyring, the secrets, the registry, Docker's data, everything. A new box on the same
root, set up from the archive's own options as ``billowin restore`` does, restores it: every
app answers through the router with the same page, config values, release history, domains
and API tokens; every component's scoped token works and anonymous callers are still refused;
after a stop and a start (``ensure_*_acls`` again) a config change and a new deploy go live.

An archive whose manifest names a newer Consul or Nomad, or an unknown format, is refused
with what to do, before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import consul
import httpx
import nomad.api.exceptions as nomad_exc
import pytest
from typer.testing import CliRunner

from billowin import __version__
from billowin.addons.model import Kind
from billowin.cli import app as cli
from billowin.errors import InvalidInput
from billowin.settings import Settings
from billowin.stack.acl import CONSUL_TOKENS, consul_client, nomad_client
from billowin.stack.backup import (
    FORMAT,
    STATUS_FILE,
    backup,
    box_from_manifest,
    read_manifest,
    restore,
    scheduled_archives,
    tool_version,
)
from billowin.stack.production import ProductionBox
from billowin.stack.single_box import SingleBox
from billowin.stack.tools import Toolset
from billowin.system import System

from .conftest import wait_for
from .production import (
    World,
    _alive,
    api_client,
    box_bridges,
    box_pids,
    copy_image,
    live,
    new_box,
    observe,
    page,
    populate,
    push_image,
    router_client,
    running,
    tidy,
    wait_all_serving,
    wipe,
)

SERVING_WITHIN = 120  # seconds from the end of the restore to every app answering
NOMAD_TOKENS = ("nomad-router", "nomad-api", "nomad-bootstrap")


def kill_leftovers(box: ProductionBox) -> None:
    """Kill what of a stopped box still runs: Nomad's log shippers outlive the agent (for it to
    find them again at its next start), with files open under the root."""
    leftovers = sorted({*box_pids(box), *holding(box.root)})
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(_alive(pid) for pid in leftovers), 30, "the box's leftovers to be gone")


def holding(root: Path) -> set[int]:
    """Processes with a file or their working directory under ``root`` (Nomad's plugins outlive
    the agent, for it to find them again at its next start)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            links = [entry / "cwd", *(entry / "fd").iterdir()]
            if any(str(os.readlink(link)).startswith(f"{root}/") for link in links):
                found.add(int(entry.name))
    return found


def settled(world: World, pages: dict[str, str], reads: int = 10, timeout: float = 60) -> None:
    """Wait until every app answers ``pages`` (without the allocation) ``reads`` times in a row:
    no instance of an earlier release is left behind the router."""
    in_a_row = 0

    def same() -> bool:
        nonlocal in_a_row
        with router_client(world.box) as router:
            ok = all(
                page(router, host).split(" alloc=")[0] == pages[app] for app, host in world.hosts().items()
            )
        in_a_row = in_a_row + 1 if ok else 0
        return in_a_row >= reads

    wait_for(same, timeout, f"every app to answer {pages}")


def wait_same_pages(world: World, before: dict[str, Any], timeout: float) -> float:
    """Seconds until every app answers the page it answered before; each other page seen on the
    way is printed whole (with the allocation that served it)."""
    start = time.monotonic()
    seen: set[str] = set()

    def same() -> bool:
        with router_client(world.box) as router:
            pages = {app: page(router, host) for app, host in world.hosts().items()}
        for app, text in pages.items():
            if text.split(" alloc=")[0] != before[app]["page"] and f"{app}: {text}" not in seen:
                seen.add(f"{app}: {text}")
                print(f"  after the restore, {app} answered {text!r}")
        return all(text.split(" alloc=")[0] == before[app]["page"] for app, text in pages.items())

    wait_for(same, timeout, "every app to answer its own page")
    return time.monotonic() - start


def tokens_work(box: ProductionBox) -> dict[str, bool]:
    consul_addr = f"http://127.0.0.1:{box.ports.consul_http}"
    nomad_addr = f"http://127.0.0.1:{box.ports.nomad_http}"
    works = {}
    for name in (*CONSUL_TOKENS, "consul-bootstrap"):
        try:
            consul_client(consul_addr, box.secrets.get(name)).acl.token.read_self()
            works[name] = True
        except consul.ConsulException:
            works[name] = False
    for name in NOMAD_TOKENS:
        try:
            nomad_client(nomad_addr, box.secrets.get(name)).acl.get_self_token()
            works[name] = True
        except nomad_exc.BaseNomadException:
            works[name] = False
    return works


def anonymous_is_refused(box: ProductionBox) -> bool:
    consul_kv = httpx.get(f"http://127.0.0.1:{box.ports.consul_http}/v1/kv/billowin/?recurse=true", timeout=5)
    nomad_jobs = httpx.get(f"http://127.0.0.1:{box.ports.nomad_http}/v1/jobs", timeout=5)
    return consul_kv.status_code == 403 and nomad_jobs.status_code == 403


@pytest.mark.timeout(1200)  # two boxes, images pushed and built, an add-on: on 2 busy cores
def test_a_wiped_box_restored_from_its_backup_serves_every_app_as_before(
    stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("restore") / "root"
    hooked = tmp_path_factory.mktemp("hooked")
    archives = tmp_path_factory.mktemp("archives")
    images = Path(tmp_path_factory.mktemp("images"))
    scheduled = {
        "BILLOWIN_BACKUP_INTERVAL_HOURS": "0.01",  # 36 s: the first one 36 s after the API starts
        "BILLOWIN_BACKUP_KEEP": "2",
        "BILLOWIN_BACKUP_HOOK": f"cp -t {hooked}",
    }
    box = new_box(root, **scheduled)
    prefix = f"r{uuid.uuid4().hex[:6]}"
    archive = archives / "box.tar.gz"
    steps: list[str] = []
    with running(box):
        world = populate(box, stack.settings, base_image, images, prefix)
        addon = add_postgres(box, stack, world, rows=5)  # c's DATABASE_URL: its v2
        # b's last release (its domain) just went live: its old instance drains for a few
        # seconds more. What a user sees, and what is backed up, is the settled world.
        settled(
            world, {world.a: "bonjour release=v2", world.b: "hello release=v2", world.c: "hello release=v2"}
        )
        before = observe(world)
        assert before[world.a]["config"] == {"GREETING": "bonjour"}
        assert before[world.a]["page"].startswith("bonjour release=v2")
        assert before[world.b]["domains"] == [world.domain_of_b]

        # The API's own schedule: an archive, handed to the hook, and the outcome on disk.
        backups = box.layout.backups
        wait_for(
            lambda: scheduled_archives(backups) and (backups / STATUS_FILE).is_file(),
            120,
            "a scheduled backup",
        )
        status = json.loads((backups / STATUS_FILE).read_text())
        assert status["ok"] is True, status
        assert status["hook"]["ok"] is True, status
        assert (hooked / Path(status["archive"]).name).is_file()
        assert len(scheduled_archives(backups)) <= 2
        assert read_manifest(Path(status["archive"]))["apps"] == sorted(world.apps)

        small = backup(box, archives / "no-images.tar.gz")
        result = backup(box, archive, with_images=True, progress=steps.append)
    print(f"\nbackup without images: {small.size / 1024:.0f} KiB in {small.seconds:.1f}s")
    print(f"backup with images: {result.size / 1024 / 1024:.1f} MiB in {result.seconds:.1f}s")
    assert archive.stat().st_mode & 0o777 == 0o600
    manifest = result.manifest
    assert manifest["format"] == FORMAT and manifest["billowin"] == __version__
    assert manifest["consul"] == tool_version(box.tools.consul)
    assert manifest["nomad"] == tool_version(box.tools.nomad)
    assert manifest["apps"] == sorted(world.apps)
    assert list(manifest["addons"]) == [addon]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json"
    assert {
        "consul.snap",
        "nomad.snap",
        "secrets/nomad-bootstrap.token",
        "billowin/monitoring.sqlite3",
    } <= set(names)
    assert any(n.startswith("nomad-keystore/") and n.endswith(".nks.json") for n in names)
    assert any(n.startswith("registry/docker/registry/v2/repositories/") for n in names)
    assert not any(n.startswith("registry/") for n in read_manifest(archives / "no-images.tar.gz")["files"])

    kill_leftovers(box)
    wipe(box.root)
    assert not root.exists()

    restored = box_from_manifest(Toolset.resolve(Settings()), root, read_manifest(archive))
    assert restored.ports == box.ports and restored.domain == box.domain and restored.own_docker
    restored.api_env = {"BILLOWIN_DEPLOY_TIMEOUT": "120", "BILLOWIN_METRICS_INTERVAL": "2"}
    world = dataclasses.replace(world, box=restored)
    bridges: list[str] = []
    said: list[str] = []
    start = time.monotonic()
    try:
        restore(restored, archive, progress=said.append)
        restore_seconds = time.monotonic() - start
        bridges = box_bridges(restored)
        serving = wait_all_serving(world, SERVING_WITHIN)
        same = wait_same_pages(world, before, SERVING_WITHIN)
        print(
            f"restore: {restore_seconds:.1f}s, then every app served after {serving:.1f}s more, "
            f"its own page after {same:.1f}s"
        )
        assert any("nomad: keyring" in line for line in said), said
        print("\n".join(f"  restore: {line}" for line in said))

        after = observe(world)
        assert after == before  # c's DATABASE_URL too: the add-on has its credentials back
        assert any(line.startswith(f"add-on {addon}: ") and "restored" in line for line in said), said
        assert rows_of(restored, addon) == {"public.kept": 5}
        assert tokens_work(restored) == dict.fromkeys(
            [*CONSUL_TOKENS, "consul-bootstrap", *NOMAD_TOKENS], True
        )
        assert anonymous_is_refused(restored)

        # The next start checks every token again (ensure_consul_acls, ensure_nomad_acls).
        restored.stop()
        restored.start()
        wait_all_serving(world, SERVING_WITHIN)
        assert observe(world) == before
        assert tokens_work(restored) == dict.fromkeys(
            [*CONSUL_TOKENS, "consul-bootstrap", *NOMAD_TOKENS], True
        )

        # The API's scoped tokens still change things: a config change, and a new release.
        with api_client(restored, world.token) as api:
            resp = api.patch(f"/apps/{world.c}/config", json={"set": {"FLAVOUR": "vanilla"}})
            assert resp.status_code == 202, resp.text
            live(api, world.c, resp.json()["job"])
            image = push_image(stack.settings, base_image, restored, world.b, "v2", images / "b2")
            resp = api.post(f"/apps/{world.b}/deploys", json={"image": image})
            assert resp.status_code == 202, resp.text
            live(api, world.b, resp.json())
        final = observe(world)
        assert final[world.c]["config"] == {**before[world.c]["config"], "FLAVOUR": "vanilla"}
        assert len(final[world.c]["releases"]) == len(before[world.c]["releases"]) + 1
        assert image in [r[1] for r in final[world.b]["releases"]]
        assert len(final[world.b]["releases"]) == len(before[world.b]["releases"]) + 1
        assert final[world.a] == before[world.a]
    finally:
        restored.stop()
        kill_leftovers(restored)
        tidy(restored, bridges)


def add_postgres(box: ProductionBox, stack: SingleBox, world: World, rows: int) -> str:
    """A Postgres add-on for ``world.c`` (its image pushed from the session's), holding ``rows`` rows."""
    session = System(stack.settings)
    image = session.addons.images.ensure(Kind.POSTGRES, "15", print)
    copy_image(stack.settings, image, f"127.0.0.1:{box.ports.registry}")
    with api_client(box, world.token) as api:
        made = api.post(f"/apps/{world.c}/addons", json={"kind": "postgres"})
        assert made.status_code == 202, made.text
        name: str = made.json()["addon"]["name"]

        def linked() -> dict[str, Any] | None:
            found: dict[str, Any] = api.get(f"/apps/{world.c}/addons/{name}").json()
            assert found["state"] != "failed", found["reason"]
            return found if all(a["linked"] for a in found["attachments"]) else None

        found = wait_for(linked, 300, f"{name} to be up and linked")
        live(api, world.c, api.get(f"/apps/{world.c}/deploys/{found['attachments'][0]['job']}").json())
    addons = System(box.settings).addons
    record = addons.store.get(name)
    sql = f"CREATE TABLE kept AS SELECT generate_series(1, {rows}) AS n"
    command = ["psql", "-h", "/tmp", "-U", "postgres", "-d", record.database(), "-c", sql]
    assert addons.backups.exec.run(addons.backups.allocation(record), "postgres", command)[0] == 0
    return name


def rows_of(box: ProductionBox, name: str) -> dict[str, int]:
    addons = System(box.settings).addons
    return addons.backups.counts(addons.store.get(name))


def _archive(path: Path, manifest: dict[str, Any]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), ("consul.snap", b"snapshot")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"nomad": "1.7.0"}, "made with Nomad 1.7.0, newer than this box's Nomad {nomad}"),
        ({"consul": "1.15.2"}, "made with Consul 1.15.2, newer than this box's Consul {consul}"),
        (
            {"format": FORMAT + 1},
            f"archive format {FORMAT + 1}, and this Billowin ({__version__}) reads format",
        ),
    ],
)
def test_a_newer_consul_or_nomad_or_an_unknown_format_is_refused_before_anything_is_touched(
    tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    tools = Toolset.resolve(Settings())
    versions = {"consul": tool_version(tools.consul), "nomad": tool_version(tools.nomad)}
    manifest = {
        "format": FORMAT,
        "billowin": __version__,
        "created_at": "2026-12-01T12:00:00+00:00",
        "apps": ["shop"],
        "box": {"ports": {}, "domain": "prod.test", "public_address": "127.0.0.1", "own_docker": True},
        "files": [],
        **versions,
        **change,
    }
    archive = _archive(tmp_path / "box.tar.gz", manifest)
    expected = says.format(**versions)

    root = tmp_path / "root"
    with pytest.raises(InvalidInput) as caught:
        restore(new_box(root), archive)
    assert expected in caught.value.message
    assert caught.value.hint
    assert not root.exists()

    result = CliRunner().invoke(cli, ["restore", "--root", str(root), str(archive)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("error: ") and expected in " ".join(result.output.split())
    assert any(line.startswith("what to do: ") for line in lines)
    assert "Traceback" not in result.output
    assert not root.exists()
