"""One real single-box stack per test session.

The fixtures start real ``dockerd`` (when no engine runs), the Docker
registry, ``consul agent -dev``, ``nomad agent -dev`` with the docker driver,
consul-template + HAProxy and the Billowin API, each on free ports, exactly as
``billowin up`` does. Logs stay under the session's temporary directory and
are printed when the stack fails to start. A missing binary fails the session:
nothing here ever skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from billowin.release.deploy import Deployer
from billowin.settings import Settings
from billowin.stack.install import base_image_tag, docker_image_exists
from billowin.stack.single_box import Ports, SingleBox, VaultDev
from billowin.stack.tools import Toolset
from billowin.system import System
from tests.gitrepo import commit

from . import alert_receiver as alert_receiver_server
from . import fake_github as fake_github_server
from .alert_receiver import AlertReceiver
from .fake_github import FakeGitHub

REPO = Path(__file__).resolve().parents[2]


WEBHOOK_SECRET = "billowin-test-webhook-secret"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, unmount what production boxes' Nomad and Docker left under the
    session's temporary directory (allocations' secrets, overlays), so it can be deleted."""
    yield
    from .production import unmount_under

    unmount_under(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def fake_github() -> Iterator[FakeGitHub]:
    fake, server = fake_github_server.start()
    yield fake
    server.should_exit = True


@pytest.fixture(scope="session")
def travis_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def alert_receiver() -> Iterator[AlertReceiver]:
    """Where the session's API delivers its monitoring alerts."""
    receiver = alert_receiver_server.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    fake_github: FakeGitHub,
    travis_key: rsa.RSAPrivateKey,
    alert_receiver: AlertReceiver,
) -> Iterator[SingleBox]:
    settings = Settings()  # where `make setup` put the binaries
    tools = Toolset.resolve(settings)  # raises (fails the session) when any is missing
    state = tmp_path_factory.mktemp("stack")
    travis_pem = travis_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    api_env = {
        "BILLOWIN_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BILLOWIN_GITHUB_TOKEN": "ghp_billowintesttoken",
        "BILLOWIN_GITHUB_API_URL": fake_github.url,
        "BILLOWIN_TRAVIS_PUBLIC_KEY": travis_pem.decode(),
        "BILLOWIN_PUBLIC_URL": "http://billowin.test",
        "BILLOWIN_DEPLOY_TIMEOUT": "120",
        # Monitoring: sample often, and call two crashes in a minute a crash loop, to keep tests short.
        "BILLOWIN_METRICS_INTERVAL": "2",
        "BILLOWIN_ALERT_WEBHOOK_URL": alert_receiver.url,
        "BILLOWIN_ALERT_CRASH_RESTARTS": "2",
        "BILLOWIN_ALERT_CRASH_WINDOW": "60",
        # A certificate failing for 5 s "keeps failing" (a day in production).
        "BILLOWIN_ALERT_CERT_FAILING_AFTER": "5",
        # Review apps: check TTLs and max every 2 s (each pull_request delivery wakes it too).
        "BILLOWIN_REVIEW_APPS_INTERVAL": "2",
    }
    box = SingleBox(tools, Ports.free(), state, api_env=api_env)
    box.start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="session")
def vault(stack: SingleBox) -> Iterator[VaultDev]:
    """A real Vault dev server for the session, stopped cleanly at the end."""
    dev = stack.vault()
    dev.process.start()
    try:
        dev.process.wait_ready(60)
        yield dev
    finally:
        dev.process.stop()


@pytest.fixture(scope="session")
def base_image() -> str:
    tag = base_image_tag(Settings())
    assert docker_image_exists(tag), f"base image {tag} is missing: run `make setup`"
    return tag


@pytest.fixture
def app_name() -> str:
    """A unique app name per test, so tests never share state."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def router(stack: SingleBox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.ports.router_http}", timeout=10) as client:
        yield client


def write_hello_app(directory: Path, base_image: str, greeting: str) -> Path:
    """A trivial web app: busybox httpd serving one page on $PORT."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.html").write_text(greeting)
    (directory / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "COPY index.html /srv/www/index.html\n"
        'CMD ["sh", "-c", "exec busybox httpd -f -v -p \\"$PORT\\" -h /srv/www"]\n'
    )
    return directory


# What each kind of sample release does when it starts.
STARTS = {
    # Serves "<greeting> release=<release> alloc=<allocation id>".
    "ok": (
        'echo "$GREETING release=$BILLOWIN_RELEASE alloc=$NOMAD_ALLOC_ID" > /srv/www/index.html; '
        'exec busybox httpd -f -p "$PORT" -h /srv/www'
    ),
    # Dies at once, every time.
    "crash": "echo 'boom: cannot connect to the database' >&2; exit 1",
    # Runs, but its health check never passes (nothing to serve: 404).
    "unhealthy": 'exec busybox httpd -f -p "$PORT" -h /srv/www',
}


@pytest.fixture
def make_image(stack: SingleBox, base_image: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build and push a sample release image; returns its registry reference."""
    docker = System(stack.settings).docker

    def make(app: str, tag: str, greeting: str = "hello", kind: str = "ok") -> str:
        context = tmp_path / f"{app}-{tag}"
        context.mkdir(parents=True)
        (context / "Dockerfile").write_text(
            f"FROM {base_image}\n"
            "RUN mkdir -p /srv/www\n"
            f'ENV GREETING="{greeting}"\n'
            f"CMD {json.dumps(['sh', '-c', STARTS[kind]])}\n"
        )
        ref = f"{stack.settings.registry}/{app}:{tag}"
        docker.build(context, ref)
        docker.push(ref)
        return ref

    return make


@pytest.fixture
def deployer(stack: SingleBox) -> Deployer:
    settings = stack.settings
    return System(settings).deployer


@pytest.fixture
def cleanup_apps(stack: SingleBox) -> Iterator[list[str]]:
    """Apps a test appends here are stopped (purged) when it ends, pass or fail."""
    apps: list[str] = []
    yield apps
    nomad = System(stack.settings).nomad
    for app in apps:
        nomad.stop(app)


class Load:
    """A load generator running in a second process for the length of a ``with`` block."""

    def __init__(
        self,
        stack: SingleBox | None,
        host: str,
        max_seconds: float = 240,
        *,
        https_ca: Path | None = None,
        url: str = "",
    ) -> None:
        """With ``https_ca``, over HTTPS (SNI ``host``), trusting that CA file only. ``url``: a
        router of one's own (a cluster node's) instead of the stack's."""
        if stack is not None:
            url = (
                f"https://127.0.0.1:{stack.ports.router_https}/"
                if https_ca
                else f"http://127.0.0.1:{stack.ports.router_http}/"
            )
        self.argv = [sys.executable, "-m", "tests.integration.load", url, host, str(max_seconds)]
        if https_ca:
            self.argv.append(str(https_ca))
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Load:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        self.result = json.loads(out.strip().splitlines()[-1])


class Cli:
    """Runs ``billowin`` like a user's shell would, with its own login in a private config dir."""

    def __init__(self, stack: SingleBox | None, config_home: Path, *, api: str = "", token: str = "") -> None:
        """Logged in to ``stack``'s API with a new admin token, or to ``api`` with ``token``."""
        if stack is not None:
            token = System(stack.settings).tokens.create("cli tests")
            api = f"http://127.0.0.1:{stack.ports.api}"
        self.token = token
        self.api = api
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BILLOWIN_", "NOMAD_", "CONSUL_"))},
            "XDG_CONFIG_HOME": str(config_home),
            "COLUMNS": "200",
        }
        self("login", "--api-url", self.api, "--token", self.token)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "billowin.cli", *args]

    def __call__(
        self, *args: str, ok: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args),
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if ok:
            assert done.returncode == 0, f"billowin {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    def on_terminal(self, *args: str, script: list[tuple[str, str]], timeout: float = 90) -> tuple[int, str]:
        """Run ``billowin`` on a pseudo-terminal, as from a user's shell: for each ``(wait_for,
        type)`` of ``script``, wait until the screen shows ``wait_for``, then type ``type``.
        Returns the exit code and everything the terminal showed."""
        pid, fd = pty.fork()
        if pid == 0:  # the child: the CLI, with the terminal as its stdin, stdout and stderr
            os.chdir(REPO)
            os.execve(sys.executable, self.argv(*args), self.env)  # noqa: S606 - argv, never a shell
        screen = b""
        deadline = time.monotonic() + timeout
        reaped = False

        def read_until(text: str) -> None:
            nonlocal screen
            while text.encode() not in screen:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the terminal never showed {text!r}: {screen[-2000:]!r}")
                ready, _, _ = select.select([fd], [], [], 0.5)
                if ready:
                    try:
                        screen += os.read(fd, 65536)
                    except OSError:  # the CLI ended and closed the terminal
                        assert text.encode() in screen, f"the CLI ended before {text!r}: {screen[-2000:]!r}"

        try:
            for wait_text, typed in script:
                read_until(wait_text)
                os.write(fd, typed.encode())
            while time.monotonic() < deadline:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    reaped = True
                    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")
                with contextlib.suppress(OSError):
                    if select.select([fd], [], [], 0.2)[0]:
                        screen += os.read(fd, 65536)
            raise AssertionError(f"the CLI did not end: {screen[-2000:]!r}")
        finally:
            if not reaped:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(stack: SingleBox, tmp_path: Path) -> Cli:
    return Cli(stack, tmp_path / "config")


@pytest.fixture
def destroy_after(cli: Cli) -> Iterator[list[str]]:
    """Apps the test creates: destroyed afterwards, with the CLI, whatever the outcome."""
    apps: list[str] = []
    yield apps
    for app in apps:
        cli("apps:destroy", app, "--confirm", app, ok=False)


def deploy_sample(
    cli: Cli, sample: Path, repo: Path, app: str, destroy_after: list[str]
) -> tuple[dict[str, Any], str]:
    """``sample`` committed as the repository ``repo``, created as ``app`` and deployed with
    ``billowin deploy --wait``: the job, and its build log (``billowin builds:output``)."""
    shutil.copytree(sample, repo)
    sha = commit(repo)
    destroy_after.append(app)
    cli.json("apps:create", app, "--repository", str(repo))
    job = json.loads(cli("deploy", app, "--sha", sha, "--wait", "--json", ok=False).stdout)
    return job, cli("builds:output", app, job["id"]).stdout


def routed(router: httpx.Client, app: str, path: str = "") -> str | None:
    """``app``'s page at ``/path`` through the router, or None while it does not answer 200."""
    try:
        resp = router.get(f"/{path}", headers={"Host": f"{app}.localhost"})
    except httpx.TransportError:
        return None
    return resp.text if resp.status_code == 200 else None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
