"""HTTPS figures, on a box of their own with a real ACME CA: ``domain_to_https`` and ``router_tls``.

Once ACME is on, the API's certificate manager orders a certificate for every app and the
router redirects their plain HTTP, so these figures never run on the main bench box: they
start knot (authoritative DNS for ``localhost`` and ``example.test``, every name at
127.0.0.1), pebble (Debian's ACME CA, validating HTTP-01 through this box's router) and a
``SingleBox`` whose API runs with ``BILLOWIN_ACME_AUTO=1``, as ``tests/integration/test_https.py``
does, and stop all three at the end.

- ``domain_to_https``: ``domains:add`` (POST ``/apps/<app>/domains``, an admin token) -> the
  first HTTPS 200 for that domain through HAProxy, with a chain that verifies against pebble's
  root and only it. The same-run baseline is the bare certificate order of a fresh name,
  ``System(settings).certificates.issue([name])`` in this process against the same pebble: the
  difference is what the API's wake-up, the manager, the rollout of the domain and the router's
  reload add. Runs are interleaved (baseline, figure, baseline, figure...).
- ``router_tls``: requests/s and latency with ``wrk`` through HAProxy over HTTPS, against plain
  HTTP to the same app and name through the same HAProxy (its redirect switched off:
  PUT ``/apps/<app>/redirect`` ``{"enabled": false}``), interleaved rounds.

``python -m bench --only https`` runs these two alone.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from rich.console import Console

from bench.figures import api, follow, median_run, wrk
from billowin.names import certificate_id
from billowin.settings import Settings
from billowin.stack.single_box import Ports, SingleBox
from billowin.stack.tools import CertTestTools, Toolset
from billowin.system import System
from tests.gitrepo import commit
from tests.integration.acme_servers import Pebble, acme_settings, knot_server, pebble_server, serving

console = Console(stderr=True)

DOMAIN = "localhost"  # the box's own domain: <app>.localhost
ZONE = "example.test"  # a user's own domain, pointed at this router (knot serves it)
# The Go sample app, as in the ``router`` figure: it keeps connections alive (busybox httpd, the
# other figures' hello app, closes each one, so HAProxy would connect to it per request).
SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "apps" / "go"
PAGE = "Hello from Go"

# wrk sends the URL's host as SNI (and as Host), and resolves it first: this makes it connect
# to the router on 127.0.0.1 whatever the name, so HAProxy picks the certificate by that SNI,
# as it would for a real client (no hosts entry, no DNS).
SNI_SCRIPT = """\
function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end
"""


def acme_env(fields: dict[str, Any]) -> dict[str, str]:
    """The same as the API's environment, with the certificate manager on."""
    env = {
        f"BILLOWIN_{name.upper()}": value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        for name, value in fields.items()
    }
    return {**env, "BILLOWIN_ACME_AUTO": "1"}


@contextlib.contextmanager
def https_box(tools: Toolset, work: Path) -> Iterator[tuple[SingleBox, Pebble, Settings]]:
    """knot, pebble, then a box whose API orders certificates; all stopped at the end, newest first.

    Yields the box, pebble, and the box's settings with the ACME ones (for in-process orders)."""
    found = CertTestTools.resolve()
    ports = Ports.free()  # first: pebble validates HTTP-01 on the router's port
    with contextlib.ExitStack() as stack:
        knot = knot_server(found.knotd, work / "knot", DOMAIN, more_zones=(ZONE,))
        stack.enter_context(serving(knot.process))
        pebble = pebble_server(
            found.pebble, work / "pebble", http_port=ports.router_http, dns_server=knot.address
        )
        stack.enter_context(serving(pebble.process))
        fields = acme_settings(pebble, knot)
        box = SingleBox(tools, ports, work / "stack", domain=DOMAIN, api_env=acme_env(fields))
        stack.enter_context(box.running(lambda msg: console.print(f"  https box: {msg}")))
        yield box, pebble, box.settings.model_copy(update=fields)


def https_get(box: SingleBox, trust: ssl.SSLContext, host: str) -> httpx.Response:
    """GET ``https://<host>/`` at the router, with SNI ``host`` and the chain verified for it."""
    with httpx.Client(verify=trust, timeout=5) as client:
        return client.get(
            f"https://127.0.0.1:{box.ports.router_https}/",
            headers={"Host": host},
            extensions={"sni_hostname": host},
        )


def serves_https(box: SingleBox, trust: ssl.SSLContext, host: str) -> bool:
    try:
        resp = https_get(box, trust, host)
    except (httpx.HTTPError, ssl.SSLError):
        return False
    return resp.status_code == 200 and resp.text.startswith(PAGE)


def serves_http(box: SingleBox, host: str) -> bool:
    """Plain HTTP answers 200 with the page (no redirect: httpx does not follow one)."""
    try:
        resp = httpx.get(f"http://127.0.0.1:{box.ports.router_http}/", headers={"Host": host}, timeout=5)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.text.startswith(PAGE)


def wait(predicate: Callable[[], bool], timeout: float, what: str, why: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s {why()}".rstrip())


def bench_https(tools: Toolset, work: Path, runs: int = 3) -> dict[str, Any]:
    """Both HTTPS figures on one box of their own (each kept apart: one failing keeps the other)."""
    out: dict[str, Any] = {}
    with https_box(tools, work / f"https-{uuid.uuid4().hex[:6]}") as (box, pebble, settings):
        trust = ssl.create_default_context(cadata=pebble.root_pem().decode())
        app = f"bhttps{uuid.uuid4().hex[:6]}"
        with api(box) as client:
            client.post("/apps", json={"name": app, "repository": "/nonexistent"}).raise_for_status()
            repo = work / app
            shutil.copytree(SAMPLE, repo)
            build = System(box.settings).builder.build(app, str(repo), commit(repo, "v1"))
            if not build.image:
                raise RuntimeError(f"the build of {app} made no image: {build!r}")
            follow(client, app, client.post(f"/apps/{app}/deploys", json={"image": build.image}).json())
            # apps:create woke the manager: <app>.localhost's order also registers the ACME
            # account, so no timed run below pays for that.
            own = f"{app}.{box.domain}"
            wait(partial(serves_https, box, trust, own), 300, f"https://{own}", partial(why, settings, own))
            figures: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("domain_to_https", lambda: bench_domain_to_https(box, client, trust, settings, app, runs)),
                ("router_tls", lambda: bench_router_tls(box, client, trust, app, own, work)),
            ]
            for name, run in figures:
                try:
                    out[name] = run()
                except Exception as exc:  # one broken figure must not lose the other
                    console.print(f"[red]figure {name} failed:[/] {exc!r}")
                    out[name] = {"error": repr(exc)}
    return out


def why(settings: Settings, name: str) -> str:
    """The stored certificate's state for ``name``: what a timeout says."""
    record = System(settings).cert_store.get(certificate_id([name]))
    if record is None:
        return "(no certificate record)"
    return f"(certificate {record.status}: {record.last_error or 'no error'})"


def bench_domain_to_https(
    box: SingleBox, client: httpx.Client, trust: ssl.SSLContext, settings: Settings, app: str, runs: int
) -> dict[str, Any]:
    system = System(settings)
    totals: list[float] = []
    bare: list[float] = []
    detail: list[dict[str, Any]] = []
    for n in range(1, runs + 1):
        # The baseline: the bare order of a fresh name (routed nowhere, wanted by no app).
        fresh = f"b{n}-{app}.{ZONE}"
        started = time.monotonic()
        record = system.certificates.issue([fresh])
        bare_s = round(time.monotonic() - started, 2)
        if record.status != "valid":
            raise RuntimeError(f"the bare order of {fresh} ended {record.status}: {record.last_error}")
        bare.append(bare_s)

        name = f"d{n}-{app}.{ZONE}"
        wall, started = time.time(), time.monotonic()
        resp = client.post(f"/apps/{app}/domains", json={"domain": name})
        resp.raise_for_status()
        wait(partial(serves_https, box, trust, name), 300, f"https://{name}", partial(why, settings, name))
        total = round(time.monotonic() - started, 2)
        job = follow(client, app, resp.json())  # the domain's rollout: done before the next run
        stored = system.cert_store.get(certificate_id([name]))
        live = next((s["at"] for s in job["steps"] if s["state"] == "live"), None)
        totals.append(total)
        detail.append(
            {
                "domain": name,
                "to_https_200_s": total,
                # where the time went, from the certificate's record and the rollout's own steps
                "certificate_stored_s": _since(wall, stored.updated_at if stored else None),
                "rollout_live_s": _since(wall, datetime.fromisoformat(live) if live else None),
                "bare_order_s": bare_s,
            }
        )
        console.print(
            f"  domains:add -> HTTPS 200 {name}: {total}s "
            f"(certificate stored {detail[-1]['certificate_stored_s']}s, "
            f"rollout live {detail[-1]['rollout_live_s']}s); bare order {bare_s}s"
        )
    median, bare_median = round(statistics.median(totals), 2), round(statistics.median(bare), 2)
    return {
        "runs": runs,
        "median_s": median,
        "min_s": min(totals),
        "max_s": max(totals),
        "bare_order_median_s": bare_median,
        "bare_order_min_s": min(bare),
        "bare_order_max_s": max(bare),
        "median_over_bare_order": round(median / bare_median, 2) if bare_median else None,
        "per_run": detail,
        "note": (
            "POST /apps/<app>/domains (what `billowin domains:add` sends, admin token) to the first "
            "HTTPS 200 for that domain through HAProxy (SNI = the domain, chain verified against "
            "pebble's root only), polled every 0.1s. It includes the API's certificate manager "
            "waking and ordering over HTTP-01 (pebble, PEBBLE_VA_NOSLEEP), the domain's rollout "
            "(a new deployment of the same release carrying the domain's route) and the router's "
            "re-render and reload. The baseline is the bare order of a fresh name in this process "
            "(System.certificates.issue) against the same pebble; runs interleaved with it. The "
            "ACME account was registered before the first run. About 2s of any order here are the "
            "acme library's fixed 1s sleeps (polling the pending authorization, then the order "
            "after finalize); pebble itself answers at once."
        ),
    }


def _since(wall: float, at: datetime | None) -> float | None:
    return round(at.timestamp() - wall, 2) if at is not None else None


def tls_session(box: SingleBox, host: str) -> dict[str, str]:
    """What the router negotiates with OpenSSL's client (wrk's library) for SNI ``host``, no ALPN."""
    address = f"127.0.0.1:{box.ports.router_https}"
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-servername", host, "-brief"],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    wanted = {"Protocol version": "protocol", "Ciphersuite": "cipher", "Peer certificate": "certificate"}
    found = {}
    for line in proc.stderr.splitlines():
        label, _, value = line.partition(":")
        if label.strip() in wanted:
            found[wanted[label.strip()]] = value.strip()
    return found


def bench_router_tls(
    box: SingleBox,
    client: httpx.Client,
    trust: ssl.SSLContext,
    app: str,
    host: str,
    work: Path,
    rounds: int = 3,
    seconds: int = 5,
) -> dict[str, Any]:
    """HTTPS against plain HTTP, same app, same name, same HAProxy; ``rounds`` interleaved wrk runs."""
    client.put(f"/apps/{app}/redirect", json={"enabled": False}).raise_for_status()
    wait(lambda: serves_http(box, host), 60, f"http://{host} without the redirect")
    wait(lambda: serves_https(box, trust, host), 60, f"https://{host}")  # the issued certificate, by SNI
    session = tls_session(box, host)
    script = work / "sni.lua"
    script.write_text(SNI_SCRIPT)
    plain_url = f"http://127.0.0.1:{box.ports.router_http}/"
    tls_url = f"https://{host}:{box.ports.router_https}/"
    plain_runs, tls_runs = [], []
    for _ in range(rounds):
        plain_runs.append(wrk(plain_url, host, seconds))
        tls_runs.append(wrk(tls_url, host, seconds, script))
    plain, tls = median_run(plain_runs), median_run(tls_runs)
    # wrk counts a 3xx as a success: check again that plain HTTP was the page, not a redirect
    if not serves_http(box, host):
        raise RuntimeError(f"http://{host} no longer serves the page (the redirect came back?)")
    console.print(
        f"  router TLS: {tls['rps']:.0f} req/s over HTTPS, {plain['rps']:.0f} over plain HTTP; "
        f"p99 {tls['p99_ms']}ms vs {plain['p99_ms']}ms"
    )
    return {
        "https": tls,
        "plain_http": plain,
        "rps_ratio": round(tls["rps"] / plain["rps"], 3) if plain["rps"] else None,
        "p50_ratio": round(tls["p50_ms"] / plain["p50_ms"], 3) if plain["p50_ms"] else None,
        "p99_ratio": round(tls["p99_ms"] / plain["p99_ms"], 3) if plain["p99_ms"] else None,
        "host": host,
        "tls_session": session,
        "note": (
            f"wrk -t2 -c16 -d{seconds}s, {rounds} interleaved rounds per side (medians of the rounds), "
            "keep-alive: 16 connections opened per round and reused, so this is the per-request cost "
            "of TLS on open connections, not of handshakes. The app: the Go sample (as in the router "
            "figure), one instance. HTTPS: https://<app>.localhost:<port>/ with a wrk Lua script "
            "that resolves every name to 127.0.0.1, so wrk sends the app's real name as SNI and "
            "HAProxy serves the certificate pebble issued for it (picked by SNI from its crt-list; "
            "the same SNI verifies against pebble's root with httpx just before). wrk offers no "
            "ALPN, so HTTP/1.1 over TLS (tls_session: what OpenSSL's client negotiates). Plain HTTP: "
            "the same app and Host through the same HAProxy, its HTTP->HTTPS redirect switched off "
            "(PUT /apps/<app>/redirect). wrk verifies no certificate."
        ),
    }
