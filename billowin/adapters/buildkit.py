"""BuildKit: ``docker build`` of an app's own Dockerfile, with its output streamed.

Debian's docker CLI (``docker.io``, 20.10; ``BILLOWIN_DOCKER_CLI``) has BuildKit's client built
in: ``DOCKER_BUILDKIT=1`` makes it hand the build to the Engine's own BuildKit, no buildx
needed. It is called by absolute path because a newer CLI without buildx may come first on
``PATH`` and refuses BuildKit builds. No shell, ever: argv goes to exec as-is.

What the build does is the Engine's (BuildKit runs inside ``dockerd``); this process only
sends the context and reads ``--progress=plain`` lines. Killing the CLI ends the build: the
Engine cancels a build whose client went away (a ``RUN`` step in progress is stopped).
Failures become ``BuildFailed`` here, once, with the tail of the output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from billowin.errors import BuildFailed, NotFound, ServiceError
from billowin.settings import Settings

LogLine = Callable[[str], None]
SYSTEM = "buildkit"
TAIL_LINES = 40
GRACE = 10.0  # seconds between SIGTERM (the CLI cancels the build) and SIGKILL


class BuildKit:
    """``docker build`` with BuildKit, and ``docker image inspect``, through one CLI."""

    def __init__(self, settings: Settings) -> None:
        self._cli = settings.docker_cli
        self._host = settings.docker_host
        self._timeout = settings.build_timeout

    def _env(self) -> dict[str, str]:
        # Only what the CLI needs: none of Billowin's own secrets reach it.
        env = {
            "DOCKER_BUILDKIT": "1",
            "DOCKER_HOST": self._host,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.environ.get("HOME", "/"),
            "LANG": "C.UTF-8",
        }
        if "DOCKER_CONFIG" in os.environ:
            env["DOCKER_CONFIG"] = os.environ["DOCKER_CONFIG"]
        return env

    def _popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        try:
            return subprocess.Popen(
                list(argv), env=self._env(), stdin=subprocess.DEVNULL, text=True, **kwargs
            )
        except OSError as exc:
            raise ServiceError(
                SYSTEM,
                f"cannot run {self._cli}: {exc}",
                hint="Install Debian's docker.io package (its CLI has BuildKit built in), "
                "or point BILLOWIN_DOCKER_CLI at a docker CLI that does.",
            ) from exc

    def build(
        self,
        context: Path,
        *,
        dockerfile: Path,
        tag: str,
        labels: dict[str, str],
        log: LogLine,
    ) -> None:
        """Build ``context`` with ``dockerfile`` as the local image ``tag``, streaming every line
        to ``log``; ``BuildFailed`` (with the output's tail) if it fails or runs too long.

        Nothing here turns BuildKit's cache off: an unchanged step is ``CACHED``."""
        argv = [self._cli, "build", "--progress=plain", "-f", str(dockerfile), "-t", tag]
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        argv.append(str(context))
        proc = self._popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=context,
            start_new_session=True,  # its own process group, killed as one on a timeout
        )
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=GRACE)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)

        timer = threading.Timer(self._timeout, stop)
        timer.daemon = True
        timer.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                del lines[:-TAIL_LINES]
                log(line)
            code = proc.wait()
        except BaseException:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
        if code != 0:
            tail = "\n".join(lines)
            if timed_out.is_set():
                raise BuildFailed(f"docker build timed out after {self._timeout:.0f}s", log_tail=tail)
            raise BuildFailed(f"docker build exited {code}", log_tail=tail)

    def bound(self, *, memory_mb: int, pids: int, cpu_shares: int) -> str | None:
        """Bound every BuildKit step of the Engine together (``bound_builds``); why not, or None."""
        return bound_builds(memory_mb=memory_mb, pids=pids, cpu_shares=cpu_shares, docker_host=self._host)

    def inspect(self, ref: str) -> dict[str, Any]:
        """The image's ``Config`` (``ExposedPorts``, ``Env``, ``Cmd``, ``Entrypoint``…), as Docker says it."""
        proc = self._popen(
            [self._cli, "image", "inspect", "--format", "{{json .Config}}", ref],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise ServiceError(SYSTEM, f"docker image inspect {ref} did not answer in 60s") from exc
        if proc.returncode != 0:
            if "No such image" in err or "No such object" in err:
                raise NotFound(f"no image {ref}")
            raise ServiceError(SYSTEM, f"docker image inspect {ref} failed: {err.strip()}")
        try:
            config = json.loads(out)
        except ValueError as exc:
            raise ServiceError(SYSTEM, f"docker image inspect {ref} answered {out[:200]!r}") from exc
        return config if isinstance(config, dict) else {}


def _kill_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# -- bounds ------------------------------------------------------------------------------
CGROUP_ROOT = Path("/sys/fs/cgroup")
BUILDKIT_CGROUP = "docker/buildkit"  # the parent of every BuildKit step of a cgroupfs dockerd


def bound_builds(
    *, memory_mb: int, pids: int, cpu_shares: int, docker_host: str, root: Path = CGROUP_ROOT
) -> str | None:
    """Bound every BuildKit step of the local Engine together: ``RUN`` steps run in children
    of its ``docker/buildkit`` cgroup, whatever ``docker build`` is asked, so the limits go on
    that parent (memory, processes, CPU weight). Returns why they could not be set, or None.

    cgroup v1 and v2 (the unified hierarchy) both; an Engine elsewhere (a TCP ``DOCKER_HOST``)
    or one with the systemd cgroup driver keeps its own limits, and the caller says so."""
    if not docker_host.startswith("unix://"):
        return f"the Docker Engine at {docker_host} is not on this machine"
    unified = (root / "cgroup.controllers").is_file()
    if unified:
        weight = 1 + ((max(cpu_shares, 2) - 2) * 9999) // 262142  # runc's shares → weight
        where = {
            root / BUILDKIT_CGROUP: [
                ("memory.max", memory_mb * 1024 * 1024),
                ("pids.max", pids),
                ("cpu.weight", weight),
            ]
        }
    else:
        where = {
            root / "memory" / BUILDKIT_CGROUP: [("memory.limit_in_bytes", memory_mb * 1024 * 1024)],
            root / "pids" / BUILDKIT_CGROUP: [("pids.max", pids)],
            root / "cpu" / BUILDKIT_CGROUP: [("cpu.shares", cpu_shares)],
        }
    try:
        for directory, files in where.items():
            if not directory.parent.is_dir():
                return f"{directory.parent} does not exist (an Engine with another cgroup driver or parent)"
            if unified:
                with contextlib.suppress(OSError):  # the controllers the children may use
                    (directory.parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
            directory.mkdir(exist_ok=True)
            for name, value in files:
                (directory / name).write_text(str(value))
    except OSError as exc:
        return f"cannot write the Engine's BuildKit cgroup: {exc}"
    return None
