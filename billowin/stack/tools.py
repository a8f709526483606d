"""Where each binary Billowin runs comes from, and the pinned versions file."""

from __future__ import annotations

import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billowin.errors import InstallError
from billowin.settings import Settings

HASHICORP_TOOLS = ("nomad", "consul", "consul-template", "vault")
# Installed the same way (release archive, else its Go module), pinned in the same file: OpenTofu,
# for terraform/ (`make test` checks its formatting, `make test-terraform` applies it).
PINNED_TOOLS = (*HASHICORP_TOOLS, "tofu")

# Binaries from Debian's packages, and the package each comes from.
SYSTEM_PACKAGES = {
    "dockerd": "docker.io",
    "docker": "docker.io",
    "haproxy": "haproxy",
    "packer": "packer",
    "docker-registry": "docker-registry",
    "debootstrap": "debootstrap",
    "git": "git",
    "iptables": "iptables",
    "systemd-analyze": "systemd",  # checks the units `billowin install` writes (tests/unit/test_units.py)
    "ip": "iproute2",  # `billowin install --interface`
    "wrk": "wrk",  # `make bench`
    "nginx": "nginx",  # `make bench`: router_scale's baseline (one server block per app, as Dokku)
    "chromium": "chromium",  # the dashboard's browser tests
    "chromedriver": "chromium-driver",
    "pebble": "pebble",  # the ACME test CA of the HTTPS tests (tests/integration/test_certs.py)
    "knotd": "knot",  # the authoritative DNS server, with RFC 2136 updates, of the same tests
}
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class PinnedTool:
    name: str
    version: str
    module: str
    build: str  # "go-install" | "module-dir"
    # module-dir only: versions to use for locally replaced sub-modules ("sdk" -> "v0.9.2"),
    # when the release's own commit is not served by the Go module proxy.
    submodules: tuple[tuple[str, str], ...] = ()
    # module-dir only: the license the release must carry ("MPL-2.0"); checked before building.
    license: str | None = None
    package: str = "."  # module-dir only: the main package, inside the module ("./cmd/tofu")
    # Where the release archives are, when not releases.hashicorp.com/<name>/<version>.
    release_url: str | None = None


def load_versions(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def pinned_tools(settings: Settings) -> list[PinnedTool]:
    versions = load_versions(settings.versions_file)
    tools = []
    for name in PINNED_TOOLS:
        spec = versions[name]
        tools.append(
            PinnedTool(
                name,
                str(spec["version"]),
                spec["module"],
                spec["build"],
                submodules=tuple(sorted((str(k), str(v)) for k, v in spec.get("submodules", {}).items())),
                license=spec.get("license"),
                package=str(spec.get("package", ".")),
                release_url=spec.get("release_url"),
            )
        )
    return tools


def cached_binary(settings: Settings, tool: PinnedTool) -> Path:
    return settings.bin_dir / tool.name / tool.version / tool.name


def pinned_binary(settings: Settings, name: str) -> Path:
    """The installed binary of one pinned tool (``tofu``), or an error saying to run setup."""
    tool = next(t for t in pinned_tools(settings) if t.name == name)
    path = cached_binary(settings, tool)
    if not path.is_file():
        raise InstallError(
            f"{name} {tool.version} is not installed (expected at {path})", hint="Run `make setup`."
        )
    return path


def system_binary(name: str) -> Path | None:
    found = shutil.which(name) or shutil.which(name, path=":".join(SYSTEM_DIRS))
    return Path(found) if found else None


@dataclass(frozen=True)
class Toolset:
    """Absolute paths of every binary the single-box stack starts."""

    nomad: Path
    consul: Path
    consul_template: Path
    dockerd: Path
    haproxy: Path
    docker_registry: Path
    packer: Path
    vault: Path

    @classmethod
    def resolve(cls, settings: Settings) -> Toolset:
        """Find every binary, or fail naming all that are missing and how to get them."""
        missing: list[str] = []
        found: dict[str, Path] = {}
        for tool in pinned_tools(settings):
            if tool.name not in HASHICORP_TOOLS:
                continue  # tofu: terraform/'s, not the stack's
            path = cached_binary(settings, tool)
            if path.is_file():
                found[tool.name] = path
            else:
                missing.append(f"{tool.name} {tool.version} (expected at {path})")
        for name in ("dockerd", "haproxy", "docker-registry", "packer"):
            path_or_none = system_binary(name)
            if path_or_none is None:
                missing.append(f"{name} (Debian package {SYSTEM_PACKAGES[name]})")
            else:
                found[name] = path_or_none
        if missing:
            raise InstallError(
                "missing binaries: " + "; ".join(missing),
                hint="Run `make setup` to install them.",
            )
        return cls(
            nomad=found["nomad"],
            consul=found["consul"],
            consul_template=found["consul-template"],
            dockerd=found["dockerd"],
            haproxy=found["haproxy"],
            docker_registry=found["docker-registry"],
            packer=found["packer"],
            vault=found["vault"],
        )


@dataclass(frozen=True)
class CertTestTools:
    """What the HTTPS tests run besides the stack: pebble (an ACME CA) and knotd (authoritative DNS).

    ``billowin setup`` installs both (``SYSTEM_PACKAGES``); nothing outside the tests and the bench
    starts them, so ``Toolset`` (what ``billowin up`` needs) does not list them.
    """

    pebble: Path
    knotd: Path

    @classmethod
    def resolve(cls) -> CertTestTools:
        """Find both, or fail naming what is missing and how to get it."""
        found = {name: system_binary(name) for name in ("pebble", "knotd")}
        missing = [f"{n} (Debian package {SYSTEM_PACKAGES[n]})" for n, path in found.items() if not path]
        if missing:
            raise InstallError(
                "missing binaries: " + "; ".join(missing), hint="Run `make setup` to install them."
            )
        pebble, knotd = found["pebble"], found["knotd"]
        assert pebble is not None and knotd is not None
        return cls(pebble=pebble, knotd=knotd)


def main(argv: list[str] | None = None) -> int:
    """``python -m billowin.stack.tools NAME``: the path of an installed pinned tool (the Makefile's
    way to find ``tofu``); exits 1 with what to do when it is not installed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in PINNED_TOOLS:
        print(f"usage: python -m billowin.stack.tools {{{'|'.join(PINNED_TOOLS)}}}", file=sys.stderr)
        return 2
    try:
        print(pinned_binary(Settings(), args[0]))
    except InstallError as exc:
        print(f"{exc.message}: {exc.hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
