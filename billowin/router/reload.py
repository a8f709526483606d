"""Install a freshly rendered HAProxy configuration, safely.

consul-template runs this after every render (``python -m billowin.router.reload``).
The new file is checked with ``haproxy -c``; only a valid, non-empty render
that carries the Billowin marker replaces the live configuration, and the
previous live file is kept as ``<live>.last-good``. HAProxy (master-worker
mode) is then told to reload hitlessly with SIGUSR2. Anything else leaves the
live configuration, and the running HAProxy, untouched, and exits non-zero so
consul-template logs the refusal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from pathlib import Path

from billowin.adapters.haproxy import check_config

MARKER = "# billowin-router"


class RefusedConfig(Exception):
    pass


def validate(candidate: Path, haproxy_bin: str) -> None:
    try:
        text = candidate.read_text()
    except OSError as exc:
        raise RefusedConfig(f"cannot read {candidate}: {exc}") from exc
    if not text.strip():
        raise RefusedConfig(f"{candidate} is empty")
    if MARKER not in text:
        raise RefusedConfig(f"{candidate} is not a Billowin router configuration")
    problem = check_config(haproxy_bin, candidate)
    if problem:
        raise RefusedConfig(f"haproxy -c refused {candidate}:\n{problem}")


def install(candidate: Path, live: Path, haproxy_bin: str) -> bool:
    """Validate ``candidate`` and make it the live config. Returns whether it changed."""
    validate(candidate, haproxy_bin)
    new = candidate.read_bytes()
    if live.exists():
        if live.read_bytes() == new:
            return False
        shutil.copy2(live, live.with_name(live.name + ".last-good"))
    tmp = live.with_name(live.name + ".tmp")
    tmp.write_bytes(new)
    os.replace(tmp, live)
    return True


def signal_reload(pidfile: Path) -> bool:
    """Ask the HAProxy master for a hitless reload. False when it is not running."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGUSR2)
    except (OSError, ValueError, IndexError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--haproxy", default="haproxy")
    args = parser.parse_args(argv)
    try:
        changed = install(args.candidate, args.live, args.haproxy)
    except RefusedConfig as exc:
        print(f"billowin-router: kept the last good configuration: {exc}", file=sys.stderr)
        return 1
    if changed and signal_reload(args.pidfile):
        print(f"billowin-router: installed {args.live} and reloaded HAProxy", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
