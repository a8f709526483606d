"""App management the way a user does it: the ``billowin`` CLI, as a subprocess, against the real API.

Create → deploy a commit (with a Procfile release phase) → config:set (served
back through HAProxy) → ps:scale → releases → rollback (old config served
again) → logs --tail from both instances → run → destroy.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import httpx
import pytest

from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.gitrepo import commit

from .conftest import REPO, Cli, wait_for

APP_PY = """
import os
import sys

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "Hello from Python on Billowin\\n"


@app.get("/greeting")
def greeting() -> str:
    # Echoes a config var, so a test can see which config a release runs.
    return os.environ.get("GREETING", "unset")


@app.get("/note/<text>")
def note(text: str) -> str:
    print(f"note {text} from {os.environ.get('NOMAD_ALLOC_ID', '?')[:8]}", flush=True)
    print(f"note-err {text}", file=sys.stderr, flush=True)
    return "noted"
"""

PROCFILE = (
    "web: gunicorn --bind 0.0.0.0:$PORT --workers 1 app:app\n"
    "release: echo release phase for $BILLOWIN_RELEASE\n"
)


@pytest.fixture
def sample_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "tests" / "fixtures" / "apps" / "python", repo)
    (repo / "app.py").write_text(APP_PY)
    (repo / "Procfile").write_text(PROCFILE)
    return repo, commit(repo)


def greeting(router: httpx.Client, app: str) -> str:
    try:
        resp = router.get("/greeting", headers={"Host": f"{app}.localhost"})
    except httpx.TransportError as exc:  # polled while things change: "not yet", not a crash
        return f"transport error {exc}"
    return resp.text if resp.status_code == 200 else f"HTTP {resp.status_code}"


def served(router: httpx.Client, app: str, text: str) -> bool:
    # Several reads, so that no instance still serves another value (both, once scaled).
    return all(greeting(router, app) == text for _ in range(6))


def test_a_user_manages_an_app_through_the_cli(
    stack: SingleBox,
    cli: Cli,
    app_name: str,
    sample_repo: tuple[Path, str],
    router: httpx.Client,
    destroy_after: list[str],
) -> None:
    repo, sha = sample_repo
    destroy_after.append(app_name)
    secret_v1, secret_v2 = f"first-{uuid.uuid4().hex}", f'second {uuid.uuid4().hex} "quoted" $HOME'

    created = cli.json("apps:create", app_name, "--repository", str(repo))
    assert created["url"].startswith(f"http://{app_name}.localhost:")

    # Deploy a commit and wait: the release phase runs first, and its output is shown.
    deployed = cli("deploy", app_name, "--sha", sha, "--wait")
    assert "release phase for v1" in deployed.stderr
    assert "is live" in deployed.stderr
    wait_for(lambda: served(router, app_name, "unset"), 30, "v1 to be served")

    # A config var is served back through HAProxy once its release is live.
    cli("config:set", app_name, f"GREETING={secret_v1}")
    wait_for(lambda: served(router, app_name, secret_v1), 30, "the first config value to be served")
    cli("config:set", app_name, f"GREETING={secret_v2}")
    wait_for(lambda: served(router, app_name, secret_v2), 30, "the second config value to be served")

    # Listing shows the key; values only on request.
    hidden = cli.json("config", app_name)
    assert hidden["values"] == {"GREETING": None}
    assert cli.json("config", app_name, "--reveal")["values"] == {"GREETING": secret_v2}

    # Scale to two instances: both running, both serve.
    cli("ps:scale", app_name, "web=2")
    System(stack.settings).catalog.wait_for_healthy(app_name, count=2, timeout=60)
    wait_for(
        lambda: len([i for i in cli.json("ps", app_name) if i["state"] == "running"]) == 2, 60, "2 running"
    )
    instances = [i for i in cli.json("ps", app_name) if i["state"] == "running"]
    assert sorted(i["name"] for i in instances) == ["web.1", "web.2"]
    assert all(i["release"] == "v3" and i["restarts"] == 0 for i in instances), [
        (i["release"], i["restarts"]) for i in instances
    ]

    # Releases: the deploy, then one per config change, each with its config version.
    releases = cli.json("releases", app_name)
    assert [(r["number"], r["status"], r["config_version"]) for r in releases] == [
        (1, "live", 0),
        (2, "live", 1),
        (3, "live", 2),
    ]
    assert releases[0]["sha"] == sha and releases[2]["cause"] == "config: set GREETING"
    table = cli("releases", app_name).stdout
    assert "v3" in table and sha[:7] in table

    # Roll back to v2: its image and its config come back, as a new release v4; scale is kept.
    cli("rollback", app_name, "v2")
    wait_for(lambda: served(router, app_name, secret_v1), 30, "v2's config to be served again")
    latest = cli.json("releases", app_name)[-1]
    assert (latest["number"], latest["rollback_of"], latest["config_version"]) == (4, "v2", 1)
    assert len(System(stack.settings).catalog.wait_for_healthy(app_name, count=2, timeout=60)) == 2

    check_run(cli, app_name)
    check_logs_from_both_instances(cli, router, app_name)
    check_secrets_nowhere(stack, cli, app_name, [secret_v1, secret_v2.split()[1]])

    # Destroy: the route goes, and so does everything Billowin kept.
    cli("apps:destroy", app_name, "--confirm", app_name)
    wait_for(lambda: greeting(router, app_name) == "HTTP 404", 30, "the route to go away")
    assert app_name not in [a["name"] for a in cli.json("apps")]
    assert System(stack.settings).nomad.current(app_name) is None
    gone = cli("apps:info", app_name, ok=False)
    assert gone.returncode == 1 and "no app named" in gone.stderr


def check_run(cli: Cli, app: str) -> None:
    """`run` prints a command's output, with the release's config; its exit code is the CLI's."""
    ran = cli("run", app, "--", "echo run-sees ${GREETING%%-*}")  # one argument: a shell line
    assert "run-sees first" in ran.stdout
    exact = cli("run", app, "--", "printf", "[%s]", "two words", "$HOME")  # several: exactly these
    assert "[two words][$HOME]" in exact.stdout
    failed = cli("run", app, "--", "echo oops >&2; exit 3", ok=False)
    assert failed.returncode == 3 and "oops" in failed.stderr
    # -i: piped stdin reaches the command, and its exit code is still the CLI's.
    piped = cli("run", "-i", app, "--", "read line; echo got:$line; exit 4", input="hello\n", ok=False)
    assert piped.returncode == 4 and "got:hello" in piped.stdout, piped.stderr
    # On a terminal, run is interactive: a shell that reads what is typed, with a TTY.
    code, screen = cli.on_terminal(
        "run", app, "--", "sh", script=[("# ", "tty && echo $((6*7))\r"), ("42", "exit 5\r")]
    )
    assert code == 5 and "/dev/pts/" in screen, screen


def check_secrets_nowhere(stack: SingleBox, cli: Cli, app: str, secrets: list[str]) -> None:
    """Config values are nowhere in the job Nomad holds, in any API listing, or in any log file."""
    job = json.dumps(System(stack.settings).nomad.current(app))
    assert not [s for s in secrets if s in job]
    headers = {"Authorization": f"Bearer {cli.token}"}
    for path in ("", "/config", "/releases", "/deploys", "/ps", "/domains"):
        body = httpx.get(f"{cli.api}/apps/{app}{path}", headers=headers, timeout=10).text
        assert not [s for s in secrets if s in body], path
    for path in stack.state_dir.rglob("*"):
        if path.is_file() and (path.suffix == ".log" or "logs" in path.parts):
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path


def check_logs_from_both_instances(cli: Cli, router: httpx.Client, app: str) -> None:
    """`logs --tail` merges both instances' stdout and stderr into one stream, tagged web.1 / web.2."""
    marker = uuid.uuid4().hex[:12]
    seen: set[tuple[str, str]] = set()
    received: list[str] = []
    with subprocess.Popen(
        cli.argv("logs", app, "--tail", "--num", "0"),
        env=cli.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout or []], daemon=True).start()
        try:

            def both_seen() -> bool:
                router.get(f"/note/{marker}", headers={"Host": f"{app}.localhost"})
                while not lines.empty():
                    line = lines.get()
                    received.append(line)
                    if marker in line:
                        process, stream = line.split()[1], line.split()[3].rstrip(":")
                        seen.add((process, stream))
                processes, streams = {p for p, _ in seen}, {s for _, s in seen}
                return {"web.1", "web.2"} <= processes and {"stdout", "stderr"} <= streams

            wait_for(both_seen, 60, f"log lines from both instances, stdout and stderr; got {received[-20:]}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_deploy_wait_exits_non_zero_when_the_release_fails(
    stack: SingleBox, cli: Cli, app_name: str, sample_repo: tuple[Path, str], destroy_after: list[str]
) -> None:
    repo, _ = sample_repo
    destroy_after.append(app_name)
    (repo / "Procfile").write_text("web: gunicorn --bind 0.0.0.0:$PORT app:app\nrelease: exit 7\n")
    sha = commit(repo, "a failing release phase")
    cli("apps:create", app_name, "--repository", str(repo))
    done = cli("deploy", app_name, "--sha", sha, "--wait", ok=False)
    assert done.returncode == 1
    assert "release command failed (exit 7)" in done.stderr
    # Nothing was rolled out.
    assert System(stack.settings).nomad.current(app_name) is None


def test_every_app_endpoint_refuses_calls_without_a_valid_token(stack: SingleBox, cli: Cli) -> None:
    spec = httpx.get(f"{cli.api}/openapi.json", timeout=10).json()
    token_id = cli.token.split("_")[1]
    bad = [
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": f"Bearer bw_{token_id}_{'A' * 43}"},  # a real id, a guessed secret
        {"Authorization": cli.token},  # no scheme
    ]
    checked = 0
    for path, methods in spec["paths"].items():
        if path == "/health" or path.startswith(("/hooks/", "/.well-known/acme-challenge/")):
            continue  # public: a load balancer's probe, GitHub's and Travis's calls, the ACME CA's
        url = cli.api + path.replace("{app}", "some-app").replace("{job_id}", "1").replace("{domain}", "x.io")
        for method in methods:
            for headers in bad:
                resp = httpx.request(method.upper(), url, headers=headers, json={}, timeout=10)
                assert resp.status_code == 401, (method, path, headers, resp.text)
                assert cli.token not in resp.text
            checked += 1
    assert checked >= 20
