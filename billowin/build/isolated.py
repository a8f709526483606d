"""Builds in a process of their own: the pipeline's builder.

``ProcessBuilder.build`` runs ``python -m billowin.build.isolated`` for each build, so a build's
work in Python (fetching, reading Packer's output, the push's progress, the tidy-up) never
competes with the API for its interpreter; the child runs at a lower CPU priority (``nice``),
like its build container (``--cpu-shares``), so webhook replies and the router come first on a
busy box. The child exists only while it builds: an idle box pays nothing for it.

- **In:** the request as JSON on the child's stdin (the repository token never goes on a
  command line); the settings come from the same environment and settings file as the API's.
- **Out:** the build's log lines on its stdout, as they come, and its result as JSON on a
  pipe of its own (file descriptor 3), which nothing the build runs can write to: an app's
  build output cannot forge a result.
- **Dying together:** the child asks the kernel for SIGTERM when its parent dies
  (``PR_SET_PDEATHSIG``), so an API that crashes leaves no build behind; the pipeline resumes
  the job, which builds again.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from billowin.build.builder import Builder, BuildRecord, LogLine
from billowin.errors import BillowinError, BuildFailed
from billowin.settings import Settings

RESULT_FD = 3
NICE = 10
PR_SET_PDEATHSIG = 1


class ProcessBuilder:
    """The ``AppBuilder`` the pipeline uses: each build in a child process (see the module)."""

    def __init__(self, settings: Settings, builder: Builder, *, python: str = sys.executable) -> None:
        self.settings = settings
        self.builder = builder  # for what runs in this process: limits, stale containers, logs
        self.python = python

    def remove_stale_build_containers(self) -> int:
        return self.builder.remove_stale_build_containers()

    def build(
        self,
        app: str,
        repository: str,
        sha: str,
        *,
        token: SecretStr | None = None,
        log: LogLine = lambda _line: None,
    ) -> BuildRecord:
        request = {
            "app": app,
            "repository": repository,
            "sha": sha,
            "token": token.get_secret_value() if token else None,
        }
        read_end, write_end = os.pipe()
        with self.builder.slot():  # BILLOWIN_BUILD_CONCURRENCY counts builds of every child
            try:
                child = subprocess.Popen(  # no shell: argv goes to exec as-is
                    [self.python, "-m", "billowin.build.isolated"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_end,),
                    env={**os.environ, "BILLOWIN_RESULT_FD": str(write_end)},
                    start_new_session=True,  # a Ctrl-C meant for the API is not the build's
                )
            finally:
                os.close(write_end)
            result: dict[str, Any] = {}
            reader = threading.Thread(target=lambda: result.update(_read_result(read_end)), daemon=True)
            reader.start()
            with child:  # closes the pipes and reaps the child, whatever happens
                try:
                    assert child.stdin is not None and child.stdout is not None
                    with contextlib.suppress(BrokenPipeError):
                        child.stdin.write(json.dumps(request).encode())
                        child.stdin.close()
                    for raw in child.stdout:
                        log(raw.decode("utf-8", "replace").rstrip("\n"))
                except BaseException:
                    child.kill()
                    raise
                finally:
                    child.wait()
                    reader.join(timeout=10)
        return self._outcome(app, sha, child.returncode, result)

    def _outcome(self, app: str, sha: str, code: int, result: dict[str, Any]) -> BuildRecord:
        if result.get("ok"):
            record = BuildRecord.model_validate(result["record"])
            self.builder.finished(record)
            return record
        log_path = self.builder.log_path(app, sha)
        if "message" not in result:  # killed, or it crashed before it could say why
            message = f"the build process of {app} {sha[:12]} ended with exit code {code} and no result"
            raise BuildFailed(message, log_path=log_path, log_tail=_tail(log_path))
        with contextlib.suppress(BillowinError, OSError, ValueError):
            self.builder.finished(self.builder.record(app, sha))
        raise BuildFailed(
            str(result["message"]),
            log_path=log_path,
            log_tail=str(result.get("log_tail", "")),
            hint=str(result.get("hint") or ""),
        )


def _read_result(fd: int) -> dict[str, Any]:
    with os.fdopen(fd, "rb") as pipe:
        data = pipe.read()
    try:
        found = json.loads(data) if data else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the request above
        sys.exit(1)


def main() -> int:
    """The child: one build, its log on stdout, its result on ``BILLOWIN_RESULT_FD``."""
    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.suppress(OSError):
        os.nice(NICE)
    # On Nomad (billowin/build/on_nomad.py): the request and the result are files of the job.
    request_file = os.environ.pop("BILLOWIN_BUILD_REQUEST_FILE", "")
    result_file = os.environ.pop("BILLOWIN_BUILD_RESULT_FILE", "")
    result_fd = int(os.environ.pop("BILLOWIN_RESULT_FD", RESULT_FD))
    request = json.loads(Path(request_file).read_text() if request_file else sys.stdin.read())
    from billowin.system import System  # only the child needs every adapter

    builder = System(Settings()).builder
    out = sys.stdout

    def log(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    token = SecretStr(request["token"]) if request.get("token") else None
    try:
        record = builder.build(request["app"], request["repository"], request["sha"], token=token, log=log)
        result: dict[str, Any] = {"ok": True, "record": record.model_dump(mode="json")}
    except BuildFailed as exc:
        result = {"ok": False, "message": exc.message, "hint": exc.hint, "log_tail": exc.log_tail}
    except BillowinError as exc:
        result = {"ok": False, "message": exc.message, "hint": exc.hint}
    if result_file:
        Path(result_file).write_text(json.dumps(result))
    else:
        with os.fdopen(result_fd, "w") as pipe:
            pipe.write(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
