"""``billowin backup`` and ``billowin restore``: a production box into one archive, and back.

They act on this machine's box (``--root``, default ``BILLOWIN_ROOT`` or /var/lib/billowin),
as root, through Consul's and Nomad's own CLIs with the box's bootstrap tokens; what the
archive holds and the order a restore follows are in :mod:`billowin.stack.backup`. Each step
is a line on stderr.

``restore`` onto a root without ``production.json`` sets the box up with the options the
backed-up box had (domain, ports, address, own engine). When systemd runs this machine and the
box's units are installed, the restored box is handed to systemd at the end, as
``billowin install`` does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from billowin.cli.main import app
from billowin.cli.output import err, fail
from billowin.errors import BillowinError, Conflict, InvalidInput, ServiceError
from billowin.settings import Settings
from billowin.stack.backup import (
    backup,
    box_from_manifest,
    check_manifest,
    read_manifest,
    restore,
    tool_version,
)
from billowin.stack.machine import systemctl, systemd_running, unit_active, unit_enabled
from billowin.stack.production import MANIFEST, ProductionBox
from billowin.stack.tools import Toolset
from billowin.stack.units import TARGET

RootOpt = Annotated[
    Path | None,
    typer.Option(help="The box's root (default: BILLOWIN_ROOT, or /var/lib/billowin).", show_default=False),
]
API_WAIT = 180.0


def _progress(message: str) -> None:
    err.print(f"  {message}", highlight=False)


def _root(given: Path | None, settings: Settings) -> Path:
    return (given or settings.production_root).absolute()


@app.command("backup")
def backup_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The archive to write (.tar.gz, mode 0600).")],
    with_images: Annotated[
        bool, typer.Option("--with-images", help="Also keep the registry's images (a larger archive).")
    ] = False,
    root: RootOpt = None,
) -> None:
    """Back up the running production box into one archive: Consul's and Nomad's snapshots, Nomad's
    keyring, the secrets, the monitoring database and the audit log (and, with --with-images, the images)."""
    settings = Settings()
    where = _root(root, settings)
    try:
        if not (where / MANIFEST).is_file():
            raise InvalidInput(
                f"there is no production box under {where}", hint="Give its --root, if it is elsewhere."
            )
        box = ProductionBox.from_root(Toolset.resolve(settings), where)
        err.print(f"Backing up the box under {where}", highlight=False)
        result = backup(box, file, with_images=with_images, progress=_progress)
    except BillowinError as exc:
        fail(exc)
    err.print(
        f"[green]Backed up[/] to {result.path}. It holds every token: keep it private.", highlight=False
    )


@app.command("restore")
def restore_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An archive written by `billowin backup`.")],
    root: RootOpt = None,
) -> None:
    """Restore a backup onto a fresh (or wiped) root and start the box: apps, releases, config vars,
    domains and tokens come back as they were."""
    settings = Settings()
    where = _root(root, settings)
    try:
        tools = Toolset.resolve(settings)
        manifest = read_manifest(file)  # refuse what cannot be restored before anything is touched
        check_manifest(manifest, consul=tool_version(tools.consul), nomad=tool_version(tools.nomad))
        hand_to_systemd = systemd_running() and unit_enabled(TARGET)
        if systemd_running() and unit_active(TARGET):
            raise Conflict(
                f"systemd runs a production box ({TARGET} is active)",
                hint=f"A restore needs a fresh root: `systemctl stop {TARGET}`, move its root away, "
                "then restore.",
            )
        if (where / MANIFEST).is_file():
            box = ProductionBox.from_root(tools, where)
        else:
            box = box_from_manifest(tools, where, manifest)
        err.print(f"Restoring {file} onto {where}", highlight=False)
        restore(box, file, progress=_progress)
        if hand_to_systemd:
            _hand_to_systemd(box)
    except BillowinError as exc:
        fail(exc)
    err.print(f"[green]Restored.[/] The box under {where} runs the backed-up state.", highlight=False)


def _hand_to_systemd(box: ProductionBox) -> None:
    """Stop the supervisor's processes and start the box's units instead."""
    _progress(f"handing the box to systemd: {TARGET}")
    box.stop()
    systemctl("start", TARGET)
    ready = box.api().ready
    deadline = time.monotonic() + API_WAIT
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceError(
                "api",
                f"does not answer {API_WAIT:.0f}s after systemd started it",
                hint="See `systemctl status 'billowin-*'` and `journalctl -u 'billowin-*'`.",
            )
        time.sleep(1)
