"""`billowin setup`: install everything the single-box stack needs, idempotently.

Steps, each skipped when its result is already cached:

1. Debian packages: Docker Engine, HAProxy, Packer, the Docker registry, debootstrap.
2. Nomad, Consul, consul-template and Vault at the versions pinned in ``versions.toml``:
   from HashiCorp's release archives (SHA256SUMS-verified), or built from their
   Go modules when the archives are unreachable or ``BILLOWIN_INSTALL_METHOD=go``;
   Nomad then with its web UI, built from the module's ``ui/`` (``nomad_ui.py``), or
   without it, and a warning, when that build fails.
3. The base Docker image, made without any registry: ``debootstrap`` a Debian
   root filesystem, then ``docker import`` it; and the Docker networks apps and
   builds run on (``ensure_docker_networks``: bridges with inter-container traffic off).

Binaries live under ``<cache>/bin/<tool>/<version>/`` and the base image's root
filesystem under ``<cache>/images/``, so a second run takes seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from rich.console import Console

from billowin.errors import InstallError
from billowin.settings import Settings
from billowin.stack.nomad_ui import (
    NICE,
    UiBuild,
    UiPlan,
    UiRecord,
    UiSpec,
    binary_has_ui,
    failure_warning,
    load_record,
    plan_ui,
    save_record,
)
from billowin.stack.tools import (
    SYSTEM_PACKAGES,
    PinnedTool,
    cached_binary,
    load_versions,
    pinned_tools,
    system_binary,
)

ARCH = "amd64"


class Installer:
    def __init__(self, settings: Settings, console: Console | None = None) -> None:
        self.settings = settings
        self.console = console or Console(stderr=True)
        self.log_path = settings.cache_dir / "logs" / "setup.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    # -- plumbing ------------------------------------------------------------
    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        started = time.monotonic()
        with self.console.status(f"[bold]{title}[/]…"):
            try:
                yield
            except InstallError:
                self.console.print(f"[red]✗[/] {title}")
                raise
        self.console.print(f"[green]✓[/] {title} [dim]({time.monotonic() - started:.1f}s)[/]")

    def log_line(self, line: str) -> None:
        """Append one line of a long step's output to the setup log."""
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        what: str,
        hint: str | None = None,
        log: Path | None = None,
    ) -> str:
        """Run a command (never through a shell), logging its output; fail with its tail.

        ``log``: another log than setup's, for a step whose output would drown it (the UI build).
        """
        log_path = log or self.log_path
        with log_path.open("a") as written:
            written.write(f"\n$ {' '.join(argv)}\n")
            written.flush()
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
            written.write(proc.stdout)
        if proc.returncode != 0:
            last = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise InstallError(
                f"{what} failed (exit {proc.returncode}):\n{last}\n(full log: {log_path})",
                hint=hint,
            )
        return proc.stdout

    # -- 1. Debian packages --------------------------------------------------
    def system_packages(self) -> None:
        missing = sorted({pkg for binary, pkg in SYSTEM_PACKAGES.items() if system_binary(binary) is None})
        title = "Debian packages: " + (", ".join(missing) if missing else "all present")
        with self.step(title):
            if not missing:
                return
            if os.geteuid() != 0:
                raise InstallError(
                    f"these Debian packages are missing: {' '.join(missing)}",
                    hint=f"Run `sudo apt-get install -y {' '.join(missing)}`, then `make setup` again.",
                )
            env = {"DEBIAN_FRONTEND": "noninteractive"}
            self.run(
                ["apt-get", "update"],
                env=env,
                what="apt-get update",
                hint="Check that this machine reaches its Debian mirror.",
            )
            self.run(
                ["apt-get", "install", "-y", "--no-install-recommends", *missing],
                env=env,
                what="apt-get install",
                hint="Check the package names and the Debian mirror.",
            )

    # -- 2. HashiCorp tools ------------------------------------------------
    def hashicorp_tools(self) -> None:
        for tool in pinned_tools(self.settings):
            target = cached_binary(self.settings, tool)
            if target.is_file():
                if tool.name == "nomad" and self.ui_spec() is not None:
                    self.cached_nomad_ui(tool, target)
                    continue
                with self.step(f"{tool.name} {tool.version}: cached"):
                    pass
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            method = self.settings.install_method
            if method in ("auto", "release"):
                try:
                    with self.step(f"{tool.name} {tool.version}: official release archive"):
                        self.from_release(tool, target)
                    continue
                except InstallError as exc:
                    if method == "release":
                        raise
                    self.console.print(
                        "  [yellow]release archive unavailable[/] "
                        f"({exc.message.splitlines()[0]}); building from source"
                    )
            with self.step(
                f"{tool.name} {tool.version}: building from Go module {tool.module} (once per machine)"
            ):
                record = self.from_go_module(tool, target)
            if record is not None and not record.ui:
                self.warn(failure_warning(record, target))

    def from_release(self, tool: PinnedTool, target: Path) -> None:
        base = (
            tool.release_url.format(version=tool.version)
            if tool.release_url
            else f"{self.settings.releases_url}/{tool.name}/{tool.version}"
        )
        archive = f"{tool.name}_{tool.version}_linux_{ARCH}.zip"
        try:
            with httpx.Client(timeout=self.settings.download_timeout, follow_redirects=True) as client:
                sums = client.get(f"{base}/{tool.name}_{tool.version}_SHA256SUMS")
                sums.raise_for_status()
                data = client.get(f"{base}/{archive}")
                data.raise_for_status()
        except httpx.HTTPError as exc:
            url = exc.request.url if isinstance(exc, httpx.RequestError | httpx.HTTPStatusError) else base
            raise InstallError(f"cannot download {url}: {exc}") from exc
        install_from_archive(data.content, sums.text, archive, tool.name, target)
        if tool.name == "nomad":  # HashiCorp builds its releases with the UI
            save_record(target, UiRecord(ui=binary_has_ui(target), source="release"))

    def from_go_module(self, tool: PinnedTool, target: Path) -> UiRecord | None:
        """Build ``tool`` from its Go module into ``target``; Nomad with its web UI when that
        builds (``nomad_ui.py``), else without. Returns what became of Nomad's UI (None for
        the other tools)."""
        go = system_binary("go")
        if go is None:
            raise InstallError(
                f"cannot build {tool.name}: no `go` on this machine and the release archive is unreachable",
                hint="Install Go (https://go.dev/doc/install), "
                "or allow downloads from releases.hashicorp.com.",
            )
        tmp = target.with_name(target.name + ".tmp")
        env = {"CGO_ENABLED": "1", "GOFLAGS": "-buildvcs=false"}
        if tool.build == "go-install":
            gobin = Path(tempfile.mkdtemp(prefix="billowin-gobin-"))
            self.run(
                [str(go), "install", "-trimpath", f"{tool.module}@v{tool.version}"],
                env={**env, "GOBIN": str(gobin)},
                what=f"go install {tool.module}",
            )
            shutil.move(str(gobin / tool.name), tmp)
            shutil.rmtree(gobin, ignore_errors=True)
            record = None
        else:
            src, substitutes = self.module_tree(str(go), tool)
            hint = None
            if substitutes:
                used = ", ".join(f"{sub} {version}" for sub, version in substitutes)
                hint = (
                    f"The Go module proxy does not serve {tool.name} {tool.version}'s own sub-modules, "
                    f"so these published versions stood in: {used}. If the errors above are about "
                    f"missing or changed names, they do not match this release's code: pin other "
                    f"versions under [{tool.name}.submodules] in versions.toml, or pin a release "
                    f"whose go.mod requires versions that match."
                )
            ui = self.ui_spec() if tool.name == "nomad" else None
            record = self.build_nomad_ui(tool, src, str(go), ui) if ui is not None else None
            if ui is not None and record is not None and record.ui:
                try:
                    self.go_build(str(go), src, tmp, env, tool, hint, tags=("ui",))
                except InstallError as exc:
                    record = self.ui_failed(ui, f"go build -tags ui failed: {first_line(exc)}", record)
            if record is None or not record.ui:
                self.go_build(str(go), src, tmp, env, tool, hint)
        tmp.chmod(0o755)
        os.replace(tmp, target)  # atomic: running Nomads keep the binary they started with
        if record is not None:
            save_record(target, record)
        return record

    def go_build(
        self,
        go: str,
        src: Path,
        out: Path,
        env: dict[str, str],
        tool: PinnedTool,
        hint: str | None,
        tags: Sequence[str] = (),
    ) -> None:
        argv = [*NICE, go, "build", "-trimpath", *(["-tags", ",".join(tags)] if tags else []), "-o", str(out)]
        self.run(
            [*argv, tool.package],
            cwd=src,
            env=env,
            what=f"go build{' -tags ' + ','.join(tags) if tags else ''} of {tool.module}",
            hint=hint,
        )

    # -- 2b. the Nomad web UI (billowin/stack/nomad_ui.py) ---------------------
    def ui_spec(self) -> UiSpec | None:
        return UiSpec.from_versions(load_versions(self.settings.versions_file))

    @property
    def ui_log(self) -> Path:
        return self.log_path.with_name("nomad-ui.log")

    def warn(self, message: str) -> None:
        self.console.print(f"  [yellow]warning:[/] {message}", highlight=False)
        self.log_line(f"warning: {message}")

    def ui_failed(self, spec: UiSpec, failed: str, record: UiRecord | None = None) -> UiRecord:
        return UiRecord(
            ui=False,
            source="go-module",
            recipe=spec.recipe,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            seconds=record.seconds if record else None,
            failed=failed,
            log=str(self.ui_log),
            substitutes=record.substitutes if record else (),
        )

    def build_nomad_ui(self, tool: PinnedTool, tree: Path, go: str, spec: UiSpec) -> UiRecord:
        """Build the web UI into the module tree ``tree``; never raises: a failure is recorded.

        The caller builds Nomad with ``-tags ui`` when the record says ``ui``, else without.
        """
        self.ui_log.write_text(f"Nomad {tool.version} web UI, recipe {spec.recipe}\n")
        started = time.monotonic()
        build = UiBuild(
            spec=spec,
            go=go,
            tools_dir=self.settings.cache_dir / "tools",
            work_dir=self.settings.cache_dir / "build",
            log=self.ui_log,
            run=self.run,
            note=lambda line: self.console.print(f"  [dim]Nomad web UI: {line}[/]", highlight=False),
        )
        try:
            substitutes = build.build(tree)
        except InstallError as exc:
            return self.ui_failed(spec, first_line(exc))
        except OSError as exc:  # a full disk, a vanished file: still only the UI is lost
            return self.ui_failed(spec, f"{type(exc).__name__}: {exc}")
        seconds = round(time.monotonic() - started, 1)
        for line in substitutes:
            self.log_line(f"Nomad web UI: not in the registry at its locked version: {line}")
        return UiRecord(
            ui=True,
            source="go-module",
            recipe=spec.recipe,
            built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            seconds=seconds,
            log=str(self.ui_log),
            substitutes=tuple(substitutes),
        )

    def cached_nomad_ui(self, tool: PinnedTool, target: Path) -> None:
        """A cached Nomad: keep it, or rebuild it once with the web UI (a binary cached before
        the UI build existed). Never fails setup over the UI."""
        spec = self.ui_spec()
        assert spec is not None
        label = f"{tool.name} {tool.version}"
        go = system_binary("go")
        can_build = self.settings.install_method != "release" and go is not None
        with ui_lock(self.settings):  # a second setup at the same time waits, then finds it built
            record = load_record(target)
            plan = plan_ui(record, spec.recipe, lambda: binary_has_ui(target), can_build)
            if plan is UiPlan.RECORD:
                save_record(target, UiRecord(ui=True, source="found"))
            if plan in (UiPlan.KEEP, UiPlan.RECORD):
                with self.step(f"{label}: cached, with the web UI"):
                    pass
                return
            if plan is UiPlan.WITHOUT:
                with self.step(f"{label}: cached, without the web UI (BILLOWIN_INSTALL_METHOD=release)"):
                    pass
                return
            if plan is UiPlan.FAILED:
                assert record is not None
                with self.step(f"{label}: cached, without the web UI"):
                    pass
                self.warn(failure_warning(record, target))
                return
            assert go is not None
            started = time.monotonic()
            with self.console.status(f"[bold]{label}: adding the web UI, built from the module's ui/[/]…"):
                record = self.rebuild_with_ui(tool, target, str(go), spec)
            took = f"[dim]({time.monotonic() - started:.1f}s)[/]"
            if record.ui:
                self.console.print(f"[green]✓[/] {label}: rebuilt with the web UI (once per machine) {took}")
            else:
                self.console.print(f"[yellow]![/] {label}: cached, without the web UI {took}")
                self.warn(failure_warning(record, target))

    def rebuild_with_ui(self, tool: PinnedTool, target: Path, go: str, spec: UiSpec) -> UiRecord:
        """Build the UI, then Nomad with it, replacing the cached binary only when both worked."""
        try:
            src, _substitutes = self.module_tree(go, tool)
        except InstallError as exc:
            record = self.ui_failed(spec, f"the Go module download failed: {first_line(exc)}")
        else:
            record = self.build_nomad_ui(tool, src, go, spec)
        if record.ui:
            tmp = target.with_name(target.name + ".tmp")
            env = {"CGO_ENABLED": "1", "GOFLAGS": "-buildvcs=false"}
            try:
                self.go_build(go, src, tmp, env, tool, None, tags=("ui",))
            except InstallError as exc:
                record = self.ui_failed(spec, f"go build -tags ui failed: {first_line(exc)}", record)
            else:
                tmp.chmod(0o755)
                os.replace(tmp, target)  # atomic: running Nomads keep the binary they started with
        save_record(target, record)
        return record

    def go_download(self, go: str, module: str, version: str) -> dict[str, str]:
        out = self.run(
            [go, "mod", "download", "-json", f"{module}@{version}"],
            what=f"go mod download {module}@{version}",
            cwd=Path(tempfile.gettempdir()),
            hint="Check that this machine reaches the Go module proxy (GOPROXY).",
        )
        info: dict[str, str] = json.loads(out)
        if info.get("Error"):
            raise InstallError(f"go mod download {module}@{version}: {info['Error']}")
        return info

    def module_tree(self, go: str, tool: PinnedTool) -> tuple[Path, list[tuple[str, str]]]:
        """A writable copy of the module, with each ``replace => ./sub`` filled in.

        A module zip leaves out nested modules, so every locally replaced
        sub-module is downloaded: at the version pinned for it in versions.toml
        (``[tool.submodules]``), else at the release tag's own commit (as a
        pseudo-version), else at the version the go.mod requires. Returns the
        tree and the ``(sub, version)`` pairs that are not the tag's own commit.
        """
        info = self.go_download(go, tool.module, f"v{tool.version}")
        check_license(Path(info["Dir"]), tool)
        tree = self.settings.cache_dir / "build" / f"{tool.name}-{tool.version}"
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(info["Dir"], tree)
        make_writable(tree)
        meta = json.loads(Path(info["Info"]).read_text())
        commit = meta.get("Origin", {}).get("Hash", "")
        pinned = dict(tool.submodules)
        substitutes: list[tuple[str, str]] = []
        for sub, required in local_replacements(tree / "go.mod", tool.module):
            at_commit = pseudo_versions(required, meta["Time"], commit)
            candidates = submodule_candidates(pinned.get(sub), at_commit, required)
            last_error: InstallError | None = None
            for version in candidates:
                try:
                    sub_info = self.go_download(go, f"{tool.module}/{sub}", version)
                except InstallError as exc:
                    last_error = exc
                    continue
                shutil.rmtree(tree / sub, ignore_errors=True)
                shutil.copytree(sub_info["Dir"], tree / sub)
                make_writable(tree / sub)
                if version not in at_commit:
                    substitutes.append((sub, version))
                break
            else:
                raise last_error or InstallError(f"no version found for {tool.module}/{sub}")
        stand_ins = ", ".join(f"{sub} {version}" for sub, version in substitutes) or "none"
        self.log_line(f"{tool.name} {tool.version}: sub-modules not at the tag's commit: {stand_ins}")
        return tree, substitutes

    # -- 3. base image -------------------------------------------------------
    def base_image(self, ensure_engine: Callable[[], None], suite: str | None = None) -> str:
        """The base image of ``suite`` (the default suite when None): debootstrapped once,
        imported into Docker; language images build on it."""
        spec = dict(load_versions(self.settings.versions_file)["base-image"])
        if suite is not None:
            spec["suite"] = suite
            table = load_versions(self.settings.versions_file).get("runtimes", {}).get("debian", {})
            spec["script"] = table.get(suite, {}).get("script", "")
        tag = base_image_tag(self.settings, suite)
        rootfs_tar = self.settings.cache_dir / "images" / f"base-{spec['suite']}-r{spec['recipe']}.tar"
        ensure_engine()
        with self.step("Docker networks for apps and builds"):
            ensure_docker_networks(self.settings)
        with self.step(f"base image {tag}"):
            if docker_image_exists(tag):
                return tag
            if not rootfs_tar.is_file():
                self.debootstrap(spec, rootfs_tar)
            self.run(
                [
                    "docker",
                    "import",
                    "--change",
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--change",
                    "ENV LANG=C.UTF-8",
                    "--change",
                    'ENTRYPOINT ["/usr/bin/tini", "--"]',
                    "--message",
                    f"billowin base image, recipe {spec['recipe']}",
                    str(rootfs_tar),
                    tag,
                ],
                what="docker import of the base image",
            )
        return tag

    def debootstrap(self, spec: dict[str, object], out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        rootfs = Path(tempfile.mkdtemp(prefix="billowin-rootfs-", dir=out.parent))
        try:
            packages = ",".join(str(p) for p in spec["packages"])  # type: ignore[attr-defined]
            script = str(spec.get("script") or "")  # a suite newer than this debootstrap knows
            self.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={packages}",
                    str(spec["suite"]),
                    str(rootfs),
                    debian_mirror(self.settings, str(spec["suite"]), fallback=base_suite(self.settings)),
                    *([f"/usr/share/debootstrap/scripts/{script}"] if script else []),
                ],
                what="debootstrap of the base image",
                hint="Check that this machine reaches its Debian mirror (or set BILLOWIN_DEBIAN_MIRROR).",
            )
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for child in (rootfs / junk).glob("*"):
                    if child.is_file():
                        child.unlink()
            tmp = out.with_name(out.name + ".tmp")
            self.run(
                ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tmp), "."],
                what="packing the base root filesystem",
            )
            os.replace(tmp, out)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)


@contextmanager
def ui_lock(settings: Settings) -> Iterator[None]:
    """One Nomad UI build at a time on this machine (it takes minutes and gigabytes)."""
    path = settings.cache_dir / "build" / "nomad-ui.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def first_line(exc: InstallError) -> str:
    """What failed, in one line: the message's first line, and the first line of the
    command's output that says "error" (else its last line)."""
    lines = [line.strip() for line in exc.message.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    head, output = lines[0], [line for line in lines[1:] if not line.startswith("(full log:")]
    if not head.endswith(":") or not output:
        return head
    said = next((line for line in output if "error" in line.lower()), output[-1])
    return f"{head} {said}"


APT_SOURCES = Path("/etc/apt")


def debian_mirror(settings: Settings, suite: str, apt_dir: Path = APT_SOURCES, fallback: str = "") -> str:
    """The Debian mirror to debootstrap from: the setting, else the one this machine's apt uses
    for ``suite``, else the one it uses for ``fallback`` (any Debian mirror serves every suite)."""
    if settings.debian_mirror:
        return settings.debian_mirror
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        for block in path.read_text().split("\n\n"):
            fields = dict(
                (k.strip(), v.strip())
                for k, _, v in (
                    line.partition(":") for line in block.splitlines() if not line.startswith("#")
                )
            )
            if fields.get("Types", "").split()[:1] == ["deb"] and suite in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    legacy = apt_dir / "sources.list"
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = [p for p in line.split() if not p.startswith("[")]
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                return parts[1]
    if fallback and fallback != suite:
        return debian_mirror(settings, fallback, apt_dir)
    raise InstallError(
        f"cannot tell which Debian mirror to use for {suite}",
        hint="Set BILLOWIN_DEBIAN_MIRROR to your Debian mirror's URL.",
    )


def base_suite(settings: Settings) -> str:
    return str(load_versions(settings.versions_file)["base-image"]["suite"])


def base_image_tag(settings: Settings, suite: str | None = None) -> str:
    spec = load_versions(settings.versions_file)["base-image"]
    return f"billowin/base:{suite or spec['suite']}-r{spec['recipe']}"


def docker_image_exists(tag: str) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    return proc.returncode == 0


ICC = "com.docker.network.bridge.enable_icc"


def _docker_network_options(settings: Settings, name: str) -> dict[str, str] | None:
    """The driver options of the Docker network ``name``; None if there is none."""
    proc = subprocess.run(
        ["docker", "network", "inspect", "--format", "{{json .Options}}", name],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DOCKER_HOST": settings.docker_host},
    )
    if proc.returncode != 0:
        if "no such network" in proc.stderr.lower() or "not found" in proc.stderr.lower():
            return None
        raise InstallError(f"cannot inspect the Docker network {name}: {proc.stderr.strip()}")
    options = json.loads(proc.stdout.strip() or "null")
    return dict(options or {})


def docker_network_subnet(settings: Settings, name: str) -> str | None:
    """The IPv4 subnet of the Docker network ``name`` (``172.18.0.0/16``); None if there is none.

    Nomad's host network of that name (``client.host_network``) is this subnet: add-ons publish
    their ports on its gateway address, which this box's containers reach and nothing else does.
    """
    proc = subprocess.run(
        ["docker", "network", "inspect", "--format", "{{json .IPAM.Config}}", name],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DOCKER_HOST": settings.docker_host},
    )
    if proc.returncode != 0:
        return None
    for block in json.loads(proc.stdout.strip() or "null") or []:
        subnet = str(block.get("Subnet") or "")
        if subnet and ":" not in subnet:
            return subnet
    return None


def ensure_docker_networks(settings: Settings) -> list[str]:
    """Make the apps' and the builds' Docker networks unless they exist; returns those made.

    Both are bridges with inter-container traffic off (``enable_icc=false``): an app's
    container cannot reach another app's or a build's container, only the host's published
    ports (the router). A network of that name with inter-container traffic on is refused.
    """
    made = []
    lock_path = settings.cache_dir / "docker-networks.lock"  # two stacks starting at once
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, role in ((settings.app_network, "apps"), (settings.build_network, "builds")):
            options = _docker_network_options(settings, name)
            if options is None:
                argv = ["docker", "network", "create", "--driver", "bridge", "--opt", f"{ICC}=false"]
                argv += ["--label", f"billowin.network={role}", name]
                proc = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    check=False,
                    env={**os.environ, "DOCKER_HOST": settings.docker_host},
                )
                if proc.returncode != 0:
                    raise InstallError(f"cannot create the Docker network {name}: {proc.stderr.strip()}")
                made.append(name)
            elif options.get(ICC) != "false":
                raise InstallError(
                    f"the Docker network {name} exists, but with inter-container traffic on",
                    hint=f"Remove it (`docker network rm {name}`, once nothing uses it) and start again.",
                )
    return made


def make_writable(tree: Path) -> None:
    for dirpath, _dirs, files in os.walk(tree):
        os.chmod(dirpath, 0o755)  # noqa: S103 - a build tree of public sources
        for name in files:
            path = Path(dirpath, name)
            path.chmod(path.stat().st_mode | 0o200)


def pseudo_versions(required: str | None, commit_time: str, commit: str) -> list[str]:
    """The pseudo-versions a sub-module at ``commit`` may go by, most likely first.

    Go names an untagged commit ``vX.Y.(Z+1)-0.<time>-<hash>`` after the newest
    ``vX.Y.Z`` tag it descends from (``v0.0.0-<time>-<hash>`` when there is none),
    and a module proxy may serve only that canonical name. Which tag that is
    cannot be known without the repository, so the guesses come from the version
    the go.mod requires: the same base when it is itself a pseudo-version, else
    the next patch version.
    """
    if not commit:
        return []
    stamp = commit_time.replace("-", "").replace(":", "").replace("T", "")[:14]
    suffix = f"0.{stamp}-{commit[:12]}"
    bases: list[str] = []
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)(-0\.\d{14}-[0-9a-f]{12})?", required or "")
    if match:
        major, minor, patch, pseudo = match.groups()
        bases.append(f"v{major}.{minor}.{int(patch) + (0 if pseudo else 1)}")
    candidates = [f"{base}-{suffix}" for base in bases]
    return [*candidates, f"v0.0.0-{stamp}-{commit[:12]}"]


def submodule_candidates(pinned: str | None, at_commit: list[str], required: str | None) -> list[str]:
    """Versions to try for a locally replaced sub-module, best first.

    A version pinned in versions.toml is the only one tried: it was chosen because
    the others do not build.
    """
    if pinned:
        return [pinned]
    return [*at_commit, *([required] if required else [])]


LICENSE_MARKERS = {"MPL-2.0": "Mozilla Public License, version 2.0"}


def check_license(module_dir: Path, tool: PinnedTool) -> None:
    """Refuse to build a release whose LICENSE is not the one versions.toml expects."""
    if not tool.license:
        return
    marker = LICENSE_MARKERS.get(tool.license)
    if marker is None:
        raise InstallError(f"versions.toml names an unknown license for {tool.name}: {tool.license!r}")
    try:
        head = (module_dir / "LICENSE").read_text(errors="replace")[:2000]
    except OSError:
        head = ""
    if marker not in head:
        if "Business Source License" in head:
            found = "the Business Source License"
        else:
            found = repr(next((line.strip() for line in head.splitlines() if line.strip()), "no LICENSE"))
        raise InstallError(
            f"{tool.name} {tool.version} is not licensed under {tool.license}: its LICENSE is {found}",
            hint=f"Pin a {tool.license} release of {tool.name} in versions.toml.",
        )


def local_replacements(go_mod: Path, module: str) -> list[tuple[str, str | None]]:
    """``(subdir, required_version)`` for every ``replace module/x => ./x`` in ``go_mod``."""
    text = go_mod.read_text()
    required: dict[str, str] = {}
    replaced: list[str] = []
    for raw in text.splitlines():
        line = raw.split("//")[0].strip()
        for prefix in ("require ", "replace "):
            if line.startswith(prefix):
                line = line[len(prefix) :].strip()
        if "=>" in line:
            left, right = (part.strip() for part in line.split("=>", 1))
            if right.startswith("./") and left.split()[0].startswith(module + "/"):
                replaced.append(left.split()[0])
        elif line.startswith(module + "/"):
            name, _, version = line.partition(" ")
            required[name] = version.strip() or ""
    return [(m[len(module) + 1 :], required.get(m) or None) for m in replaced]


def install_from_archive(archive: bytes, sha256sums: str, filename: str, binary: str, target: Path) -> None:
    """Verify ``archive`` against its SHA256SUMS line, then extract ``binary`` to ``target``."""
    expected = None
    for line in sha256sums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == filename:
            expected = parts[0]
    if expected is None:
        raise InstallError(f"{filename} is not listed in its SHA256SUMS file")
    actual = hashlib.sha256(archive).hexdigest()
    if actual != expected:
        raise InstallError(
            f"checksum mismatch for {filename}: expected {expected}, got {actual}",
            hint="The download was corrupted or tampered with; nothing was installed. Retry `make setup`.",
        )
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        try:
            data = zf.read(binary)
        except KeyError as exc:
            raise InstallError(f"{filename} does not contain {binary}") from exc
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, target)
