"""Add-on images: a Debian suite's base image plus its Postgres or Redis packages.

No container registry is reachable from a Billowin box, so add-on images are made the way
language base images are (``build.packer_images``): Packer's docker builder runs
``packer/scripts/install-runtime.sh`` on the suite's base image, in a bounded build
container. The image goes to Billowin's registry, where every node pulls it from; a tag the
registry already has is never built again (``billowin/versions.toml`` ``[addons]`` says which
suite ships which version, and its ``recipe`` keys the tag).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from billowin.addons.model import Kind
from billowin.build.packer_images import PackerImages
from billowin.errors import InvalidInput
from billowin.ports import ContainerEngine, ImageRegistry
from billowin.settings import Settings
from billowin.stack.tools import load_versions

Log = Callable[[str], None]


def addon_versions(settings: Settings) -> dict[str, Any]:
    return dict(load_versions(settings.versions_file)["addons"])


def check_version(settings: Settings, kind: Kind, version: str | None) -> str:
    """The version to run: ``version`` if a suite ships it, the default without one."""
    spec = addon_versions(settings)[kind.value]
    chosen = version or str(spec["default"])
    if chosen not in spec["versions"]:
        offered = ", ".join(sorted(spec["versions"], key=int))
        raise InvalidInput(f"{kind.value} {chosen[:20]!r} is not offered", hint=f"Give one of: {offered}.")
    return chosen


class AddonImages:
    def __init__(
        self,
        settings: Settings,
        packer: Callable[[], PackerImages],  # the builder's, made only when an image is built
        docker: ContainerEngine,
        registry: ImageRegistry,
    ) -> None:
        self.settings = settings
        self._packer = packer
        self.docker = docker
        self.registry = registry
        self._lock = threading.Lock()

    def repository(self, kind: Kind) -> str:
        return f"billowin/addon-{kind.value}"

    def tag(self, kind: Kind, version: str) -> str:
        spec = addon_versions(self.settings)
        return f"{version}-{spec[kind.value]['versions'][version]}-r{spec['recipe']}"

    def ensure(self, kind: Kind, version: str, log: Log) -> str:
        """The image's reference in the registry, built and pushed first if it is not there."""
        repository, tag = self.repository(kind), self.tag(kind, version)
        ref = f"{self.settings.registry}/{repository}:{tag}"
        with self._lock:
            if tag in self.registry.tags(repository):
                return ref
            if not self.docker.image_exists(ref):
                spec = addon_versions(self.settings)[kind.value]
                suite = spec["versions"][version]
                log(f"-----> Building the {kind.value} {version} image {ref} (once, a minute or two)")
                base = self._packer().base_image(suite, log)
                empty = self.settings.cache_dir / "runtimes" / "empty"
                empty.mkdir(parents=True, exist_ok=True)
                self._packer().run(
                    "base.json",
                    {
                        "from_image": base,
                        "repository": f"{self.settings.registry}/{repository}",
                        "tag": tag,
                        "packages": " ".join(p.format(version=version) for p in spec["packages"]),
                        "runtime_dir": str(empty),
                        "language": kind.value,
                        "expect_version": version,
                        "ca_bundle": str(self.settings.ca_bundle),
                    },
                    log,
                )
            log(f"-----> Pushing {ref}")
            self.docker.push(ref)
        return ref
