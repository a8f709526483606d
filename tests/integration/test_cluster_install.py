"""`billowin install` makes a cluster for real: the first server with --private-interface, then
`join-secrets` there and `install --join` on a second machine, each run as an admin would, with
the CLI inside that machine's network namespace (billowin/stack/netns.py). There is no systemd
here, so `install` writes the units and `billowin up --production` runs the very same processes,
as the README says for such machines; `down --production` stops them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billowin.stack.join import distrust_registry
from billowin.stack.netns import Bridge, Namespace, unmount_under

from .conftest import REPO, wait_for

DOMAIN = "install.test"


def billowin(ns: Namespace, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BILLOWIN_", "NOMAD_", "CONSUL_"))}
    done = subprocess.run(
        [*ns.enter(), sys.executable, "-m", "billowin.cli", *args],
        env={**env, "COLUMNS": "200"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"billowin {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def machines() -> Iterator[tuple[list[Namespace], Path]]:
    # A short root: a Unix socket's path (containerd's, deepest under it) has room for 107 bytes.
    tmp_path = Path(tempfile.mkdtemp(prefix="bwi", dir="/tmp"))
    bridge = Bridge.new(tmp_path.name[-4:].lower().replace("_", "x"))
    try:
        yield bridge.up(2), tmp_path
    finally:
        for i, ns in enumerate(bridge.namespaces, start=1):
            root = tmp_path / f"m{i}"
            if (root / "production.json").is_file():
                subprocess.run(
                    [
                        *ns.enter(),
                        sys.executable,
                        "-m",
                        "billowin.cli",
                        "down",
                        "--production",
                        "--root",
                        str(root),
                    ],
                    cwd=REPO,
                    capture_output=True,
                    timeout=180,
                    check=False,
                )
        bridge.down()
        for i in (1, 2):
            unmount_under(tmp_path / f"m{i}")
        distrust_registry(f"{bridge.subnet.network_address + 11}:5000")
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_install_makes_a_first_server_and_install_join_a_node_that_joins_it(
    machines: tuple[list[Namespace], Path],
) -> None:
    (one, two), tmp = machines
    r1, r2 = tmp / "m1", tmp / "m2"
    common = ["--private-interface", "eth0", "--own-docker", "--skip-image"]
    first = billowin(
        one, "install", "--domain", DOMAIN, "--public-address", one.address, "--root", str(r1),
        "--unit-dir", str(tmp / "units1"), "--node-name", "alpha", *common,
    )  # fmt: skip
    assert "Billowin is installed" in first.stderr
    billowin(one, "up", "--production", "--root", str(r1))
    secrets = tmp / "join.json"
    made = billowin(one, "join-secrets", str(secrets), "--client", "--root", str(r1))
    assert f"--join {one.address}" in " ".join(made.stdout.split())
    joined = billowin(
        two, "install", "--join", one.address, "--join-secrets", str(secrets),
        "--public-address", two.address, "--root", str(r2), "--unit-dir", str(tmp / "units2"),
        "--node-name", "beta", *common,
    )  # fmt: skip
    assert "beta has joined the cluster" in joined.stderr
    assert f"add {two.address} to the round-robin A records" in " ".join(joined.stdout.split())
    units = sorted(p.name for p in (tmp / "units2").iterdir())
    assert "billowin-api.service" not in units and "billowin-registry.service" not in units
    assert "billowin-nomad.service" in units and "billowin-haproxy.service" in units
    billowin(two, "up", "--production", "--root", str(r2))

    token = (r1 / "secrets" / "nomad-bootstrap.token").read_text().strip()

    def ready() -> list[str]:
        nodes = httpx.get(f"http://{one.address}:4646/v1/nodes", headers={"X-Nomad-Token": token}, timeout=5)
        return sorted(n["Name"] for n in nodes.json() if n["Status"] == "ready")

    assert wait_for(lambda: ready() == ["alpha", "beta"], 90, "both nodes ready in Nomad")
    # The second machine's router serves the cluster's names: the API's, from the first server.
    api = httpx.get(f"http://{two.address}/health", headers={"Host": f"billowin.{DOMAIN}"}, timeout=5)
    assert api.status_code == 200, api.text
    unknown = httpx.get(f"http://{two.address}/", headers={"Host": f"nothing.{DOMAIN}"}, timeout=5)
    assert unknown.status_code == 404
