"""The Dockerfile recipe: an app that brings its own ``Dockerfile`` is built with it, by BuildKit.

As Heroku (``heroku.yml``), Dokku and Kamal do: ``build/detect.py`` picks this recipe for a tree
with a ``Dockerfile`` at its root, or the one ``billowin.toml`` names (``dockerfile = "path"``,
inside the tree), unless ``billowin.toml`` says ``builder = "packer"``. ``Builder`` does the
fetch, the record, the push, the clean-up and the log around it, as for Packer builds.

    context: the fetched tree at the commit, without ``.git`` (as Heroku and Dokku send it)
    build:   ``docker build`` with BuildKit (``adapters/buildkit.py``), tagged ``<registry>/<app>:<sha>``,
             labelled ``billowin.app`` and ``billowin.sha``, no build args
    port:    the image's first TCP ``EXPOSE`` (in the Dockerfile's order; else the lowest), else
             a ``PORT`` in its environment, else none (then Nomad picks it, as for Packer apps).
             The release maps the router's port to it and sets ``PORT`` to it (``release/jobspec.py``).
    run:     a Procfile's commands run as ``sh -c <command>``, passed to the image's ``ENTRYPOINT``
             if it has one (Docker's rule, as with Dokku); without a Procfile ``web`` is the
             image's own ``CMD``/``ENTRYPOINT``.

**Caching.** BuildKit's cache lives in the Engine and outlasts the images: an unchanged step is
``CACHED`` in the next build (a source-only change rebuilds from the first ``COPY`` that sees
it). Nothing here passes ``--no-cache`` or prunes the build cache, and the garbage collection of
old app images (``Builder.collect_garbage``) leaves it alone. Its size is therefore the Engine's
business, not ``BILLOWIN_BUILD_CACHE_MAX_MB``'s: the builder GC of ``daemon.json``
(``"builder": {"gc": {...}}``) where it is enabled, or ``docker builder prune``.

**Limits.** BuildKit in dockerd 20.10 takes no per-build limits: ``--memory``, ``--cpu-shares``,
``--cgroup-parent`` and ``--ulimit`` are accepted and ignored, ``--pids-limit`` does not exist,
and every ``RUN`` step runs in a child of the Engine's own ``docker/buildkit`` cgroup. So the
limits go on that parent (``DockerfileBuildTool.bound``, before each build): memory
``BILLOWIN_BUILD_MEMORY_MB``, processes ``BILLOWIN_BUILD_PIDS_LIMIT``, a quarter of the CPU
weight — shared by every BuildKit build of the Engine at once (at most
``BILLOWIN_BUILD_CONCURRENCY`` of them are Billowin's), where a Packer build has them to itself.
A step killed for memory fails the build saying so. An Engine elsewhere, or with the systemd
cgroup driver, keeps its own limits, and the build log says so. The time limit
(``BILLOWIN_BUILD_TIMEOUT``) holds: the CLI is killed and the Engine cancels the build.
**Network:** ``--network`` takes only ``default`` (Docker's default bridge), ``host`` or
``none`` (a user network is refused: "network mode … not supported by buildkit"), so ``RUN``
steps use the default bridge, not ``BILLOWIN_BUILD_NETWORK``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from billowin.errors import BuildFailed, InvalidInput
from billowin.ports import BuiltImage, ImageJob
from billowin.settings import Settings

LogLine = Callable[[str], None]
DEFAULT_DOCKERFILE = "Dockerfile"
# "#7 [3/4] RUN pip install ." (a step), "#7 0.412 Collecting flask" (its output), "#7 ERROR: …"
STEP_LINE = re.compile(r"^#(\d+) (?:(\d+\.\d+) )?(.*)$")
EXPOSED = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/([A-Za-z]+))?$")
IMAGE_PORT = re.compile(r"^(\d{1,5})/([a-z]+)$")
ERROR_HINTS = re.compile(
    r"(error|cannot|could not|not found|no matching|failed|unable|missing|denied)", re.IGNORECASE
)


class DockerfileBuildTool(Protocol):
    """What the recipe needs of BuildKit (``adapters/buildkit.py``)."""

    def build(
        self, context: Path, *, dockerfile: Path, tag: str, labels: dict[str, str], log: LogLine
    ) -> None: ...

    def inspect(self, ref: str) -> dict[str, Any]: ...

    def bound(self, *, memory_mb: int, pids: int, cpu_shares: int) -> str | None: ...


def dockerfile_path(src: Path, name: str = DEFAULT_DOCKERFILE) -> Path:
    """The Dockerfile ``name`` (relative, ``/``-separated) inside the tree ``src``; ``InvalidInput``
    when it is absolute, climbs out with ``..``, leads out through a symlink, or is not a file."""
    where = "billowin.toml: dockerfile"
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or "\\" in name or not parts:
        raise InvalidInput(
            f"{where} = {name!r} is not a path inside the repository",
            hint='Name it relative to the repository\'s root: dockerfile = "docker/web.Dockerfile".',
        )
    if ".." in parts:
        raise InvalidInput(
            f"{where} = {name!r} leads out of the repository ('..')",
            hint="The Dockerfile must be inside the repository; name it without '..'.",
        )
    root = src.resolve()
    path = (src / Path(*parts)).resolve()
    if not path.is_relative_to(root):
        raise InvalidInput(
            f"the Dockerfile {name!r} is a symlink that leads out of the repository",
            hint="Commit the Dockerfile itself, not a link to a file outside the repository.",
        )
    if not path.is_file():
        raise InvalidInput(
            f"there is no Dockerfile {name!r} in the repository",
            hint='Commit it, or name the right one in billowin.toml: dockerfile = "path".',
        )
    return path


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as ``(KEYWORD, arguments)``, continuation lines joined
    (with its ``# escape=`` character) and comments dropped. Enough to read ``FROM`` and
    ``EXPOSE``; BuildKit's parser stays the authority on everything else."""
    escape = "\\"
    lines = text.splitlines()
    for line in lines:  # parser directives: only at the very top, before anything else
        directive = re.match(r"^#\s*escape\s*=\s*(\S)\s*$", line, re.IGNORECASE)
        if directive:
            escape = directive.group(1)
            continue
        if not re.match(r"^#\s*\w+\s*=", line):
            break
    found: list[tuple[str, str]] = []
    current = ""
    for raw in lines:
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # nothing, or a comment (also inside a continued instruction)
        if stripped.endswith(escape):
            current += stripped[: -len(escape)] + " "
            continue
        current += stripped
        keyword, _, arguments = current.strip().partition(" ")
        if keyword:
            found.append((keyword.upper(), arguments.strip()))
        current = ""
    if current.strip():
        keyword, _, arguments = current.strip().partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    return found


def stated_ports(text: str) -> list[int]:
    """The TCP ports the last stage of the Dockerfile ``EXPOSE``s, in the order it says them
    (ranges expanded; anything with a ``$`` variable left to the image's own record)."""
    ports: list[int] = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            ports = []  # a new stage: only the last one is the image
        elif keyword == "EXPOSE":
            for token in arguments.split():
                match = EXPOSED.match(token)
                if not match or (match.group(3) or "tcp").lower() != "tcp":
                    continue
                first = int(match.group(1))
                last = int(match.group(2) or first)
                ports += [p for p in range(first, min(last, first + 100) + 1) if 0 < p < 65536]
    return list(dict.fromkeys(ports))


def web_port(config: Mapping[str, Any], dockerfile_text: str = "") -> tuple[int | None, str]:
    """The port the image listens on, and why: its first TCP ``EXPOSE`` (the Dockerfile's
    order; Docker keeps the ports unordered, so else the lowest), else ``PORT`` in its
    environment; ``(None, "")`` when it says neither."""
    exposed = []
    for key in config.get("ExposedPorts") or {}:
        match = IMAGE_PORT.match(str(key))
        if match and match.group(2) == "tcp" and 0 < int(match.group(1)) < 65536:
            exposed.append(int(match.group(1)))
    if exposed:
        stated = [p for p in stated_ports(dockerfile_text) if p in exposed]
        port = stated[0] if stated else min(exposed)
        return port, f"EXPOSE {port}"
    for item in config.get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "PORT" and value.isdigit() and 0 < int(value) < 65536:
            return int(value), f"PORT={value} in the image's environment"
    return None, ""


def failed_step(lines: list[str]) -> tuple[str, str, list[str]] | None:
    """The step BuildKit's ``--progress=plain`` output says failed: its title (``[3/4] RUN …``),
    BuildKit's error and the step's own output; None when no step failed."""
    titles: dict[str, str] = {}
    said: dict[str, list[str]] = {}
    failed: tuple[str, str] | None = None
    for line in lines:
        match = STEP_LINE.match(line)
        if not match:
            continue
        step, at, text = match.groups()
        if at is not None:
            said.setdefault(step, []).append(text.strip())
        elif text.startswith("ERROR: "):
            failed = (step, text.removeprefix("ERROR: ").strip())
        elif text.startswith("[") and step not in titles:
            titles[step] = text.strip()
    if failed is None:
        return None
    step, error = failed
    return titles.get(step, "a step"), error, [line for line in said.get(step, []) if line]


def failure_reason(lines: list[str]) -> str:
    """What failed: the failed step, BuildKit's error and the step's most telling line; else
    the error the build ended with (a Dockerfile BuildKit cannot read, say)."""
    failed = failed_step(lines)
    if failed is not None:
        title, error, output = failed
        reason = f"{title} failed: {error}"
        recent = output[-40:]
        telling = next((line for line in reversed(recent) if ERROR_HINTS.search(line)), None)
        telling = telling or (recent[-1] if recent else None)
        return f"{reason} ({telling})" if telling and telling not in error else reason
    rest = [line.strip() for line in lines if line.strip() and not STEP_LINE.match(line)]
    for line in reversed(rest):
        if line.lower().startswith(("error", "failed to solve")):
            return line
    return rest[-1] if rest else "the build failed"


class DockerfileImages:
    """``ImageRecipe`` for apps with a Dockerfile (see the module)."""

    name = "dockerfile"

    def __init__(self, settings: Settings, buildkit: DockerfileBuildTool) -> None:
        self.settings = settings
        self.buildkit = buildkit

    def build_image(self, job: ImageJob, log: LogLine) -> BuiltImage:
        relative = job.spec.dockerfile or DEFAULT_DOCKERFILE
        dockerfile = dockerfile_path(job.src, relative)
        git = job.src / ".git"
        if git.is_dir() and not git.is_symlink():  # the fetch's, not the app's: not in the context
            shutil.rmtree(git)
        unbounded = self.buildkit.bound(
            memory_mb=self.settings.build_memory_mb,
            pids=self.settings.build_pids_limit,
            cpu_shares=256,  # a quarter of the default weight, as Packer builds have
        )
        if unbounded is not None:
            log(f"-----> Warning: this build's memory and processes are not bounded: {unbounded}")
        log(f"-----> Building {relative} with BuildKit")
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            del lines[:-400]
            log(line)

        try:
            self.buildkit.build(
                job.src,
                dockerfile=dockerfile,
                tag=job.ref,
                labels={"billowin.app": job.app, "billowin.sha": job.sha},
                log=keep,
            )
        except BuildFailed as exc:
            raise BuildFailed(
                f"build of {job.app} {job.sha[:12]} failed: {self._reason(exc, lines)}",
                log_tail=exc.log_tail,
                hint=self._hint(lines),
            ) from exc
        port, why = web_port(self.buildkit.inspect(job.ref), dockerfile.read_text(errors="replace"))
        if port is None:
            log("-----> The image names no port (no EXPOSE, no PORT): it is to listen on $PORT")
        else:
            log(f"-----> The image listens on port {port} ({why}): the router sends its web traffic there")
        return BuiltImage(port=port)

    def _reason(self, exc: BuildFailed, lines: list[str]) -> str:
        if "timed out" in exc.message:
            return (
                f"it ran longer than its {self.settings.build_timeout:.0f}s limit (BILLOWIN_BUILD_TIMEOUT) "
                "and was stopped"
            )
        reason = failure_reason(lines or exc.log_tail.splitlines())
        if "exit code: 137" in "\n".join(lines[-20:]) and "limit" not in reason:
            return (
                f"a step was killed (exit 137), most likely for using more than the "
                f"{self.settings.build_memory_mb} MB memory limit (BILLOWIN_BUILD_MEMORY_MB): {reason}"
            )
        return reason

    @staticmethod
    def _hint(lines: list[str]) -> str:
        failed = failed_step(lines)
        if failed is not None and "load metadata for" in failed[0]:
            return (
                "A FROM image could not be found: it must be on this machine (docker images) "
                "or in a registry Billowin's Docker Engine can reach."
            )
        return ""
