"""Security review, build side: image collection, the repository guard, credentials, isolation.

Everything runs against the session's real stack (Docker, the registry, Nomad, Consul,
HAProxy, the API and its worker) and the real ``git``, ``packer`` and ``docker-registry``.

- Image collection never removes what a live release runs, and an image Docker refuses to
  remove (a container uses it) never fails a build.
- The registry's own garbage collector frees a deleted image's layers, and refuses to run
  beside a running registry.
- Repository URLs naming loopback or private addresses, in any spelling, and names that do
  not resolve are refused; git is pinned to the address that was checked and follows no
  redirect (a local HTTPS git server proves both); credentials never show.
- App containers cannot reach each other; builds are bounded in memory and processes.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import ipaddress
import os
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from billowin.build.builder import Builder
from billowin.build.hygiene import collect_registry_garbage
from billowin.build.source import GIT_SAFETY, fetch
from billowin.errors import BuildFailed, InvalidInput, ServiceError
from billowin.release.jobspec import Process
from billowin.release.store import ReleaseStatus
from billowin.stack.single_box import Ports, SingleBox
from billowin.system import System
from tests.gitrepo import ENV as GIT_ENV
from tests.gitrepo import commit

from .conftest import wait_for

GIT_HOST = "git.billowin.test"  # .test never resolves: only a pinned address can reach it


def tiny_app(repo: Path, greeting: str) -> Path:
    """A Python app with nothing to install (a quick build) that serves one page."""
    (repo / "www").mkdir(parents=True, exist_ok=True)
    (repo / "www" / "index.html").write_text(greeting + "\n")
    (repo / "requirements.txt").write_text("")
    (repo / "Procfile").write_text('web: exec busybox httpd -f -p "$PORT" -h /app/www\n')
    return repo


def page(router: httpx.Client, app: str) -> str | None:
    try:
        resp = router.get("/", headers={"Host": f"{app}.localhost"})
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None


# -- 1. image collection ------------------------------------------------------------------------------
def test_collection_never_removes_the_live_image_and_skips_images_in_use(
    stack: SingleBox, tmp_path: Path, app_name: str, router: httpx.Client, cleanup_apps: list[str]
) -> None:
    cleanup_apps.append(app_name)
    system = System(stack.settings.model_copy(update={"keep_images": 1}))
    builder, engine, registry = system.builder, system.docker, system.image_registry
    repo = tiny_app(tmp_path / "repo", "v1")

    live = builder.build(app_name, str(repo), commit(repo))
    assert live.image is not None
    release = system.deployer.deploy(
        app_name, live.image, [Process(name="web", command=["sh", "-c", live.processes["web"]])], sha=live.sha
    )
    assert release.status == ReleaseStatus.LIVE, release.description
    wait_for(lambda: page(router, app_name) == "v1\n", 60, "v1 to be served")

    builds = []
    for greeting in ("v2", "v3"):  # each build collects what is beyond keep_images=1
        tiny_app(repo, greeting)
        builds.append(builder.build(app_name, str(repo), commit(repo, greeting)))
    second, third = builds

    assert engine.image_exists(live.image), "the live release's image was removed"
    assert live.sha in registry.tags(app_name)
    assert builder.record(app_name, live.sha).status == "succeeded"
    assert page(router, app_name) == "v1\n"
    assert second.image and not engine.image_exists(second.image)
    assert builder.record(app_name, second.sha).status == "collected"

    # A container (even a stopped one) keeps an image: Docker answers 409 to its removal.
    client = docker.from_env()
    try:
        holder = client.containers.create(third.image, command=["true"], labels={"billowin.test": app_name})
        try:
            lines: list[str] = []
            tiny_app(repo, "v4")
            fourth = builder.build(app_name, str(repo), commit(repo, "v4"), log=lines.append)
            assert fourth.status == "succeeded"
            assert third.image and engine.image_exists(third.image)
            assert builder.record(app_name, third.sha).status == "succeeded"  # collected next time
            assert any("Keeping" in line and third.image in line for line in lines), lines
        finally:
            holder.remove(force=True)
    finally:
        client.close()
    assert engine.image_exists(live.image)
    assert page(router, app_name) == "v1\n"


def test_the_registry_garbage_collector_frees_deleted_images_but_never_runs_beside_the_registry(
    stack: SingleBox, base_image: str, tmp_path: Path
) -> None:
    box = SingleBox(stack.tools, Ports.free(), tmp_path / "gc-state")
    proc = box.registry()  # a registry of its own, so the session's stays untouched
    storage = tmp_path / "gc-state" / "registry"
    address = f"127.0.0.1:{box.ports.registry}"
    engine = docker.from_env()
    tags = []
    try:
        proc.start()
        proc.wait_ready(60)
        images = {}
        for name in ("gone", "kept"):
            context = tmp_path / name
            context.mkdir()
            (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo {uuid.uuid4().hex} > /{name}\n")
            ref = f"{address}/gc-test:{name}"
            engine.images.build(path=str(context), tag=ref, rm=True, pull=False)
            tags.append(ref)
            images[name] = System(box.settings).docker.push(ref)

        with pytest.raises(ServiceError, match="while the registry"):
            collect_registry_garbage(stack.tools.docker_registry, storage, address=address)

        System(box.settings).image_registry.delete("gc-test", images["gone"])
        blobs_before = sum(1 for _ in (storage / "docker/registry/v2/blobs").rglob("data"))
        proc.stop()
        out = collect_registry_garbage(stack.tools.docker_registry, storage, address=address)
        blobs_after = sum(1 for _ in (storage / "docker/registry/v2/blobs").rglob("data"))
        assert blobs_after < blobs_before, out
        gone_manifest = images["gone"].split(":", 1)[1]
        assert not (storage / "docker/registry/v2/blobs/sha256" / gone_manifest[:2] / gone_manifest).exists()

        proc.start()
        proc.wait_ready(60)
        kept = httpx.get(
            f"http://{address}/v2/gc-test/manifests/kept",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=10,
        )
        assert kept.status_code == 200
        for layer_ref in kept.json()["layers"]:
            blob = httpx.head(f"http://{address}/v2/gc-test/blobs/{layer_ref['digest']}", timeout=10)
            assert blob.status_code == 200, layer_ref
    finally:
        proc.stop()
        for ref in tags:
            with contextlib.suppress(docker.errors.DockerException):
                engine.images.remove(ref, force=True)
        engine.close()


# -- 2. the repository guard --------------------------------------------------------------------------
REFUSED = [
    "https://127.0.0.1/repo.git",
    "https://2130706433/repo.git",
    "https://0x7f.1/repo.git",
    "https://[::ffff:127.0.0.1]/repo.git",
    "https://100.64.0.1/repo.git",
    "https://169.254.169.254/latest/meta-data",
    "https://does-not-resolve.billowin.invalid/repo.git",
]


@pytest.mark.parametrize("url", REFUSED)
def test_the_builder_refuses_private_or_unresolvable_repositories(
    stack: SingleBox, tmp_path: Path, app_name: str, url: str
) -> None:
    builder = System(stack.settings).builder
    with pytest.raises(BuildFailed, match=r"refusing repository") as info:
        builder.build(app_name, url, "0" * 40)
    assert builder.record(app_name, "0" * 40).status == "failed"
    assert "private" in info.value.message or "does not resolve" in info.value.message


def test_the_api_refuses_a_numeric_loopback_repository_and_never_shows_its_credentials(
    stack: SingleBox, app_name: str
) -> None:
    api = f"http://127.0.0.1:{stack.ports.api}"
    auth = {"Authorization": f"Bearer {System(stack.settings).tokens.create('security build tests')}"}
    secret = f"tok-{uuid.uuid4().hex}"
    created = httpx.post(
        f"{api}/apps",
        json={"name": app_name, "repository": f"https://deploy:{secret}@2130706433/owner/repo.git"},
        headers=auth,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    try:
        job = httpx.post(f"{api}/apps/{app_name}/deploys", json={"sha": "1" * 40}, headers=auth, timeout=30)
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]

        def finished() -> dict[str, Any] | None:
            resp = httpx.get(f"{api}/apps/{app_name}/deploys/{job_id}?wait=10", headers=auth, timeout=30)
            data: dict[str, Any] = resp.json()
            return data if data["state"] in ("failed", "live", "superseded") else None

        done = wait_for(finished, 120, "the deploy to finish")
        assert done["state"] == "failed"
        assert "refusing repository" in done["reason"] and "127.0.0.1" in done["reason"], done["reason"]
        log = httpx.get(f"{api}/apps/{app_name}/deploys/{job_id}/log", headers=auth, timeout=30)
        assert secret not in str(done) and secret not in log.text
    finally:
        httpx.delete(f"{api}/apps/{app_name}?confirm={app_name}", headers=auth, timeout=120)


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GIT_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(GIT_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class GitServer:
    """git's smart HTTP protocol (``git http-backend``) over TLS on 127.0.0.1, as ``GIT_HOST``.

    ``/moved/<path>`` answers a redirect to ``/<path>``; with ``credentials`` set, anything
    else needs ``Authorization: Basic`` with one of them.
    """

    def __init__(self, root: Path, cert: Path, key: Path) -> None:
        self.root = root
        self.credentials: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                server.handle(self)

            def do_POST(self) -> None:
                server.handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"https://{userinfo}{GIT_HOST}:{self.port}/{path}"

    def handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        self.requests.append(req.path)
        path, _, query = req.path.partition("?")
        if path.startswith("/moved/"):
            req.send_response(302)
            req.send_header("Location", self.url(req.path.removeprefix("/moved/")))
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        if self.credentials:
            sent = req.headers.get("Authorization", "")
            allowed = {"Basic " + base64.b64encode(c.encode()).decode() for c in self.credentials}
            if sent not in allowed:
                req.send_response(401)
                req.send_header("WWW-Authenticate", 'Basic realm="git"')
                req.send_header("Content-Length", "0")
                req.end_headers()
                return
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": req.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": req.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "HTTP_CONTENT_ENCODING": req.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": req.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": "127.0.0.1",
        }
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        req.send_response(status)
        for k, v in headers:
            if k.lower() != "status":
                req.send_header(k, v.strip())
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def git_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GitServer, str]]:
    """An HTTPS git server with one repository, ``repo.git``; yields it and the commit's SHA.

    Billowin's own resolver (in this process) is told ``GIT_HOST`` is 127.0.0.1; the system's
    DNS, which git would ask, has never heard of it.
    """
    source_repo = tiny_app(tmp_path / "src", "over https")
    sha = commit(source_repo)
    root = tmp_path / "served"
    root.mkdir()
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(source_repo), str(root / "repo.git")], check=True, env=GIT_ENV
    )
    subprocess.run(
        ["git", "-C", str(root / "repo.git"), "config", "uploadpack.allowAnySHA1InWant", "true"], check=True
    )
    cert, key = _certificate(tmp_path)
    monkeypatch.setenv("GIT_SSL_CAINFO", str(cert))
    real = socket.getaddrinfo

    def resolver(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == GIT_HOST:
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    server = GitServer(root, cert, key)
    try:
        yield server, sha
    finally:
        server.stop()


def test_git_reaches_the_checked_address_only_through_the_pin(
    git_server: tuple[GitServer, str], tmp_path: Path
) -> None:
    server, sha = git_server
    with pytest.raises(subprocess.CalledProcessError) as unpinned:  # git asking DNS itself: no answer
        subprocess.run(
            ["git", *GIT_SAFETY, "ls-remote", server.url("repo.git")],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    assert "resolve" in unpinned.value.stderr.lower(), unpinned.value.stderr

    checkout = fetch(server.url("repo.git"), sha, tmp_path / "checkout", allow_private=True)
    assert (checkout / "www" / "index.html").read_text() == "over https\n"

    with pytest.raises(InvalidInput, match="loopback"):  # 127.0.0.1 needs the explicit setting
        fetch(server.url("repo.git"), sha, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_git_follows_no_redirect(git_server: tuple[GitServer, str], tmp_path: Path) -> None:
    server, sha = git_server
    with pytest.raises(ServiceError, match="302"):
        fetch(server.url("moved/repo.git"), sha, tmp_path / "checkout", allow_private=True)
    assert all(r.startswith("/moved/") for r in server.requests), server.requests
    # ...while the same redirect, followed, would have led to the repository:
    subprocess.run(
        [
            "git",
            "-c",
            "http.followRedirects=true",
            "-c",
            f"http.curloptResolve={GIT_HOST}:{server.port}:127.0.0.1",
            "ls-remote",
            server.url("moved/repo.git"),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )


def test_repository_credentials_reach_git_but_never_a_message_or_a_log(
    stack: SingleBox, git_server: tuple[GitServer, str], tmp_path: Path, app_name: str
) -> None:
    server, sha = git_server
    secret, token = f"pw-{uuid.uuid4().hex}", f"ghs_{uuid.uuid4().hex}"
    server.credentials = {f"deploy:{secret}", f"x-access-token:{token}"}

    checkout = fetch(server.url("repo.git", f"deploy:{secret}@"), sha, tmp_path / "a", allow_private=True)
    assert (checkout / "Procfile").exists()
    fetch(server.url("repo.git"), sha, tmp_path / "b", token=SecretStr(token), allow_private=True)

    wrong = f"wrong-{uuid.uuid4().hex}"
    with pytest.raises(ServiceError) as info:
        fetch(server.url("repo.git", f"deploy:{wrong}@"), sha, tmp_path / "c", allow_private=True)
    assert wrong not in str(info.value)

    # Through the builder: its log and record show the repository without credentials.
    settings = stack.settings.model_copy(update={"allow_private_repositories": True})
    builder = System(settings).builder
    with pytest.raises(BuildFailed) as failed:
        builder.build(app_name, server.url("repo.git", f"deploy:{wrong}@"), sha)
    log = builder.log_path(app_name, sha).read_text()
    assert f"from {server.url('repo.git', '***@')}" in log
    for text in (log, failed.value.message, builder.record(app_name, sha).model_dump_json()):
        assert wrong not in text


# -- 4. isolation ---------------------------------------------------------------------------------------
def _app_container(client: docker.DockerClient, app: str) -> Any:
    found = client.containers.list(filters={"label": f"billowin.app={app}"})
    return found[0] if found else None


def test_app_containers_cannot_reach_each_other(
    stack: SingleBox,
    make_image: Callable[..., str],
    router: httpx.Client,
    cleanup_apps: list[str],
) -> None:
    system = System(stack.settings)
    apps = [f"t{uuid.uuid4().hex[:10]}" for _ in range(2)]
    cleanup_apps.extend(apps)
    for app in apps:
        release = system.deployer.deploy(app, make_image(app, "v1", greeting=app), [Process(name="web")])
        assert release.status == ReleaseStatus.LIVE, release.description
        wait_for(lambda app=app: (page(router, app) or "").startswith(app), 60, f"{app} to be served")

    client = docker.from_env()
    try:
        a, b = (wait_for(lambda app=app: _app_container(client, app), 30, f"{app} container") for app in apps)
        networks = b.attrs["NetworkSettings"]["Networks"]
        assert set(networks) == {stack.settings.app_network}, networks
        assert set(a.attrs["NetworkSettings"]["Networks"]) == {stack.settings.app_network}
        ip = networks[stack.settings.app_network]["IPAddress"]
        port = next(e.split("=", 1)[1] for e in b.attrs["Config"]["Env"] if e.startswith("PORT="))
        assert ipaddress.ip_address(ip)

        # The host (and so the router) reaches b; a does not, though it is one hop away.
        assert httpx.get(f"http://{ip}:{port}/", timeout=5).text.startswith(apps[1])
        reach = a.exec_run(["busybox", "wget", "-q", "-T", "3", "-O", "-", f"http://{ip}:{port}/"])
        assert reach.exit_code != 0, reach.output
        assert not reach.output.decode(errors="replace").startswith(apps[1])
        options = client.networks.get(stack.settings.build_network).attrs["Options"]
        assert options.get("com.docker.network.bridge.enable_icc") == "false"
    finally:
        client.close()


# A local package whose build backend pip runs: a build can run any code it likes.
BACKEND = """
import os, sys, time

def bomb():
    if os.environ.get("BOMB") == "memory":
        hog = []
        while True:
            hog.append(bytearray(1 << 20))  # touched, so really used
    n = 0
    try:
        while True:
            if os.fork() == 0:
                time.sleep(5)
                os._exit(0)
            n += 1
    except OSError as exc:
        sys.exit(f"gave up after {n} processes: {exc}")

def get_requires_for_build_wheel(config_settings=None):
    bomb()
"""


@pytest.mark.parametrize(
    ("bomb", "limits", "reason"),
    [
        ("memory", {"build_memory_mb": 256}, "ran out of memory: it needed more than its limit of 256 MB"),
        ("processes", {"build_pids_limit": 64}, "hit its limit of 64 processes"),
    ],
)
def test_a_build_beyond_its_memory_or_process_limit_fails_with_a_plain_reason(
    stack: SingleBox, tmp_path: Path, app_name: str, bomb: str, limits: dict[str, int], reason: str
) -> None:
    builder: Builder = System(stack.settings.model_copy(update=limits)).builder
    repo = tmp_path / "bomb"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "backend.py").write_text(BACKEND.replace('os.environ.get("BOMB")', repr(bomb)))
    (repo / "pkg" / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        '[project]\nname = "pkg"\nversion = "0"\n'
    )
    (repo / "requirements.txt").write_text("./pkg\n")
    (repo / "Procfile").write_text("web: python3 -m http.server $PORT\n")
    sha = commit(repo)

    with pytest.raises(BuildFailed) as info:
        builder.build(app_name, str(repo), sha)

    assert reason in info.value.message, info.value.message
    assert builder.record(app_name, sha).status == "failed"
    client = docker.from_env()
    try:
        left = client.containers.list(all=True, filters={"label": f"billowin.build={app_name}"})
        assert left == [], "the build container was left behind"
    finally:
        client.close()
