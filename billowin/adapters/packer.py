"""Packer: run a template from ``packer/`` and stream its output.

Variables go through a JSON var-file, never a command line a shell could
read; output is streamed line by line to a log (and a progress callback).
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from billowin.errors import BuildFailed, ServiceError

LogLine = Callable[[str], None]


class Packer:
    def __init__(self, packer_bin: str, template_dir: Path) -> None:
        self._bin = packer_bin
        self._dir = template_dir

    def version(self) -> str:
        out = subprocess.run([self._bin, "version"], capture_output=True, text=True, check=False).stdout
        return out.strip().removeprefix("Packer v").split()[0] if out.strip() else ""

    def build(
        self, template: str, variables: dict[str, str], *, log: LogLine, timeout: float = 900
    ) -> list[str]:
        """Run ``packer build``; returns every output line. Raises ``BuildFailed`` with the tail."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(variables, fh)
            var_file = fh.name
        argv = [
            self._bin,
            "build",
            "-color=false",
            "-force",
            f"-var-file={var_file}",
            str(self._dir / template),
        ]
        lines: list[str] = []
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise ServiceError("packer", f"cannot run {self._bin}: {exc}", hint="Run `make setup`.") from exc
        timed_out = threading.Event()

        def interrupt() -> None:
            # Packer cleans up (stops and removes its build container) on an interrupt;
            # a kill would leave the container running.
            timed_out.set()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

        timer = threading.Timer(timeout, interrupt)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                log(line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
            Path(var_file).unlink(missing_ok=True)
        if code != 0:
            reason = f"timed out after {timeout:.0f}s" if timed_out.is_set() else f"exited {code}"
            raise BuildFailed(f"packer build {template} {reason}", log_tail="\n".join(lines[-25:]))
        return lines
