"""The Packer recipe: a source tree built on its language's base image (``packer/``).

    language base image (packer/base.json: a runtime on a Debian base, built once per
    runtime version, ``build/runtimes/``) → dependency image (``build/deps.py``, reused while
    the manifests are unchanged) → app image (packer/app.json runs ``build-app.sh``: source,
    dependencies, checks, the Procfile's command)

Every Packer build runs in a container on the builds network with the memory, process and CPU
limits of ``_limits``, labelled with this control plane's owner id so a crashed build's
container can be found and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from billowin.build import deps, hygiene
from billowin.build.runtimes.choice import Chosen, Runtimes, runtimes_from
from billowin.errors import BillowinError, BuildFailed, InstallError, InvalidInput
from billowin.ports import BuiltImage, ContainerEngine, ImageBuildTool, ImageJob
from billowin.settings import Settings
from billowin.stack.install import Installer, base_image_tag
from billowin.stack.tools import load_versions

LogLine = Callable[[str], None]
RUNTIME_SAID = re.compile(r"^\s*(?:docker: )?(python|node|go|ruby) (\d+\.\d+\.\d+)\s*$")
PACKER_PREFIX = re.compile(r"^\s*(?:==> )?docker(?: \([a-z-]+\))?: ?")
ERROR_HINTS = re.compile(
    r"(error|cannot|could not|not found|no matching|failed|unable|missing|undefined)", re.IGNORECASE
)
# Lines that only say a step failed, never why (pip's, around a package's own error).
GENERIC_ERRORS = {"error: subprocess-exited-with-error", "error: metadata-generation-failed"}
PACKER_NOISE = (
    "Provisioning step had errors",
    "Killing the container",
    "Script exited with non-zero exit status",
    "Build 'docker' errored",
    "Builds finished",
    "Some builds didn't complete",
    "Wait completed",
    "Running the cleanup provisioner",
    "-----> ",
)


def failure_reason(lines: list[str]) -> str:
    """The most telling line of a failed build's output, without Packer's own lines."""
    cleaned = [PACKER_PREFIX.sub("", line).strip() for line in lines]
    cleaned = [c for c in cleaned if c and not any(noise in c for noise in PACKER_NOISE)]
    recent = cleaned[-40:]
    for line in reversed(recent):  # what the build itself called an error
        if line.lower() in GENERIC_ERRORS:
            continue  # pip's own "it failed"; the reason is above it
        if line.lower().startswith("error:") or line.startswith("ERROR:") or "Error:" in line:
            return line
    for line in reversed(recent):
        if ERROR_HINTS.search(line):
            return line
    return recent[-1] if recent else "the build failed"


def build_owner(settings: Settings) -> str:
    """Which control plane's builds these are: Docker may be shared by several stacks."""
    return hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:16]


class PackerImages:
    """``ImageRecipe`` for apps without a Dockerfile."""

    name = "packer"

    def __init__(
        self,
        settings: Settings,
        packer: ImageBuildTool,
        docker: ContainerEngine,
        runtimes: Runtimes | None = None,
    ) -> None:
        self.settings = settings
        self.packer = packer
        self.docker = docker
        self.runtimes = runtimes or runtimes_from(settings)
        self._base_lock = threading.Lock()
        self._runtimes_file = settings.cache_dir / "runtimes" / "images.json"  # image -> its runtime

    # -- language base images ---------------------------------------------
    def language_image(self, language: str, log: LogLine, src: Path | None = None) -> tuple[str, Chosen]:
        """The base image of the runtime ``src``'s version files ask for (the default one
        without ``src``), built once per version and recipe; and what was chosen."""
        spec = load_versions(self.settings.versions_file)["languages"]
        if language not in spec or language == "recipe":
            raise InvalidInput(f"no base image recipe for {language!r}")
        chosen = self.runtimes.choose(language, src, log)
        provider = chosen.provider
        with self._base_lock:
            suite = provider.suite(language, chosen.version)
            tag = f"{chosen.version}-{provider.name}-{suite}-r{spec['recipe']}"
            ref = f"billowin/{language}:{tag}"
            if not self.docker.image_exists(ref):  # only then is anything downloaded
                log(f"-----> Building the {language} {chosen.version} base image {ref} (once)")
                files = provider.fetch(language, chosen.version, log)
                said: list[str] = []

                def tee(line: str) -> None:
                    said.append(line)
                    log(line)

                base = self.base_image(files.suite, log)
                empty = self.settings.cache_dir / "runtimes" / "empty"
                empty.mkdir(parents=True, exist_ok=True)
                self.run(
                    "base.json",
                    {
                        "from_image": base,
                        "repository": f"billowin/{language}",
                        "tag": tag,
                        "packages": " ".join(files.packages),
                        "runtime_dir": str(files.tree or empty),
                        "language": language,
                        "expect_version": chosen.version,
                        "ca_bundle": str(self.settings.ca_bundle),
                    },
                    tee,
                )
                # install-runtime.sh says what the image really has: Debian's patch releases
                # move on from the table's.
                found = [m.group(2) for m in map(RUNTIME_SAID.match, said) if m and m.group(1) == language]
                self._remember(ref, f"{found[-1] if found else chosen.version} ({files.label})")
        return ref, chosen

    def runtime_label(self, ref: str, chosen: Chosen) -> str:
        """``"3.14.8 (debian forky)"``: the runtime in the image ``ref``, as its build said."""
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(self._runtimes_file.read_text()).get(ref)
            if known:
                return str(known)
        # An image built before this record was kept: its tag says the provider and the suite.
        suite = ref.rsplit(":", 1)[1].split("-")[-2]
        where = {"npm": "npm registry", "goproxy": "Go module proxy", "debian": f"debian {suite}"}
        return f"{chosen.version} ({where.get(chosen.provider.name, chosen.provider.name)})"

    def _remember(self, ref: str, label: str) -> None:
        found: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            found = json.loads(self._runtimes_file.read_text())
        found[ref] = label
        self._runtimes_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._runtimes_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(found, indent=1))
        os.replace(tmp, self._runtimes_file)

    def base_image(self, suite: str, log: LogLine) -> str:
        """The Debian base image of ``suite``: ``billowin setup`` makes the default one; another
        suite's is debootstrapped the first time a runtime needs it."""
        tag = base_image_tag(self.settings, suite)
        if self.docker.image_exists(tag):
            return tag
        log(f"-----> Debootstrapping the Debian {suite} base image {tag} (once, a minute or two)")
        installer = Installer(self.settings, Console(file=io.StringIO()))
        try:
            return installer.base_image(lambda: None, suite)
        except InstallError as exc:
            raise BuildFailed(f"the Debian {suite} base image could not be made: {exc.message}") from exc

    def _limits(self, build_id: str) -> dict[str, str]:
        """Packer variables that bound a build container, put it on the builds network and
        label it as this control plane's, and as this build's."""
        return {
            "memory_mb": str(self.settings.build_memory_mb),
            "pids_limit": str(self.settings.build_pids_limit),
            # A quarter of Docker's default CPU weight: when the box is busy, a build waits for
            # the API (webhook replies), the router and the apps, never the other way round.
            "cpu_shares": "256",
            "network": self.settings.build_network,
            "owner": build_owner(self.settings),
            "build_id": build_id,
        }

    def run(self, template: str, variables: dict[str, str], log: LogLine) -> None:
        """Run Packer in a bounded container; a container a killed Packer left is removed."""
        build_id = uuid.uuid4().hex
        try:
            self.packer.build(
                template,
                {**variables, **self._limits(build_id)},
                log=log,
                timeout=self.settings.build_timeout,
            )
        except BuildFailed:
            with contextlib.suppress(BillowinError):
                self.docker.remove_containers(label=f"billowin.build.id={build_id}")
            raise

    # -- one app image -------------------------------------------------------
    def build_image(self, job: ImageJob, log: LogLine) -> BuiltImage:
        spec = job.spec
        base, chosen = self.language_image(spec.language, log, job.src)
        runtime = f"{spec.language} {self.runtime_label(base, chosen)}"
        log(f"-----> Runtime: {runtime}; {chosen.asked}")
        hygiene.mark_cache_used(job.cache)
        default_cmd = spec.processes.get("web") or next(iter(spec.processes.values()))
        variables = {
            "from_image": base,
            "repository": job.repository,
            "tag": job.tag,
            "source_dir": str(job.src),
            "cache_dir": str(job.cache),
            "ca_bundle": str(self.settings.ca_bundle),
            "language": spec.language,
            "stage": "full",
            "cmd": json.dumps(["sh", "-c", default_cmd]),
            "app": job.app,
            "sha": job.sha,
            "pip_index_url": self.settings.pip_index_url,
            "npm_registry": self.settings.npm_registry,
            "goproxy": self.settings.goproxy,
            "rubygems_mirror": self.settings.rubygems_mirror,
        }
        try:
            files = deps.dependency_files(job.src, spec.language)
            if files is not None:
                image = self._dependencies(job, files, variables, log)
                variables |= {"from_image": image, "stage": "app"}
            self.run("app.json", variables, log)
        except BuildFailed as exc:
            raise BuildFailed(
                f"build of {job.app} {job.sha[:12]} failed: {self.failure_reason(exc)}",
                log_tail=exc.log_tail,
            ) from exc
        source = chosen.request.source if chosen.request is not None else None
        return BuiltImage(runtime=runtime, runtime_source=source)

    def _dependencies(
        self, job: ImageJob, files: dict[str, bytes], variables: dict[str, str], log: LogLine
    ) -> str:
        """The app's dependency image for ``files`` (``build/deps.py``): reused when it exists,
        else built from the dependency files alone; the app's previous one is then removed."""
        script = (self.settings.packer_dir / "scripts" / "build-app.sh").read_bytes()
        key = deps.dependency_key(
            files,
            language=variables["language"],
            base_image=variables["from_image"],
            extra=[hashlib.sha256(script).hexdigest(), variables["pip_index_url"], variables["npm_registry"]],
        )
        image = f"{deps.REPOSITORY}/{job.app}:{key}"
        if self.docker.image_exists(image):
            log(f"-----> Dependencies unchanged ({', '.join(sorted(files))}): reusing them")
            return image
        log(f"-----> Installing dependencies from {', '.join(sorted(files))} (reused until they change)")
        source = deps.write_dependency_files(files, job.scratch / "deps")
        step = {"repository": f"{deps.REPOSITORY}/{job.app}", "tag": key, "source_dir": str(source)}
        step["stage"] = "deps"
        self.run("app.json", variables | step, log)
        marker = job.cache / "deps-image"
        with contextlib.suppress(OSError):
            previous = marker.read_text().strip()
            if previous and previous != image:
                with contextlib.suppress(BillowinError):  # an app image built on it keeps its layers
                    self.docker.remove_image(previous)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(image)
        return image

    def failure_reason(self, exc: BuildFailed) -> str:
        if "timed out" in exc.message:
            return (
                f"it ran longer than its {self.settings.build_timeout:.0f}s limit (BILLOWIN_BUILD_TIMEOUT) "
                "and was stopped"
            )
        log_tail = exc.log_tail
        reason = failure_reason(log_tail.splitlines())
        if "exit status: 137" in log_tail and "limit" not in reason:
            # SIGKILLed before build-app.sh could say why: the kernel's OOM killer, almost always.
            reason = (
                f"the build was killed (exit 137), most likely for using more than its "
                f"{self.settings.build_memory_mb} MB memory limit (BILLOWIN_BUILD_MEMORY_MB)"
            )
        return reason


def scratch_dir(work: Path) -> Path:
    """A build's own scratch directory beside its fetched source."""
    return work.with_suffix(".scratch")
