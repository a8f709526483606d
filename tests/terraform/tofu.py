"""Running OpenTofu in a test: the binary ``billowin setup`` installed, a CLI config that takes
every provider from the mirror only, and a working directory of the test's own."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from billowin.settings import Settings
from billowin.stack.tools import pinned_binary

REPO = Path(__file__).resolve().parents[2]
MODULES = REPO / "terraform"


def cli_config(mirror: Path, path: Path) -> Path:
    """A tofu CLI config that installs providers from ``mirror`` and never from a registry."""
    hosts = json.dumps(["registry.opentofu.org/*/*", "registry.terraform.io/*/*"])
    path.write_text(
        "provider_installation {\n"
        f"  filesystem_mirror {{\n    path    = {json.dumps(str(mirror))}\n    include = {hosts}\n  }}\n"
        f"  direct {{\n    exclude = {hosts}\n  }}\n"
        "}\n"
    )
    return path


@dataclass
class Tofu:
    workdir: Path
    config: Path

    @classmethod
    def in_dir(cls, workdir: Path, mirror: Path) -> Tofu:
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(workdir, cli_config(mirror, workdir.parent / f"{workdir.name}.tofurc"))

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "NOMAD_", "CONSUL_"))}
        return {
            **base,
            "TF_CLI_CONFIG_FILE": str(self.config),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
        }

    def __call__(self, *args: str, ok: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``tofu ARGS…`` in the working directory; with ``ok``, it must exit 0."""
        done = subprocess.run(
            [str(pinned_binary(Settings(), "tofu")), *args],
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if ok:
            assert done.returncode == 0, (
                f"tofu {' '.join(args)} (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done
