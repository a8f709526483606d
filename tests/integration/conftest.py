"""One real single-box stack per test session.

The fixtures start real ``dockerd`` (when no engine runs), the Docker
registry, ``consul agent -dev``, ``nomad agent -dev`` with the docker driver,
consul-template + HAProxy and the Billowin API, each on free ports, exactly as
``billowin up`` does. Logs stay under the session's temporary directory and
are printed when the stack fails to start. A missing binary fails the session:
nothing here ever skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billowin.settings import Settings
from billowin.stack.install import base_image_tag, docker_image_exists
from billowin.stack.single_box import Ports, SingleBox
from billowin.stack.tools import Toolset


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleBox]:
    settings = Settings()  # where `make setup` put the binaries
    tools = Toolset.resolve(settings)  # raises (fails the session) when any is missing
    state = tmp_path_factory.mktemp("stack")
    box = SingleBox(tools, Ports.free(), state)
    box.start()
    try:
        yield box
    finally:
        box.stop()


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
