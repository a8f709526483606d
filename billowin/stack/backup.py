"""Backups of a production box, restoring one onto a fresh root, and the scheduled backups.

``billowin backup FILE`` writes one ``.tar.gz`` (to a temporary file beside ``FILE``, renamed
when complete; mode 0600, because it holds every token of the box). ``billowin restore FILE``
puts it back on a fresh (or wiped) root and starts the box.

What an archive holds, and why
------------------------------

``manifest.json``
    First in the archive, so a restore reads it before anything else: the archive format
    (``FORMAT``), Billowin's, Consul's and Nomad's versions, the date, the apps, the box's
    options (``production.json``: domain, ports, address, own engine) and the files that follow.
``consul.snap``
    ``consul snapshot save``: KV (apps, releases, API tokens, queued jobs, webhook secrets),
    the ACL policies and tokens, the catalog. Taken *before* Nomad's: a release record never
    names a config version or a job version that the Nomad snapshot lacks (the other way
    round, the config safety net would refuse the app's next rollout).
``nomad.snap``
    ``nomad operator snapshot save``: jobs, allocations, Variables (the config vars) and
    Nomad's ACL policies and tokens.
``nomad-keystore/``
    ``<nomad data_dir>/server/keystore/*.nks.json``. Nomad 1.6 encrypts each Variable with a
    root key that lives only there, never in raft: a snapshot holds the ciphertext and the key's
    metadata, not the key. Restored on a fresh Nomad 1.6.3 without these files, the keyring
    lists the old key as active, and every read of a Variable answers HTTP 500 ``no such key
    "<id>" in keyring`` (checked on the real binaries: a server writes a Variable, a second
    one with an empty data dir restores the snapshot). With the files put in the keystore
    *before* Nomad starts, it loads them at boot and the restored Variables decrypt.
``identity/``
    Consul's ``node-id`` and the Nomad client's ``client-id`` and ``secret-id``. With them the
    restored box is the *same* node to both: Nomad finds its allocations assigned to itself
    and starts them again at once, on the ports they had (and the catalog entries restored
    from Consul's snapshot match them), instead of waiting out a node that never heartbeats
    again (Nomad gives a node five minutes after a leader change) and placing them anew.
``secrets/``
    Every token and gossip key file. The restored snapshots hold the same tokens, so the box
    must be given exactly these secrets back, before it starts: Consul's
    ``initial_management`` token and each component's token are made from them.
``billowin/monitoring.sqlite3``
    The monitoring database, copied with SQLite's online backup API (a consistent copy while
    the collector writes). ``billowin/audit.jsonl``, the audit log, when there is one (up to its
    last complete line).
``addon-backups/<add-on>/``
    A dump of each add-on taken for this archive (``pg_dump -Fc``, Redis's RDB file: see
    ``billowin/addons/backups.py``), with its record (what it held); an add-on that is down
    goes in with its newest backup. Its volume is Docker data, which no archive holds.
``registry/`` (``--with-images`` only)
    The image registry's storage. Without it a restored box has the apps' records but not
    their images: rebuild them (``billowin deploy APP --sha …``) or push them again.

``etc/settings.env``
    The admin's own settings for the API (never rewritten by Billowin).

Not kept: rendered configuration (the rest of ``etc/``, ``router/``: rendered again from the secrets and
the box's options), logs and pidfiles (``run/``), build caches, build records and logs, and
Docker's data (containers are started again from the images).

Restoring
---------

The manifest is checked first, before anything is touched: an unknown format, or a Consul or
Nomad newer than this box's binaries, is refused (a snapshot does not go back to an older
release); an older one is fine (a newer release reads an older one's snapshot). A root that
already holds a box's state is refused too. Then, in order:

1. the archive is unpacked into a staging directory under the root, and checked complete;
2. the secrets, the keystore, the node identities, the monitoring database, the audit log and
   the registry's storage are put in place, all before anything starts;
3. ``box.start()``: Consul makes its management token from the restored ``initial_management``
   and the component tokens from their files; Nomad loads the keystore, and
   ``ensure_nomad_acls`` bootstraps its ACLs with the saved bootstrap secret;
4. ``consul snapshot restore``, then ``nomad operator snapshot restore``, then Nomad is
   restarted once its client holds every restored allocation: in 1.6.3 the client receives
   them at once but never sets their tasks up until the agent starts again, and only the ones
   it had stored before the restart (seen on the real binaries). Each task is checked to move
   past "Received", with up to ``RESTORE_RESTARTS`` restarts;
5. the secret files are put back once more (the fresh Nomad made new router and API tokens
   in step 3, and the snapshot just replaced them with the saved ones), ``ensure_*_acls``
   check every token (and would make one again if one did not work), the configuration is
   rendered, and consul-template and the API are restarted, so the router and the API run on
   the restored state and tokens;
6. each add-on, once its job runs again (on a new, empty volume, with its restored
   credentials), gets its dump back, read back to check (its image is built again first when
   the archive has no images).

Scheduled backups
-----------------

Where: a thread in the API process (``BackupSchedule``; ``System.backups``, started and
stopped by the API's lifespan like the monitoring collector). The API is the one Billowin
process every production box runs, under Billowin's supervisor and under systemd alike
(``Restart=always``), and it already runs the Consul and Nomad CLIs' neighbours (Packer): one
place, one code path (the very ``backup()`` the CLI runs), nothing to keep in step between a
systemd timer and a supervisor equivalent. It runs only on a production box (the API's
state directory is ``<root>/billowin`` beside a ``production.json``).

When: every ``BILLOWIN_BACKUP_INTERVAL_HOURS`` (0: off) after the newest scheduled archive
in ``BILLOWIN_BACKUP_DIR`` (so an API restart neither skips one nor takes one early); with
none yet, 15 minutes after the API starts (or one interval, when shorter). A failure is
logged and tried again 15 minutes later. One at a time: every backup and restore of a box
holds an exclusive ``flock`` on ``<root>/run/backup.lock``; a scheduled backup finding it held
is skipped, and ``billowin backup`` waits for it.

After each scheduled backup: ``BILLOWIN_BACKUP_HOOK``, if set, is split with ``shlex`` and run
without a shell with the archive's path as its last argument, with Billowin's and Consul's
and Nomad's token variables taken out of its environment (e.g. ``cp -t /mnt/offsite``, or
a script that encrypts and ships the archive); its failure is logged and
written to ``<backup dir>/last-backup.json``, never fatal. Then retention deletes the oldest
archives beyond ``BILLOWIN_BACKUP_KEEP``: only files named like the ones it makes
(``billowin-backup-<UTC time>.tar.gz``), never anything else in the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import json
import logging
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nomad.api import exceptions as nomad_exc

from billowin import __version__
from billowin.addons.model import State
from billowin.apps.audit import FILE_NAME as AUDIT_FILE
from billowin.errors import BillowinError, Conflict, InvalidInput, ServiceError
from billowin.settings import Settings
from billowin.stack.acl import ensure_consul_acls, ensure_nomad_acls, nomad_client
from billowin.stack.process import http_ok, read_env_file, write_private
from billowin.stack.production import MANIFEST, ProductionBox
from billowin.stack.single_box import Progress
from billowin.stack.tools import Toolset
from billowin.system import System

log = logging.getLogger("billowin.backups")

FORMAT = 1  # the archive's layout; a restore refuses any other
MANIFEST_NAME = "manifest.json"
ARCHIVE_RE = re.compile(r"billowin-backup-(\d{8}T\d{6}Z)\.tar\.gz")
ARCHIVE_TIME = "%Y%m%dT%H%M%SZ"
STATUS_FILE = "last-backup.json"
LOCK_FILE = "backup.lock"  # under <root>/run

KEYSTORE = Path("server") / "keystore"  # under Nomad's data_dir
# archive name -> path under the data dir of (consul | nomad)
IDENTITY = {
    "identity/consul-node-id": ("consul", Path("node-id")),
    "identity/nomad-client-id": ("nomad", Path("client") / "client-id"),
    "identity/nomad-secret-id": ("nomad", Path("client") / "secret-id"),
}
REQUIRED = ("consul.snap", "nomad.snap", "secrets/consul-bootstrap.token", "secrets/nomad-bootstrap.token")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RESTORE_RESTARTS = 3  # restarts of Nomad a restore tries before it says the allocations hang
RESTORE_WAIT = 30.0  # seconds for the client to hold them, then for each task to move on

COMMAND_TIMEOUT = 600.0  # seconds for one snapshot save or restore
HOOK_TIMEOUT = 3600.0
LOCK_WAIT = 600.0  # how long `billowin backup` waits for a backup already running
FIRST_DELAY = 15 * 60.0  # a box with no scheduled archive yet: the first one this long after start
RETRY_AFTER = 15 * 60.0  # after a failed scheduled backup
# Variables a hook never inherits: they hold the tokens of Billowin, Consul, Nomad or Vault.
HOOK_ENV_DROP = re.compile(r"^(BILLOWIN_.*|CONSUL_HTTP_TOKEN.*|NOMAD_TOKEN|VAULT_TOKEN)$")


def _quiet(_msg: str) -> None:
    return None


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int  # bytes
    seconds: float
    manifest: dict[str, Any]


# -- versions and the manifest -------------------------------------------------------
def tool_version(binary: Path) -> str:
    """``1.14.11`` from ``consul version`` / ``nomad version`` (their first line: ``Consul v1.14.11``)."""
    try:
        proc = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(binary.name, f"`{binary} version` did not run: {exc}") from exc
    match = re.search(r"v?(\d+\.\d+\.\d+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        raise ServiceError(binary.name, f"`{binary} version` printed no version: {proc.stdout[:200]!r}")
    return match.group(1)


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?", str(text).strip())
    if match is None:
        raise InvalidInput(f"{text!r} is not a version like 1.6.3")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def check_manifest(manifest: Mapping[str, Any], *, consul: str, nomad: str) -> list[str]:
    """Refuse an archive this box cannot restore; return what is worth saying about one it can.

    ``consul`` and ``nomad``: the versions of this box's binaries.
    """
    fmt = manifest.get("format")
    made_by = manifest.get("billowin", "an unknown version")
    if fmt != FORMAT:
        raise InvalidInput(
            f"the backup is in archive format {fmt!r}, and this Billowin ({__version__}) reads format "
            f"{FORMAT} only",
            hint=f"Restore it with the Billowin that made it ({made_by}), or a later one that reads "
            "its format.",
        )
    notes = []
    for system, here in (("consul", consul), ("nomad", nomad)):
        name = system.capitalize()
        if system not in manifest:
            raise InvalidInput(f"the backup's manifest does not say which {name} made it")
        theirs = parse_version(manifest[system])
        ours = parse_version(here)
        if theirs > ours:
            raise InvalidInput(
                f"the backup was made with {name} {manifest[system]}, newer than this box's {name} {here}: "
                f"a snapshot cannot go back to an older {name}",
                hint=f"Install {name} {manifest[system]} or later (pin it in billowin/versions.toml, then "
                "`billowin setup`), then run the restore again.",
            )
        if theirs < ours:
            notes.append(
                f"{system}: the backup is from {name} {manifest[system]}, this box runs {here} "
                "(an older snapshot restores onto a newer release)"
            )
    if made_by != __version__:
        notes.append(f"billowin: the backup was made by Billowin {made_by}, this is {__version__}")
    return notes


def read_manifest(file: Path) -> dict[str, Any]:
    """The manifest of the archive ``file``: its first member (nothing else is read)."""
    try:
        with tarfile.open(file, mode="r:gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME or not first.isfile():
                raise InvalidInput(
                    f"{file} is not a Billowin backup: it does not start with {MANIFEST_NAME}",
                    hint="Give an archive written by `billowin backup`.",
                )
            fh = tar.extractfile(first)
            assert fh is not None  # a regular file
            data = json.loads(fh.read(1024 * 1024))
    except FileNotFoundError:
        raise InvalidInput(f"there is no file {file}", hint="Give the path of a backup archive.") from None
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise InvalidInput(
            f"{file} is not a readable Billowin backup ({exc})",
            hint="Give an archive written by `billowin backup`; a truncated copy cannot be restored.",
        ) from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{file}: its manifest is not a JSON object")
    return data


# -- archive names and retention --------------------------------------------------------
def archive_name(at: datetime) -> str:
    return f"billowin-backup-{at.astimezone(UTC).strftime(ARCHIVE_TIME)}.tar.gz"


def archive_time(path: Path) -> datetime | None:
    """When a scheduled archive was made, from its name; None for any other file."""
    match = ARCHIVE_RE.fullmatch(path.name)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), ARCHIVE_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def scheduled_archives(directory: Path) -> list[Path]:
    """The archives the schedule made in ``directory`` (by name), oldest first."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    found = [(when, p) for p in entries if (when := archive_time(p)) is not None and p.is_file()]
    return [p for _, p in sorted(found)]


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete the oldest scheduled archives beyond the newest ``keep``; returns those deleted."""
    if keep < 1:
        raise ValueError("keep at least one archive")
    old = scheduled_archives(directory)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old


# -- the hook ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HookResult:
    ok: bool
    message: str
    exit_code: int | None = None


def hook_argv(hook: str, archive: Path) -> list[str]:
    """The hook's argv: the setting split like a shell would (no shell runs), then the archive."""
    try:
        argv = shlex.split(hook)
    except ValueError as exc:
        raise InvalidInput(
            f"BILLOWIN_BACKUP_HOOK cannot be split into words: {exc}",
            hint="Quote it as for a shell: a program and its arguments (no pipes, no variables).",
        ) from exc
    if not argv:
        raise InvalidInput("BILLOWIN_BACKUP_HOOK is empty", hint="Unset it, or give a program to run.")
    return [*argv, str(archive)]


def hook_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The hook's environment: this process's, without the variables that hold tokens."""
    return {k: v for k, v in environ.items() if not HOOK_ENV_DROP.match(k)}


def run_hook(
    hook: str,
    archive: Path,
    *,
    timeout: float = HOOK_TIMEOUT,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> HookResult:
    """Run the hook on ``archive``. Never raises: what went wrong is in the result."""
    try:
        argv = hook_argv(hook, archive)
    except InvalidInput as exc:
        return HookResult(False, exc.message)
    program = Path(argv[0]).name  # never the arguments: they may carry credentials
    try:
        proc = run(
            argv,
            env=hook_env(os.environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return HookResult(False, f"the backup hook {program} did not finish within {timeout:.0f}s")
    except OSError as exc:
        return HookResult(False, f"the backup hook {program} could not run: {exc.strerror or exc}")
    if proc.returncode != 0:
        last = (proc.stderr or "").strip().splitlines()[-1:] or [""]
        return HookResult(
            False,
            f"the backup hook {program} exited with {proc.returncode}: {last[0][:300]}",
            proc.returncode,
        )
    return HookResult(True, f"the backup hook {program} ran", 0)


# -- helpers -----------------------------------------------------------------------------
def _cli_env(box: ProductionBox) -> dict[str, str]:
    """The Consul and Nomad CLIs' environment: the box's addresses and bootstrap tokens, and
    nothing of the caller's own CONSUL_* / NOMAD_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "NOMAD_"))}
    return {**base, **box.admin_env()}


def _run(box: ProductionBox, argv: Sequence[str], what: str) -> None:
    shown = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
    try:
        proc = subprocess.run(
            list(argv),
            env=_cli_env(box),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(what, f"`{shown}` did not run: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-1000:]
        raise ServiceError(
            what,
            f"`{shown}` failed (exit {proc.returncode}): {detail}",
            hint=f"Read {box.layout.run / (what + '.log')}.",
        )


def _require_running(box: ProductionBox) -> None:
    for name, url in (
        ("consul", f"http://127.0.0.1:{box.ports.consul_http}/v1/status/leader"),
        ("nomad", f"http://127.0.0.1:{box.ports.nomad_http}/v1/status/leader"),
    ):
        if not http_ok(url, expect=lambda r: r.status_code == 200 and r.json() not in ("", None))():
            raise ServiceError(
                name,
                f"the box under {box.root} does not answer: {name} has no leader on 127.0.0.1",
                hint="Start the box (`systemctl start billowin.target`, or `billowin up --production`), "
                "then back it up.",
            )


@contextlib.contextmanager
def box_lock(box: ProductionBox, *, wait: float, progress: Progress = _quiet) -> Iterator[None]:
    """Hold the box's backup lock (one backup or restore at a time); raise Conflict after ``wait``."""
    box.layout.run.mkdir(parents=True, exist_ok=True)
    fd = os.open(box.layout.run / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Conflict(
                        f"another backup or restore of the box under {box.root} is running",
                        hint="Wait for it to finish, then try again.",
                    ) from None
                if not told:
                    progress("waiting for another backup of this box to finish")
                    told = True
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)  # releases the lock


def _audit_path(box: ProductionBox) -> Path:
    """Where the box's API writes its audit log (``BILLOWIN_AUDIT_FILE`` in its environment)."""
    written = box.layout.etc / "api.env"
    env = {**(read_env_file(written) if written.is_file() else {}), **box.api_env}
    chosen = env.get("BILLOWIN_AUDIT_FILE")
    return Path(chosen) if chosen else box.layout.billowin / AUDIT_FILE


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API)."""
    with (
        contextlib.closing(sqlite3.connect(str(source), timeout=30)) as src,
        contextlib.closing(sqlite3.connect(str(target))) as dst,
    ):
        src.backup(dst)


def _copy_complete_lines(source: Path, target: Path) -> None:
    """Copy an append-only log up to its last complete line."""
    data = source.read_bytes()
    end = data.rfind(b"\n") + 1
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data[:end])


def _copy_private(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(source.read_bytes())


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _without_uploads(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """The registry's storage, less its half-written uploads."""
    return None if "_uploads" in info.name.split("/") else info


# -- backup ----------------------------------------------------------------------------------
def backup(
    box: ProductionBox,
    file: Path,
    *,
    with_images: bool = False,
    progress: Progress = _quiet,
    lock_wait: float = LOCK_WAIT,
) -> BackupResult:
    """Write one archive of the running ``box`` to ``file`` (see the module's docstring)."""
    started = time.monotonic()
    file = file.absolute()
    if file.exists():
        raise InvalidInput(
            f"{file} exists already", hint="Give a new file name; a backup never overwrites one."
        )
    if not file.parent.is_dir():
        raise InvalidInput(f"there is no directory {file.parent}", hint="Make it, or give another path.")
    _require_running(box)
    with box_lock(box, wait=lock_wait, progress=progress):
        staging = Path(tempfile.mkdtemp(prefix=".backup-", dir=box.layout.run))
        try:
            manifest = _gather(box, staging, with_images=with_images, progress=progress)
            size = _write_archive(file, staging, manifest, box if with_images else None, progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - started
    progress(f"archive: {file} ({_size(size)}) in {seconds:.1f}s")
    return BackupResult(file, size, seconds, manifest)


def _gather(box: ProductionBox, staging: Path, *, with_images: bool, progress: Progress) -> dict[str, Any]:
    """Everything but the registry, into ``staging``; returns the manifest."""
    consul_version, nomad_version = tool_version(box.tools.consul), tool_version(box.tools.nomad)
    apps = sorted(app.name for app in System(box.settings).apps.all())
    progress(f"apps: {', '.join(apps) or 'none'}")
    # Consul first: whatever its records name (config and job versions), Nomad's snapshot has.
    _run(box, [str(box.tools.consul), "snapshot", "save", str(staging / "consul.snap")], "consul")
    progress(f"consul: snapshot saved ({_size((staging / 'consul.snap').stat().st_size)})")
    _run(box, [str(box.tools.nomad), "operator", "snapshot", "save", str(staging / "nomad.snap")], "nomad")
    progress(f"nomad: snapshot saved ({_size((staging / 'nomad.snap').stat().st_size)})")

    keys = sorted((box.layout.nomad / KEYSTORE).glob("*.nks.json"))
    if not keys:
        raise ServiceError(
            "nomad",
            f"no root key in {box.layout.nomad / KEYSTORE}: without it no config var could be read back",
            hint=f"Is this the box's Nomad data directory? Read the Nomad log in {box.layout.run}.",
        )
    for key in keys:
        _copy_private(key, staging / "nomad-keystore" / key.name)
    progress(f"nomad: keyring ({len(keys)} root key{'s' if len(keys) > 1 else ''})")

    for name, (system, rel) in IDENTITY.items():
        source = getattr(box.layout, system) / rel
        if source.is_file():
            _copy_private(source, staging / name)

    secrets = sorted(p for p in box.layout.secrets.iterdir() if p.is_file() and SAFE_NAME.fullmatch(p.name))
    for secret in secrets:
        _copy_private(secret, staging / "secrets" / secret.name)
    progress(f"secrets: {len(secrets)} files")

    (staging / "billowin").mkdir(mode=0o700)
    if box.layout.monitoring_db.is_file():
        _copy_sqlite(box.layout.monitoring_db, staging / "billowin" / box.layout.monitoring_db.name)
        progress("monitoring database: copied (SQLite online backup)")
    else:
        progress("monitoring database: none yet")
    audit = _audit_path(box)
    if audit.is_file():
        _copy_complete_lines(audit, staging / "billowin" / AUDIT_FILE)
        progress("audit log: copied")

    addons = _gather_addons(box, staging, progress)

    if box.settings_file.is_file():  # the admin's own settings (webhook secret, alerts...)
        _copy_private(box.settings_file, staging / "etc" / box.settings_file.name)
        progress("settings file: copied")

    box_manifest = box.root / MANIFEST
    files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
    return {
        "format": FORMAT,
        "billowin": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "consul": consul_version,
        "nomad": nomad_version,
        "apps": apps,
        "addons": addons,
        "with_images": with_images,
        "box": json.loads(box_manifest.read_text()) if box_manifest.is_file() else None,
        "files": files,
    }


def _gather_addons(box: ProductionBox, staging: Path, progress: Progress) -> dict[str, str]:
    """A fresh dump of every add-on that is up, into ``addon-backups/``; ``{add-on: backup id}``.

    An add-on that cannot be dumped now (it is down) goes in with its newest backup, said so.
    """
    addons = System(box.settings).addons
    taken: dict[str, str] = {}
    for addon in addons.store.all():
        if addon.state != State.READY:
            progress(f"add-on {addon.name}: {addon.state.value}, nothing to back up")
            continue
        try:
            backup = addons.backups.capture(addon, trigger="box")
            addons.backups.prune(addon)
        except BillowinError as exc:
            older = addons.backups.of(addon)
            if not older:
                raise ServiceError(
                    "add-ons",
                    f"{addon.name} could not be dumped ({exc.message}), and has no backup",
                    hint=f"See `billowin addons:info {addon.app} {addon.name}`; bring it up, then back up.",
                ) from exc
            backup = older[-1]
            progress(f"add-on {addon.name}: could not be dumped now ({exc.message}); its {backup.id} goes in")
        target = staging / "addon-backups" / addon.name
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        for source in (
            addons.backups.file(addon, backup),
            addons.backups.directory(addon) / f"{backup.id}.json",
        ):
            _copy_private(source, target / source.name)
        taken[addon.name] = backup.id
        held = ", ".join(f"{k} {v}" for k, v in backup.counts.items()) or "empty"
        progress(f"add-on {addon.name}: {backup.id} ({_size(backup.size)}; {held})")
    return taken


def _restore_addons(box: ProductionBox, manifest: Mapping[str, Any], progress: Progress) -> None:
    """Each add-on's dump back into it: its job runs again on a new, empty volume (Docker's data
    is not in a backup), made with its restored credentials; the dump fills it."""
    taken = manifest.get("addons") or {}
    if not taken:
        return
    system = System(box.settings)
    addons = system.addons
    for name, backup_id in sorted(taken.items()):
        addon = addons.store.get(name)
        addons.images.ensure(addon.kind, addon.version, progress)  # a backup without images
        system.catalog.wait_for_healthy(addon.job, count=1, timeout=box.settings.addon_ready_timeout)
        for job in addons.follow_address(addon):  # the apps' network was made anew
            progress(f"add-on {name}: at a new address; {job.app} gets its new URL (job {job.id})")
        result = addons.backups.restore(addon, addons.backups.get(addon, backup_id), addon)
        held = ", ".join(f"{k} {v}" for k, v in result.counts.items()) or "empty"
        if not result.verified:
            raise ServiceError(
                "add-ons",
                f"{name}: {backup_id} was restored, but reads back {held}, not {result.expected}",
                hint=f"Look at it with `billowin pg:psql {addon.app} {name}`; the dump is in "
                f"{addons.backups.file(addon, addons.backups.get(addon, backup_id))}.",
            )
        progress(f"add-on {name}: {backup_id} restored in {result.seconds}s; read back {held}")


def _write_archive(
    file: Path, staging: Path, manifest: dict[str, Any], images_of: ProductionBox | None, progress: Progress
) -> int:
    fd, tmp_name = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                body = json.dumps(manifest, indent=2).encode()
                info = tarfile.TarInfo(MANIFEST_NAME)
                info.size, info.mtime, info.mode = len(body), int(time.time()), 0o600
                tar.addfile(info, io.BytesIO(body))
                for name in manifest["files"]:
                    tar.add(staging / name, arcname=name, recursive=False)
                if images_of is not None:
                    storage = images_of.layout.registry
                    if storage.is_dir():
                        tar.add(storage, arcname="registry", filter=_without_uploads)
                        progress(f"registry: storage added ({_size(_tree_size(storage))} before compression)")
                    else:
                        progress("registry: no images yet")
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(file.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return file.stat().st_size


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- restore ----------------------------------------------------------------------------------
def box_from_manifest(tools: Toolset, root: Path, manifest: Mapping[str, Any]) -> ProductionBox:
    """A box under ``root`` with the options the backed-up box had (its ``production.json``)."""
    options = manifest.get("box")
    if not isinstance(options, dict):
        raise InvalidInput(
            "the backup does not say how its box was set up (no production.json in it)",
            hint="Set the box up first (`billowin up --production --root DIR --domain …`, then "
            "`billowin down --production`), wipe its state but production.json, and restore again.",
        )
    root.mkdir(parents=True, exist_ok=True)
    write_private(root / MANIFEST, json.dumps(options, indent=2))
    return ProductionBox.from_root(tools, root)


def state_found(box: ProductionBox) -> list[str]:
    """The parts of ``box.root`` that hold a box's state already (a restore needs none)."""
    layout = box.layout
    found = [
        path.name
        for path in (layout.consul, layout.nomad, layout.secrets, layout.registry)
        if path.is_dir() and any(path.iterdir())
    ]
    if layout.monitoring_db.exists():
        found.append(str(layout.monitoring_db.relative_to(box.root)))
    return found


def restore(box: ProductionBox, file: Path, progress: Progress = _quiet) -> dict[str, Any]:
    """Restore the archive ``file`` onto ``box``'s fresh root and start the box; returns the manifest."""
    started = time.monotonic()
    file = file.absolute()
    manifest = read_manifest(file)
    for note in check_manifest(
        manifest, consul=tool_version(box.tools.consul), nomad=tool_version(box.tools.nomad)
    ):
        progress(note)
    _check_same_box(box, manifest, progress)
    if found := state_found(box):
        raise Conflict(
            f"{box.root} already holds a box's state ({', '.join(found)}); a restore needs a fresh root",
            hint=f"Stop that box and move {box.root} away (or give another --root), then restore again.",
        )
    progress(
        f"restoring the backup of {manifest.get('created_at', '?')} ({len(manifest.get('apps', []))} apps, "
        f"Consul {manifest['consul']}, Nomad {manifest['nomad']})"
    )
    box.root.mkdir(parents=True, exist_ok=True)
    with box_lock(box, wait=0):
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=box.root))
        try:
            _extract(file, staging, manifest, progress)
            _place_files(box, staging, progress)
            box.start(progress)
            try:
                _restore_state(box, staging, progress)
                _restore_addons(box, manifest, progress)
            except BaseException:
                box.stop()
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not manifest.get("with_images"):
        progress(
            "registry: the backup holds no images; rebuild the apps (`billowin deploy APP --sha …`) "
            "or push their images again"
        )
    progress(f"restored in {time.monotonic() - started:.1f}s; the apps start again as Nomad runs them")
    return manifest


def _check_same_box(box: ProductionBox, manifest: Mapping[str, Any], progress: Progress) -> None:
    """The images of every release are named after the registry's port: it must not change."""
    saved = manifest.get("box") or {}
    port = (saved.get("ports") or {}).get("registry")
    if port is not None and port != box.ports.registry:
        raise InvalidInput(
            f"the backed-up box's registry listened on port {port}, this one's on {box.ports.registry}; "
            f"every release's image is named 127.0.0.1:{port}/…",
            hint="Restore onto a root without production.json (the restore then takes the backup's "
            "options), or onto a box set up with the same ports.",
        )
    if saved.get("domain") not in (None, box.domain):
        progress(f"domain: the backed-up box served {saved['domain']}, this one serves {box.domain}")


def _extract(file: Path, staging: Path, manifest: Mapping[str, Any], progress: Progress) -> None:
    try:
        with tarfile.open(file, mode="r:gz") as tar:
            tar.extractall(staging, filter="data")  # no absolute paths, links out, devices
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInput(f"{file} could not be unpacked: {exc}", hint="Is the copy complete?") from exc
    files = manifest.get("files")
    missing = [
        name
        for name in [*REQUIRED, *(files if isinstance(files, list) else [])]
        if not (staging / name).is_file()
    ]
    if not any((staging / "nomad-keystore").glob("*.nks.json")):
        missing.append("nomad-keystore/*.nks.json")
    if manifest.get("with_images") and not (staging / "registry").is_dir():
        missing.append("registry/")
    if missing:
        raise InvalidInput(
            f"{file} is incomplete: {', '.join(sorted(set(missing)))} missing; nothing was restored",
            hint="Restore another backup (or a complete copy of this one).",
        )
    progress(f"archive: unpacked and complete ({len(files) if isinstance(files, list) else '?'} files)")


def _put_secrets(box: ProductionBox, staging: Path) -> int:
    secrets = [
        p for p in sorted((staging / "secrets").iterdir()) if p.is_file() and SAFE_NAME.fullmatch(p.name)
    ]
    box.layout.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    box.layout.secrets.chmod(0o700)
    for secret in secrets:
        _copy_private(secret, box.layout.secrets / secret.name)
    return len(secrets)


def _place_files(box: ProductionBox, staging: Path, progress: Progress) -> None:
    """Everything that is a file, in place before anything starts."""
    progress(f"secrets: {_put_secrets(box, staging)} files")
    keystore = box.layout.nomad / KEYSTORE
    for directory in (box.layout.nomad, keystore.parent, keystore):
        directory.mkdir(mode=0o700, exist_ok=True)
    keys = sorted((staging / "nomad-keystore").glob("*.nks.json"))
    for key in keys:
        _copy_private(key, keystore / key.name)
    progress(f"nomad: keyring ({len(keys)} root key{'s' if len(keys) > 1 else ''}) in {keystore}")
    box.layout.consul.mkdir(mode=0o700, exist_ok=True)
    for name, (system, rel) in IDENTITY.items():
        if (staging / name).is_file():
            _copy_private(staging / name, getattr(box.layout, system) / rel)
    progress("identity: Consul's node and Nomad's client are the backed-up box's")
    box.layout.billowin.mkdir(parents=True, exist_ok=True)
    db = staging / "billowin" / box.layout.monitoring_db.name
    if db.is_file():
        shutil.copyfile(db, box.layout.monitoring_db)
        progress("monitoring database: restored")
    if (audit := staging / "billowin" / AUDIT_FILE).is_file():
        _copy_private(audit, _audit_path(box))
        progress("audit log: restored")
    if (settings := staging / "etc" / box.settings_file.name).is_file():
        _copy_private(settings, box.settings_file)
        progress("settings file: restored")
    if (dumps := staging / "addon-backups").is_dir():
        os.replace(dumps, box.layout.billowin / "addon-backups")
        progress("add-ons: their dumps restored (loaded once their jobs run)")
    if (registry := staging / "registry").is_dir():
        if box.layout.registry.is_dir():
            box.layout.registry.rmdir()  # empty: state_found said so
        os.replace(registry, box.layout.registry)
        progress(f"registry: storage restored ({_size(_tree_size(box.layout.registry))})")


def _restore_state(box: ProductionBox, staging: Path, progress: Progress) -> None:
    _run(box, [str(box.tools.consul), "snapshot", "restore", str(staging / "consul.snap")], "consul")
    progress("consul: snapshot restored")
    _run(box, [str(box.tools.nomad), "operator", "snapshot", "restore", str(staging / "nomad.snap")], "nomad")
    progress("nomad: snapshot restored")
    _run_restored_allocations(box, progress)
    # The fresh Nomad made new router and API tokens at the start; the snapshot brought back
    # the saved ones, which the saved files hold.
    _put_secrets(box, staging)
    ensure_consul_acls(f"http://127.0.0.1:{box.ports.consul_http}", box.secrets)
    ensure_nomad_acls(f"http://127.0.0.1:{box.ports.nomad_http}", box.secrets)
    progress("tokens: every component's token works on the restored state")
    box.write_configs()
    for name in ("consul-template", "api"):
        box.restart(name)
        progress(f"{name}: restarted on the restored state")


def _run_restored_allocations(box: ProductionBox, progress: Progress) -> None:
    """Restart Nomad until its client runs every restored allocation.

    Nomad 1.6.3's client takes the restored allocations from its server but never sets their
    tasks up: they sit at "Received" until the deployment's deadline fails them. After an agent
    restart it runs the ones it had stored locally, with the same allocation ids and ports. So
    the restart waits until the client holds every allocation (its own allocation endpoint
    answers for each one). A client restarted before that fetches them from the server again,
    and they hang again (seen on the real binaries in a loaded test run), hence the check after
    each restart that each task has moved past "Received".
    """
    # One client throughout: its session reconnects to the restarted agent on the same port.
    admin = nomad_client(f"http://127.0.0.1:{box.ports.nomad_http}", box.secrets.get("nomad-bootstrap"))
    wanted = [
        a["ID"]
        for a in admin.allocations.get_allocations()
        if a.get("DesiredStatus") == "run" and a.get("ClientStatus") in ("pending", "running")
    ]
    for attempt in range(1, RESTORE_RESTARTS + 1):
        held = _poll(lambda: all(_client_holds(admin, a) for a in wanted), RESTORE_WAIT)
        restarted_at = time.time_ns()
        box.restart("nomad")
        if _poll(functools.partial(_all_moved_on, admin, wanted, restarted_at), RESTORE_WAIT):
            progress(f"nomad: restarted on the restored state; {len(wanted)} allocations running again")
            return
        progress(
            f"nomad: restart {attempt}: the client {'held' if held else 'did not yet hold'} the restored "
            "allocations and left some at Received; restarting it again"
        )
    raise ServiceError(
        "nomad",
        f"the restored allocations did not start after {RESTORE_RESTARTS} restarts of Nomad",
        hint=f"Read {box.layout.run / 'nomad.log'}; `billowin restart APP` starts an app's instances anew.",
    )


def _poll(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except (nomad_exc.BaseNomadException, OSError):
            pass  # the agent is still coming up
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _client_holds(admin: Any, alloc: str) -> bool:
    try:
        admin.client.allocation.read_allocation_stats(alloc)
    except nomad_exc.URLNotFoundNomadException:
        return False
    return True


def _all_moved_on(admin: Any, allocs: Sequence[str], since_ns: int) -> bool:
    return all(_moved_on(admin, alloc, since_ns) for alloc in allocs)


def _moved_on(admin: Any, alloc: str, since_ns: int) -> bool:
    """Every task of ``alloc`` has an event after ``since_ns`` beyond "Received" (set up, pulling,
    started, or failed: anything but the hang)."""
    states = (admin.allocation.get_allocation(alloc).get("TaskStates") or {}).values()
    return bool(states) and all(
        any(e.get("Type") != "Received" and e.get("Time", 0) > since_ns for e in s.get("Events") or [])
        for s in states
    )


# -- the schedule --------------------------------------------------------------------------------
def production_root_of(settings: Settings) -> Path | None:
    """The production box this API runs on: its state directory is ``<root>/billowin`` beside the
    box's ``production.json``. None anywhere else (the development stack, tests on fakes)."""
    state = settings.state_dir.absolute()
    root = state.parent
    return root if state.name == "billowin" and (root / MANIFEST).is_file() else None


@dataclass
class BackupSchedule:
    """Backups every ``interval`` seconds into ``directory``, then the hook, then retention.

    ``make_box`` builds the box afresh for each backup (its options and ports may change with
    an upgrade); ``take`` is :func:`backup`, ``clock`` is ``time.time``: both swapped by tests.
    """

    directory: Path
    interval: float
    keep: int
    make_box: Callable[[], ProductionBox]
    hook: str = ""
    with_images: bool = False
    take: Callable[..., BackupResult] = backup
    clock: Callable[[], float] = time.time
    hook_runner: Callable[[str, Path], HookResult] = run_hook
    started: float = field(default=0.0)
    retry_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.started = self.started or self.clock()

    @classmethod
    def for_settings(cls, settings: Settings) -> BackupSchedule | None:
        root = production_root_of(settings)
        if root is None or settings.backup_interval_hours <= 0:
            return None
        hook = settings.backup_hook.get_secret_value() if settings.backup_hook else ""
        return cls(
            directory=settings.backup_dir or root / "backups",
            interval=settings.backup_interval_hours * 3600,
            keep=settings.backup_keep,
            make_box=lambda: ProductionBox.from_root(Toolset.resolve(settings), root),
            hook=hook,
            with_images=settings.backup_with_images,
        )

    def next_due(self) -> float:
        archives = scheduled_archives(self.directory)
        newest = archive_time(archives[-1]) if archives else None
        if newest is not None:
            due = newest.timestamp() + self.interval
        else:
            due = self.started + min(self.interval, FIRST_DELAY)
        return max(due, self.retry_at) if self.retry_at is not None else due

    def run_once(self) -> dict[str, Any]:
        """One scheduled backup, its hook and retention; what happened (also in ``last-backup.json``)."""
        now = self.clock()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / archive_name(datetime.fromtimestamp(now, UTC))
        status: dict[str, Any] = {"at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")}
        try:
            result = self.take(
                self.make_box(), path, with_images=self.with_images, progress=log.info, lock_wait=0
            )
        except Exception as exc:  # never fatal: the API goes on, and the next try comes
            message = exc.message if isinstance(exc, BillowinError) else f"{type(exc).__name__}: {exc}"
            log.error("scheduled backup failed: %s", message)
            self.retry_at = now + min(RETRY_AFTER, self.interval)
            status.update(ok=False, error=message)
            self._write_status(status)
            return status
        self.retry_at = None
        status.update(ok=True, archive=str(result.path), bytes=result.size, seconds=round(result.seconds, 1))
        if self.hook:
            outcome = self.hook_runner(self.hook, result.path)
            (log.info if outcome.ok else log.error)("%s", outcome.message)
            status["hook"] = {"ok": outcome.ok, "message": outcome.message, "exit_code": outcome.exit_code}
        removed = prune(self.directory, self.keep)
        if removed:
            log.info("backups: removed %s", ", ".join(p.name for p in removed))
        status["removed"] = [p.name for p in removed]
        self._write_status(status)
        return status

    def _write_status(self, status: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            write_private(self.directory / STATUS_FILE, json.dumps(status, indent=2) + "\n")

    # -- the thread -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="billowin-backups", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.next_due() - self.clock()
                if wait <= 0:
                    self.run_once()
                    continue
            except Exception:  # a bug here must not end the schedule
                log.exception("backup schedule")
                wait = RETRY_AFTER
            self._stop.wait(min(wait, 60.0))  # look again each minute: an archive may appear
