"""``addon_create_to_ready`` and ``pg_backup_restore_s``: Postgres and Redis add-ons on the running stack.

Through the API, as ``billowin addons:create`` and ``pg:backups`` use it, for an app that was
created but never deployed (its ``DATABASE_URL`` job has nothing to roll out: "saved; it applies
with the app's first deploy"):

- ``addon_create_to_ready``: ``POST /apps/<app>/addons`` -> ``GET`` says ``ready`` with its
  attachment linked, per kind, median of ``runs``, each add-on destroyed after (the last Postgres
  one is kept for the backups). Warm: the image is in the registry first (``images.ensure``, outside
  the timing; a build it needed is timed alone as ``image_build_s``). The same-run baseline is the
  same server as a hand-written Nomad job: the same image, start script (first start: ``initdb``),
  fresh Docker volume and 5 s TCP check, ``nomad job run -detach`` -> passing in Consul. Both wait on
  the same Consul check, so both have its 5 s granularity.
- ``pg_backup_restore_s``: that Postgres add-on's database filled to about 100 MB (MiB, as
  ``pg_size_pretty`` counts) of rows, each body 30 distinct md5 strings (hex: about 2:1 under
  ``pg_dump``'s zlib, as text data is; ``repeat()`` would make it 30:1), then ``POST .../backups``
  (``pg_dump -Fc`` through Nomad's exec API, row counts first) and ``POST .../restore`` (``pg_restore
  --clean --single-transaction``, counts read back), each timed from request to answer. The
  baseline is the same dump and restore by hand, ``docker exec`` into the add-on's container.

The app and every add-on and hand job go at the end: the box is left as it was found.
"""

from __future__ import annotations

import io
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench.figures import api, follow
from billowin.addons.images import check_version
from billowin.addons.model import KINDS, Addon, Kind
from billowin.addons.service import KILL_SIGNAL, start_script
from billowin.stack.single_box import SingleBox
from billowin.system import System

console = Console(stderr=True)
MIB = 1024 * 1024
POLL = 0.1  # both sides poll at this rate: Billowin's API, and Consul for the hand job
READY_TIMEOUT = 300
# 30 distinct md5s per row: 960 bytes, under the TOAST threshold, so stored as it is.
BODY = "(SELECT string_agg(md5(g::text || ':' || k::text), '') FROM generate_series(1, 30) k)"


def bench_addons(box: SingleBox, work: Path, runs: int = 3, size_mib: int = 100) -> dict[str, Any]:
    """Both figures on one app of their own; see the module doc."""
    system = System(box.settings)
    app = f"baddon{uuid.uuid4().hex[:6]}"
    created: dict[str, Any] = {}
    with api(box) as client:
        ok(client.post("/apps", json={"name": app, "repository": "/nonexistent"}))
        try:
            # Redis first, each destroyed: no add-on of the app is there (and due a first
            # scheduled backup) while another is provisioned.
            for kind in (Kind.REDIS, Kind.POSTGRES):
                created[kind.value] = create_to_ready(box, client, work, app, kind, runs)
            kept = created[Kind.POSTGRES.value].pop("kept")
            backup = backup_and_restore(box, client, work, app, kept, size_mib)
            ok(client.delete(f"/apps/{app}/addons/{kept}", params={"confirm": kept}))
        finally:
            gone = client.delete(f"/apps/{app}", params={"confirm": app})  # its add-ons go with it
            if gone.is_error:
                console.print(
                    f"[yellow]the bench app {app} is still there:[/] {gone.status_code} {gone.text}"
                )
    left = [a.name for a in system.addons.store.of_app(app)]
    return {
        "addon_create_to_ready": {
            **created,
            "runs": runs,
            "warm": "the image in the registry before each create (built once, untimed, when not)",
            "baseline": "a hand-written Nomad job of the same image, start script, fresh Docker volume "
            "and 5 s TCP check: `nomad job run -detach` -> passing in Consul",
            "left_behind": left,
        },
        "pg_backup_restore_s": backup,
    }


def ok(resp: httpx.Response) -> httpx.Response:
    if resp.is_error:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}")
    return resp


def create_to_ready(
    box: SingleBox, client: httpx.Client, work: Path, app: str, kind: Kind, runs: int
) -> dict[str, Any]:
    """``runs`` creates of ``kind`` to ready and linked, each beside a hand job; the last Postgres
    add-on is kept (its name under ``kept``), every other one destroyed."""
    system = System(box.settings)
    version = check_version(box.settings, kind, None)
    images = system.addons.images
    repository, tag = images.repository(kind), images.tag(kind, version)
    in_registry = tag in system.image_registry.tags(repository)
    started = time.monotonic()
    image = images.ensure(kind, version, lambda line: console.print(f"  {line}"))
    build_s = None if in_registry else round(time.monotonic() - started, 2)
    ready_s: list[float] = []
    accepted_ms: list[float] = []
    destroy_s: list[float] = []
    hand_s: list[float] = []
    info: dict[str, Any] = {}
    version_seen = ""
    for n in range(runs):
        started = time.monotonic()
        accepted = ok(client.post(f"/apps/{app}/addons", json={"kind": kind.value}))
        accepted_ms.append(round((time.monotonic() - started) * 1000, 1))
        name = accepted.json()["addon"]["name"]
        info = wait_ready(client, app, name, started)
        ready_s.append(round(time.monotonic() - started, 2))
        version_seen = version_seen or server_version(box, name)
        if n < runs - 1 or kind != Kind.POSTGRES:
            started = time.monotonic()
            ok(client.delete(f"/apps/{app}/addons/{name}", params={"confirm": name}))
            destroy_s.append(round(time.monotonic() - started, 2))
        hand_s.append(hand_job(box, work, kind, image))
        console.print(f"  addons:create {kind.value} -> ready {ready_s[-1]}s; hand Nomad job {hand_s[-1]}s")
    [attachment] = info["attachments"]
    job = client.get(f"/apps/{app}/deploys/{attachment['job']}").json()
    job = follow(client, app, job)  # DATABASE_URL on an app never deployed: saved, nothing to roll out
    median = round(statistics.median(ready_s), 2)
    hand = round(statistics.median(hand_s), 2)
    figures: dict[str, Any] = {
        "version": version,
        "server_version": version_seen,
        "image": image,
        "image_in_registry_before": in_registry,
        "image_build_s": build_s,
        "create_to_ready_s": median,
        "runs_s": ready_s,
        "min_s": min(ready_s),
        "max_s": max(ready_s),
        "accepted_ms": accepted_ms,
        "destroy_s": destroy_s,
        "var": attachment["var"],
        "config_job": {"state": job["state"], "last_step": job["steps"][-1].get("message")},
        "hand_nomad_job_s": hand,
        "hand_nomad_job_runs_s": hand_s,
        "over_hand_nomad_job": round(median / hand, 3),
    }
    if kind == Kind.POSTGRES:
        figures["kept"] = info["name"]
    return figures


def wait_ready(client: httpx.Client, app: str, name: str, started: float) -> dict[str, Any]:
    """The add-on's view once it is ready with every attachment linked."""
    while True:
        info: dict[str, Any] = ok(client.get(f"/apps/{app}/addons/{name}")).json()
        if info["state"] == "failed":
            raise RuntimeError(f"{name} failed: {info['reason']}")
        if info["state"] == "ready" and all(a["linked"] for a in info["attachments"]):
            return info
        if time.monotonic() - started > READY_TIMEOUT:
            raise TimeoutError(f"{name} not ready and linked in {READY_TIMEOUT}s: {info}")
        time.sleep(POLL)


def server_version(box: SingleBox, name: str) -> str:
    system = System(box.settings)
    addon = system.addons.store.get(name)
    if addon.kind == Kind.POSTGRES:
        return psql(box, addon, "SHOW server_version")
    out = exec_in(box, addon, ["redis-cli", "--no-auth-warning", "info", "server"])
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if "redis_version:" in line), "")


def exec_in(box: SingleBox, addon: Addon, command: list[str]) -> str:
    """``command`` in the add-on's task (Nomad's exec API, as backups run); its stdout."""
    system = System(box.settings)
    out = io.BytesIO()
    code, errors = system.task_exec.run(
        system.addons.backups.allocation(addon), addon.kind.value, command, stdout=out
    )
    if code != 0:
        raise RuntimeError(f"{command[0]} in {addon.name} failed (exit {code}): {errors[-500:]}")
    return out.getvalue().decode(errors="replace").strip()


def psql(box: SingleBox, addon: Addon, sql: str) -> str:
    command = ["psql", "-h", "/tmp", "-U", "postgres", "-d", addon.database(), "-v", "ON_ERROR_STOP=1"]
    return exec_in(box, addon, [*command, "-At", "-c", sql])


# The add-on's server as a user would run it by hand: same image, script, volume and check.
HAND_JOBSPEC = """
job "@JOB@" {
  datacenters = ["*"]
  group "db" {
    network {
      port "db" {
        to           = @CONTAINER_PORT@
        host_network = "@HOST_NETWORK@"
      }
    }
    service {
      name         = "@JOB@"
      port         = "db"
      address_mode = "host"
      check {
        type     = "tcp"
        interval = "5s"
        timeout  = "2s"
      }
    }
    task "db" {
      driver      = "docker"
      user        = "@USER@"
      kill_signal = "@KILL_SIGNAL@"
      template {
        destination = "local/start.sh"
        perms       = "0755"
        data        = <<EOT
@SCRIPT@
EOT
      }
      config {
        image        = "@IMAGE@"
        network_mode = "@NETWORK@"
        ports        = ["db"]
        args         = ["sh", "/local/start.sh"]
        mount {
          type   = "volume"
          source = "@VOLUME@"
          target = "@DATA@"
        }
        labels = [{
          "billowin.bench" = "@JOB@"
        }]
      }
      env {
        ADDON_VERSION  = "@VERSION@"
        ADDON_DATABASE = "bench"
        ADDON_DATA     = "@DATA@"
        PASSWORD       = "@PASSWORD@"
        PGHOST         = "/tmp"
      }
      resources {
        cpu    = 200
        memory = @MEMORY@
      }
    }
  }
}
"""


def hand_job(box: SingleBox, work: Path, kind: Kind, image: str) -> float:
    """Seconds from ``nomad job run -detach`` of the hand jobspec to its check passing in Consul;
    the job, its container and its volume are removed after."""
    settings = box.settings
    system = System(settings)
    spec = KINDS[kind]
    job = f"bhand-{kind.value}-{uuid.uuid4().hex[:6]}"
    volume = f"billowin-bench-{job}"
    script = start_script(kind).replace("${", "$${").replace("%{", "%%{")  # HCL's interpolations
    values = {
        "JOB": job,
        "CONTAINER_PORT": str(spec.port),
        "HOST_NETWORK": settings.addon_host_network,
        "USER": spec.user,
        "KILL_SIGNAL": KILL_SIGNAL[kind],
        "IMAGE": image,
        "NETWORK": settings.app_network,
        "VOLUME": volume,
        "DATA": spec.data,
        "VERSION": check_version(settings, kind, None),
        "PASSWORD": uuid.uuid4().hex,
        "MEMORY": str(settings.addon_memory_mb),
        "SCRIPT": script.rstrip("\n"),  # last: nothing in it is taken for a placeholder
    }
    text = HAND_JOBSPEC
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    jobspec = work / f"{job}.nomad.hcl"
    jobspec.write_text(text)
    started = time.monotonic()
    try:
        subprocess.run(
            [str(box.tools.nomad), "job", "run", "-detach", str(jobspec)],
            check=True,
            capture_output=True,
            env={"NOMAD_ADDR": settings.nomad_addr, "PATH": "/usr/bin:/bin"},
        )
        while not system.catalog.healthy_instances(job):
            if time.monotonic() - started > READY_TIMEOUT:
                raise TimeoutError(f"the hand job {job} did not pass its check in {READY_TIMEOUT}s")
            time.sleep(POLL)
        return round(time.monotonic() - started, 2)
    finally:
        system.nomad.stop(job, purge=True)
        label = f"billowin.bench={job}"
        deadline = time.monotonic() + 60
        while system.docker.running_containers(label=label) and time.monotonic() < deadline:
            time.sleep(0.5)
        system.docker.remove_containers(label=label)
        system.docker.remove_volume(volume)


def wait_scheduled_backup(box: SingleBox, client: httpx.Client, app: str, name: str) -> float | None:
    """The worker takes a first scheduled backup of a new add-on on its next round (up to
    ``BILLOWIN_ADDON_INTERVAL`` after it is ready): wait for it, so that it runs on the empty
    database and never beside the timed capture. Seconds waited; None when backups are off."""
    if box.settings.addon_backup_interval <= 0:
        return None
    started = time.monotonic()
    limit = 2 * box.settings.addon_interval + 60
    while not any(b["trigger"] == "scheduled" for b in ok(client.get(backups(app, name))).json()):
        if time.monotonic() - started > limit:
            raise TimeoutError(f"no scheduled backup of {name} in {limit:.0f}s")
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


def backups(app: str, name: str) -> str:
    return f"/apps/{app}/addons/{name}/backups"


def fill(box: SingleBox, addon: Addon, size_mib: int) -> dict[str, Any]:
    """Rows into a table ``big`` (owned by the add-on's role, as an app's would be) until the
    database is about ``size_mib``: a sample first, to learn a row's size, then the rest."""
    role = f'SET ROLE "{addon.database()}"; '
    target = size_mib * MIB

    def size() -> int:
        return int(psql(box, addon, "SELECT pg_database_size(current_database())"))

    started = time.monotonic()
    sample = 20_000
    empty = size()
    psql(box, addon, role + "CREATE TABLE big (id integer PRIMARY KEY, body text NOT NULL)")
    psql(box, addon, role + insert(1, sample))
    after_sample = size()
    per_row = (after_sample - empty) / sample
    rows = sample + max(0, int((target - after_sample) / per_row))
    psql(box, addon, role + insert(sample + 1, rows))
    psql(box, addon, "VACUUM ANALYZE big")
    psql(box, addon, "CHECKPOINT")  # the capture does not share the disk with a checkpoint of the fill
    return {
        "rows": rows,
        "row_bytes": round(per_row, 1),
        "empty_database_mib": round(empty / MIB, 1),
        "database_mib": round(size() / MIB, 1),
        "fill_s": round(time.monotonic() - started, 2),
    }


def insert(first: int, last: int) -> str:
    """Rows ``first`` to ``last`` of ``big`` (integers and a constant: nothing from outside)."""
    return f"INSERT INTO big SELECT g, {BODY} FROM generate_series({first:d}, {last:d}) g"  # noqa: S608


def backup_and_restore(
    box: SingleBox, client: httpx.Client, work: Path, app: str, name: str, size_mib: int
) -> dict[str, Any]:
    system = System(box.settings)
    waited = wait_scheduled_backup(box, client, app, name)
    addon = system.addons.store.get(name)
    filled = fill(box, addon, size_mib)
    console.print(f"  pg: {filled['rows']} rows, {filled['database_mib']} MiB in {filled['fill_s']}s")

    started = time.monotonic()
    backup = ok(client.post(backups(app, name))).json()
    capture_s = round(time.monotonic() - started, 2)
    started = time.monotonic()
    restored = ok(client.post(f"{backups(app, name)}/{backup['id']}/restore", json={"into": None})).json()
    restore_s = round(time.monotonic() - started, 2)
    after_restore_mib = round(int(psql(box, addon, "SELECT pg_database_size(current_database())")) / MIB, 1)

    by_hand = hand_dump_and_restore(box, work, addon)
    by_hand["verified"] = system.addons.backups.counts(addon) == backup["counts"]
    total = round(capture_s + restore_s, 2)
    console.print(
        f"  pg backup {capture_s}s + restore {restore_s}s = {total}s (verified {restored['verified']}); "
        f"by hand {by_hand['pg_dump_s']}s + {by_hand['pg_restore_s']}s"
    )
    return {
        "pg_backup_restore_s": total,
        "capture_s": capture_s,
        "restore_s": restore_s,
        "restore_server_s": restored["seconds"],
        "verified": restored["verified"],
        "counts": restored["counts"],
        "expected": restored["expected"],
        "dump_mib": round(backup["size"] / MIB, 1),
        **filled,
        "database_mib_after_restore": after_restore_mib,
        "server_version": psql(box, addon, "SHOW server_version"),
        "scheduled_backup_waited_s": waited,
        "by_hand_docker_exec": by_hand,
        "by_hand_s": by_hand["total_s"],
        "over_by_hand": round(total / by_hand["total_s"], 3),
        "baseline": "the same pg_dump -Fc and pg_restore (same flags) by hand, `docker exec` into the "
        "add-on's container, the dump to a local file and back",
    }


def hand_dump_and_restore(box: SingleBox, work: Path, addon: Addon) -> dict[str, Any]:
    """``docker exec`` pg_dump to a file, then ``docker exec -i`` pg_restore from it, as by hand."""
    settings = box.settings
    env = {"DOCKER_HOST": settings.docker_host, "PATH": "/usr/bin:/bin"}
    docker = [settings.docker_cli]
    found = subprocess.run(
        [*docker, "ps", "-q", "--filter", f"label=billowin.addon={addon.name}"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    container, db = found[0], addon.database()
    connect = ["-h", "/tmp", "-U", "postgres"]  # the server's socket, in its container
    dump = work / f"{addon.name}-hand.dump"
    started = time.monotonic()
    with dump.open("wb") as out:
        subprocess.run(
            [
                *docker,
                "exec",
                "-u",
                "postgres",
                container,
                "pg_dump",
                *connect,
                "-Fc",
                "--no-owner",
                "--no-acl",
                db,
            ],
            stdout=out,
            check=True,
            env=env,
        )
    dump_s = round(time.monotonic() - started, 2)
    started = time.monotonic()
    with dump.open("rb") as source:
        subprocess.run(
            [
                *docker,
                "exec",
                "-i",
                "-u",
                "postgres",
                container,
                "pg_restore",
                *connect,
                "-d",
                db,
                f"--role={db}",
                "--no-owner",
                "--no-acl",
                "--clean",
                "--if-exists",
                "--single-transaction",
            ],
            stdin=source,
            check=True,
            env=env,
        )
    restore_s = round(time.monotonic() - started, 2)
    size = dump.stat().st_size
    dump.unlink()
    return {
        "pg_dump_s": dump_s,
        "pg_restore_s": restore_s,
        "total_s": round(dump_s + restore_s, 2),
        "dump_mib": round(size / MIB, 1),
    }
