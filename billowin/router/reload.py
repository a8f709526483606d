"""Install a freshly rendered HAProxy configuration, safely.

consul-template runs this after every render (``python -m billowin.router.reload``).
The new file is checked with ``haproxy -c``; only a valid, non-empty render
that carries the Billowin marker replaces the live configuration, and the
previous live file is kept as ``<live>.last-good``. HAProxy (master-worker
mode) is then told to reload hitlessly with SIGUSR2. Anything else leaves the
live configuration, and the running HAProxy, untouched, and exits non-zero so
consul-template logs the refusal.

One more guard covers a restarting Consul: for a while its catalog is empty
(or instances are not yet re-registered), and consul-template renders exactly
that. A render that drops an app, or all of an app's instances, is refused
while Nomad still runs that app; once Nomad has re-registered the instances,
the next render goes through.

Routing is one map lookup per request: the render carries one ``# route <host> <backend>``
line per app name and custom domain, and ``write_routes`` writes them to the map file the
frontend reads (``--routes-map``) before the render is checked; a refused render puts the
previous map back. Instances are not in the render at all (HAProxy resolves them from
Consul's DNS), so only an app or a domain coming or going reloads HAProxy. Before a reload,
``save_server_state`` saves what the running workers resolved (``show servers state``), and
the new workers start from it.

With ``--certs-dir``, the certificates come first: ``billowin.router.certs.sync`` writes every
stored certificate's PEM, the ``crt-list`` and the HTTPS host map from Consul KV, before the
render is checked (it names them); a change there reloads HAProxy as a new render does. The
template lists each certificate's chain index, so a new, renewed or removed certificate makes
consul-template render and run this again.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

MARKER = "# billowin-router"


BACKEND = re.compile(r"^backend app_(\S+)\s*$")
SERVER = re.compile(r"^\s+server(-template)?\s")
ROUTE = re.compile(r"^# route (\S+) (app_\S+)$")

# Given app names, return those Nomad still runs (raises when Nomad cannot say).
StillRunning = Callable[[set[str]], set[str]]


class RefusedConfig(Exception):
    pass


def servers_per_app(text: str) -> dict[str, int]:
    """How many servers each ``backend app_<name>`` of a rendered config lists."""
    counts: dict[str, int] = {}
    current: str | None = None
    for line in text.splitlines():
        match = BACKEND.match(line)
        if match:
            current = match.group(1)
            counts[current] = 0
        elif line and not line[0].isspace():
            current = None
        elif current is not None and SERVER.match(line):
            counts[current] += 1
    return counts


def lost_apps(live: str, candidate: str) -> set[str]:
    """Apps routed in ``live`` that ``candidate`` drops or leaves with no server."""
    before, after = servers_per_app(live), servers_per_app(candidate)
    return {app for app, n in before.items() if n > 0 and after.get(app, 0) == 0}


def guard_against_lost_apps(live: Path, candidate_text: str, still_running: StillRunning | None) -> None:
    """Refuse a render that routes nothing while Nomad still runs apps the live config routes.

    That is what a restarted (or wiped) Consul renders until Nomad registers the services
    again. A render that still routes some apps goes through, even if it drops others: a
    crash-looping app has no healthy instance and *should* lose its servers, and holding
    back the whole render would also hold back every other app's changes.
    """
    if still_running is None or not live.exists():
        return
    if any(n > 0 for n in servers_per_app(candidate_text).values()):
        return
    lost = lost_apps(live.read_text(), candidate_text)
    if not lost:
        return
    try:
        running = still_running(lost)
    except Exception as exc:  # Nomad unreachable: cannot tell, so keep serving
        raise RefusedConfig(
            f"render drops {sorted(lost)} and Nomad cannot confirm they stopped: {exc}"
        ) from exc
    if running:
        raise RefusedConfig(f"render drops {sorted(running)}, which Nomad still runs (is Consul restarting?)")


def nomad_still_running(nomad_addr: str) -> StillRunning:
    def check(apps: set[str]) -> set[str]:
        from billowin.settings import Settings
        from billowin.system import System

        nomad = System(Settings(nomad_addr=nomad_addr, nomad_timeout=5)).nomad
        running = set()
        for app in apps:
            allocs = nomad.allocations(app) if nomad.current(app) else []
            if any(a.get("ClientStatus") == "running" and a.get("DesiredStatus") != "stop" for a in allocs):
                running.add(app)
        return running

    return check


def validate(candidate: Path, haproxy_bin: str) -> None:
    try:
        text = candidate.read_text()
    except OSError as exc:
        raise RefusedConfig(f"cannot read {candidate}: {exc}") from exc
    if not text.strip():
        raise RefusedConfig(f"{candidate} is empty")
    if MARKER not in text:
        raise RefusedConfig(f"{candidate} is not a Billowin router configuration")
    from billowin.settings import Settings
    from billowin.system import System

    problem = System(Settings(haproxy_bin=haproxy_bin)).router.check_config(candidate)
    if problem:
        raise RefusedConfig(f"haproxy -c refused {candidate}:\n{problem}")


def install(candidate: Path, live: Path, haproxy_bin: str, still_running: StillRunning | None = None) -> bool:
    """Validate ``candidate`` and make it the live config. Returns whether it changed."""
    validate(candidate, haproxy_bin)
    new = candidate.read_bytes()
    guard_against_lost_apps(live, new.decode(), still_running)
    if live.exists():
        if live.read_bytes() == new:
            return False
        shutil.copy2(live, live.with_name(live.name + ".last-good"))
    tmp = live.with_name(live.name + ".tmp")
    tmp.write_bytes(new)
    os.replace(tmp, live)
    return True


def routes_of(text: str) -> list[tuple[str, str]]:
    """The ``# route <host> <backend>`` lines of a render, in order, the first of a host kept."""
    seen: dict[str, str] = {}
    for line in text.splitlines():
        match = ROUTE.match(line)
        if match and match.group(1) not in seen:
            seen[match.group(1)] = match.group(2)
    return list(seen.items())


def write_routes(routes_map: Path, candidate_text: str) -> bytes | None:
    """Write the render's routes to ``routes_map``; the previous content (None: there was none)."""
    try:
        previous: bytes | None = routes_map.read_bytes()
    except OSError:
        previous = None
    data = "".join(f"{host} {backend}\n" for host, backend in routes_of(candidate_text)).encode()
    if data != previous:
        tmp = routes_map.with_name(routes_map.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, routes_map)
    return previous


def restore_routes(routes_map: Path, previous: bytes | None) -> None:
    if previous is None:
        return
    tmp = routes_map.with_name(routes_map.name + ".tmp")
    tmp.write_bytes(previous)
    os.replace(tmp, routes_map)


def save_server_state(socket_path: Path | None, state_file: Path | None) -> None:
    """``show servers state`` of the running HAProxy into ``state_file``, which the next workers
    load (``load-server-state-from-file global``). Nothing is saved when HAProxy does not answer:
    the new workers then resolve every instance afresh."""
    if socket_path is None or state_file is None or not socket_path.exists():
        return
    from billowin.adapters.haproxy import runtime_command
    from billowin.errors import BillowinError

    try:
        state = runtime_command(socket_path, "show servers state")
    except BillowinError as exc:
        print(f"billowin-router: no server state saved: {exc.message}", file=sys.stderr)
        return
    if not state.startswith("1\n"):  # the format version line; anything else is an error message
        print(f"billowin-router: no server state saved: {state[:200]!r}", file=sys.stderr)
        return
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(state)
    os.replace(tmp, state_file)


def signal_reload(pidfile: Path) -> bool:
    """Ask the HAProxy master for a hitless reload. False when it is not running."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGUSR2)
    except (OSError, ValueError, IndexError):
        return False
    return True


def sync_certificates(certs_dir: Path, consul_addr: str | None) -> bool:
    """Write the stored certificates for HAProxy; whether any file changed. When Consul cannot
    be read, the files already there stay (a default certificate is made if none is)."""
    from datetime import UTC, datetime

    from billowin.errors import BillowinError
    from billowin.router import certs

    try:
        from billowin.settings import Settings
        from billowin.system import System

        settings = Settings(consul_addr=consul_addr) if consul_addr else Settings()
        system = System(settings)
        served = certs.served_certificates(system.cert_store, datetime.now(UTC))
    except BillowinError as exc:
        print(f"billowin-router: kept the certificates on disk: {exc.message}", file=sys.stderr)
        if not (certs_dir / certs.DEFAULT).is_file():
            return certs.sync(certs_dir, [])
        return False
    return certs.sync(certs_dir, served)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--haproxy", default="haproxy")
    parser.add_argument("--nomad-addr", help="cross-check dropped apps with this Nomad")
    parser.add_argument("--certs-dir", type=Path, help="write the stored certificates here for HTTPS")
    parser.add_argument("--consul-addr", help="the Consul whose KV holds the certificates")
    parser.add_argument("--routes-map", type=Path, help="the host -> backend map the render's routes go to")
    parser.add_argument("--socket", type=Path, help="HAProxy's runtime API (to save the server state)")
    parser.add_argument("--server-state", type=Path, help="where the server state is saved before a reload")
    args = parser.parse_args(argv)
    still_running = nomad_still_running(args.nomad_addr) if args.nomad_addr else None
    certs_changed = False
    if args.certs_dir is not None:
        certs_changed = sync_certificates(args.certs_dir, args.consul_addr)
    previous_routes: bytes | None = None
    if args.routes_map is not None:
        try:
            previous_routes = write_routes(args.routes_map, args.candidate.read_text())
        except OSError as exc:
            print(f"billowin-router: kept the last good configuration: cannot read {exc}", file=sys.stderr)
            return 0
    try:
        changed = install(args.candidate, args.live, args.haproxy, still_running)
    except RefusedConfig as exc:
        # Exit 0 all the same: consul-template stops altogether when its command fails,
        # and the router must keep watching for the next render.
        print(f"billowin-router: kept the last good configuration: {exc}", file=sys.stderr)
        changed = False
        if args.routes_map is not None:
            restore_routes(args.routes_map, previous_routes)
        if not certs_changed:
            return 0
    if changed or certs_changed:
        save_server_state(args.socket, args.server_state)
    if (changed or certs_changed) and signal_reload(args.pidfile):
        print(f"billowin-router: installed {args.live} and reloaded HAProxy", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
