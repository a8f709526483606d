"""A load generator in its own process: GET one app through the router until told to stop.

Run as ``python -m tests.integration.load URL HOST MAX_SECONDS [CA_FILE]``. Each request
opens a new connection, as independent visitors do. With ``CA_FILE`` the URL is HTTPS: each
connection sends ``HOST`` as its SNI and verifies the router's chain against that CA only.
On SIGTERM (or after MAX_SECONDS, whichever is first) it prints one JSON line: the number of
requests, the failures with their reasons and the (Unix) time each failed request started, and
how often each body was seen.
"""

from __future__ import annotations

import json
import signal
import ssl
import sys
import time
from collections import Counter

import httpx


def main() -> int:
    url, host, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    ca_file = sys.argv[4] if len(sys.argv) > 4 else None
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    extensions = {"sni_hostname": host} if ca_file else {}
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    bodies: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    failed_at: list[float] = []
    total = 0
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=10, limits=limits, verify=verify) as client:
        print("ready", flush=True)
        while not stop and time.monotonic() < deadline:
            total += 1
            started = time.time()
            try:
                resp = client.get(url, headers={"Host": host}, extensions=extensions)
            except httpx.HTTPError as exc:
                failures[type(exc).__name__] += 1
                failed_at.append(started)
                continue
            if resp.status_code != 200:
                failures[f"HTTP {resp.status_code}: {resp.text[:60]}"] += 1
                failed_at.append(started)
            else:
                bodies[resp.text.split(" alloc=")[0]] += 1
    result = {"total": total, "failures": dict(failures), "failed_at": failed_at, "bodies": dict(bodies)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
