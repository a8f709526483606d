"""The Nomad web UI, for a Nomad built from its Go module.

A Nomad built from its Go module has no UI unless it is built with the ``ui`` tag, and that
tag wants the Ember app under ``ui/`` compiled and packed into Go first. This module does what
Nomad's own GNUmakefile does for a release (``ember-dist``, then ``static-assets``):

1. copy the module's ``ui/`` into the build tree (never the Go module cache) and patch it
   (``patch_ui_tree``, below: why each change);
2. ``yarn install`` (yarn 1 from the npm registry, into Billowin's cache) and the Ember
   production build into ``ui/dist``;
3. ``go-bindata-assetfs`` (from the Go module proxy, with the GNUmakefile's flags; versions.toml
   says why not at its commits) packs ``ui/dist`` into ``command/agent/bindata_assetfs.go``;
4. the caller then builds Nomad with ``-tags ui``.

What was built is recorded beside the cached binary (``UiRecord``, ``nomad.ui.json``): whether
the binary serves the UI, and when the UI build failed, why and where its log is. A failed UI
build never fails setup: the caller installs the plain binary and warns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import httpx

from billowin.errors import InstallError

# -- the patch ---------------------------------------------------------------
#
# Of the ~2,650 packages ui/yarn.lock pins, three resolve to GitHub, which this machine (and
# many a locked-down one) cannot reach. None of them is needed to build the UI:
#
# - @storybook/ember-cli-storybook: the component gallery's build tool (`yarn storybook`).
# - eslint-plugin-ember-a11y-testing: a lint rule set for the UI's own tests.
# - the @storybook/* packages of optionalDependencies go with the first: they are the gallery's
#   runtime (webpack 4, React: some 700 of the locked packages), which the UI build never loads.
# - ember-usable: two small functions, `use` (a decorator) and `setUsableManager`, that
#   ember-statecharts (from the npm registry) and one controller (evaluations/index.js)
#   import. It is replaced by an addon of Billowin's own, EMBER_USABLE below, written
#   for the one protocol ember-statecharts' `useMachine` speaks.
#
# The first two are dropped from package.json and the lockfile; ember-usable's lockfile entry is
# dropped and a `resolutions` entry points every `ember-usable` at the local addon. The lockfile's
# registry.yarnpkg.com URLs are pointed at npm's configured registry (the same packages: the
# lockfile's integrity hashes still hold). Every other package stays at its locked version.

DROPPED_PACKAGES = ("@storybook/ember-cli-storybook", "eslint-plugin-ember-a11y-testing")
DROPPED_OPTIONAL_PREFIX = "@storybook/"
REPLACED_PACKAGE = "ember-usable"
LOCAL_ADDON_DIR = "billowin-addons/ember-usable"  # inside ui/
YARN_REGISTRY = "https://registry.yarnpkg.com"
# Marks a patched tree, so a patch is never applied twice (and a half-patched tree is redone).
PATCH_STAMP = ".billowin-patched"
PATCH_RECIPE = "1"  # bump when the patch changes: it keys the cached ui/dist

EMBER_USABLE_PACKAGE = {
    "name": REPLACED_PACKAGE,
    "version": "0.0.0-billowin.1",
    "description": "Billowin's stand-in for ember-usable: `use` and `setUsableManager` only.",
    "private": True,
    "keywords": ["ember-addon"],
    "license": "MPL-2.0",
    # A range ui/yarn.lock already pins, so nothing new is resolved.
    "dependencies": {"ember-cli-babel": "^7.26.10"},
}

EMBER_USABLE_INDEX = """'use strict';

module.exports = {
  name: require('./package').name,
};
"""

# The addon's one module. The protocol is the one ember-statecharts' useMachine speaks: a value
# whose prototype chain was given a manager factory by setUsableManager; the factory's manager
# has createUsable(context, value) -> bucket, setupUsable(bucket), getState(bucket),
# teardownUsable(bucket). `@use field = value` makes the field a getter that, on first read,
# evaluates the initializer once for that instance, creates and sets up its bucket, and ties the
# teardown to the instance's destruction; every read answers getState (which reads tracked state,
# so templates follow it). The value is not re-evaluated when what it read changes: no caller in
# Nomad's UI asks for that (ember-statecharts only warns about it).
EMBER_USABLE_ADDON = """/*
 * Billowin's stand-in for ember-usable (see billowin/stack/nomad_ui.py).
 * SPDX-License-Identifier: MPL-2.0
 */
import { assert } from '@ember/debug';
import { getOwner } from '@ember/application';
import { registerDestructor } from '@ember/destroyable';

const FACTORIES = new WeakMap();
const INSTANCES = new WeakMap();

export function setUsableManager(value, factory) {
  FACTORIES.set(value, factory);
  return value;
}

function factoryOf(value) {
  for (let at = value; at !== null && at !== undefined; at = Object.getPrototypeOf(at)) {
    const factory = FACTORIES.get(at);
    if (factory) {
      return factory;
    }
  }
  return undefined;
}

export function use(prototype, key, descriptor) {
  const initializer = descriptor && descriptor.initializer;
  assert(`@use ${key}: give the field a value, e.g. \\`@use ${key} = useMachine(...)\\``,
    typeof initializer === 'function');
  return {
    enumerable: true,
    configurable: true,
    get() {
      let usables = INSTANCES.get(this);
      if (!usables) {
        usables = new Map();
        INSTANCES.set(this, usables);
      }
      let usable = usables.get(key);
      if (!usable) {
        const value = initializer.call(this);
        const factory = factoryOf(value);
        assert(`@use ${key}: its value has no usable manager (see setUsableManager)`, factory);
        const manager = factory(getOwner(this));
        const bucket = manager.createUsable(this, value);
        usable = { manager, bucket };
        usables.set(key, usable);
        manager.setupUsable(bucket);
        registerDestructor(this, () => manager.teardownUsable(bucket));
      }
      return usable.manager.getState(usable.bucket);
    },
  };
}
"""


def patch_ui_tree(ui: Path, registry: str) -> list[str]:
    """Patch a copy of Nomad's ``ui/`` so it installs from ``registry`` alone; returns what changed.

    Idempotent: a tree already patched at this recipe is left as it is. Refuses a tree whose
    package.json or yarn.lock do not look like the ones this patch was written for, rather
    than build something half-patched.
    """
    stamp = ui / PATCH_STAMP
    if stamp.is_file() and stamp.read_text().strip() == PATCH_RECIPE:
        return []
    package_json = ui / "package.json"
    lockfile = ui / "yarn.lock"
    try:
        package = json.loads(package_json.read_text())
        lock_text = lockfile.read_text()
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read the Nomad UI's package.json or yarn.lock in {ui}: {exc}") from exc
    changes: list[str] = []
    dev = package.get("devDependencies", {})
    for name in DROPPED_PACKAGES:
        if dev.pop(name, None) is not None:
            changes.append(f"dropped {name} (devDependencies)")
    optional = package.get("optionalDependencies", {})
    for name in sorted(optional):
        if name.startswith(DROPPED_OPTIONAL_PREFIX):
            del optional[name]
            changes.append(f"dropped {name} (optionalDependencies)")
    addon = f"file:./{LOCAL_ADDON_DIR}"
    package.setdefault("resolutions", {})[REPLACED_PACKAGE] = addon
    changes.append(f"{REPLACED_PACKAGE} -> {addon} (resolutions)")
    lock_text, dropped = drop_lock_entries(lock_text, (*DROPPED_PACKAGES, REPLACED_PACKAGE))
    changes += [f"dropped the yarn.lock entry {entry}" for entry in dropped]
    lock_text, moved = rewrite_registry(lock_text, registry)
    if moved:
        changes.append(f"{moved} yarn.lock URLs: {YARN_REGISTRY} -> {registry.rstrip('/')}")
    leftover = remote_sources(lock_text)
    if leftover:
        raise InstallError(
            "the Nomad UI's yarn.lock still names packages outside the npm registry: " + ", ".join(leftover),
            hint="This Nomad's UI locks other packages than the patch in billowin/stack/nomad_ui.py "
            "expects: extend DROPPED_PACKAGES, or pin the Nomad version it was written for.",
        )
    addon_dir = ui / LOCAL_ADDON_DIR
    (addon_dir / "addon").mkdir(parents=True, exist_ok=True)
    (addon_dir / "package.json").write_text(json.dumps(EMBER_USABLE_PACKAGE, indent=2) + "\n")
    (addon_dir / "index.js").write_text(EMBER_USABLE_INDEX)
    (addon_dir / "addon" / "index.js").write_text(EMBER_USABLE_ADDON)
    changes.append(f"wrote Billowin's {REPLACED_PACKAGE} addon in {LOCAL_ADDON_DIR}")
    package_json.write_text(json.dumps(package, indent=2) + "\n")
    lockfile.write_text(lock_text)
    stamp.write_text(PATCH_RECIPE + "\n")
    return changes


def lock_entry_names(header: str) -> set[str]:
    """The package names a yarn.lock entry's header line stands for (``a@^1, "b@x":`` -> a, b)."""
    names = set()
    for pattern in header.rstrip(":").split(","):
        pattern = pattern.strip().strip('"')
        at = pattern.find("@", 1)  # a scoped name starts with "@"
        names.add(pattern[:at] if at > 0 else pattern)
    return names


def drop_lock_entries(lock_text: str, names: Sequence[str]) -> tuple[str, list[str]]:
    """``lock_text`` without the entries of ``names``; and the dropped entries' headers.

    Only the entries go: a dependency line naming one (ember-statecharts' ``ember-usable``)
    stays, and yarn resolves it anew through the ``resolutions`` of package.json.
    """
    kept: list[str] = []
    dropped: list[str] = []
    for block in re.split(r"\n(?=\S)", lock_text):
        header = block.split("\n", 1)[0]
        if not header.startswith("#") and header.endswith(":") and lock_entry_names(header) & set(names):
            dropped.append(header.rstrip(":"))
            continue
        kept.append(block)
    text = "\n".join(kept)
    return text if text.endswith("\n") else text + "\n", dropped


def rewrite_registry(lock_text: str, registry: str) -> tuple[str, int]:
    """Point the lockfile's ``resolved`` URLs at ``registry``; returns the text and how many moved."""
    target = registry.rstrip("/")
    if target == YARN_REGISTRY:
        return lock_text, 0
    pattern = re.compile(r'^(\s+resolved ")' + re.escape(YARN_REGISTRY) + "/", re.M)
    return pattern.subn(lambda match: match.group(1) + target + "/", lock_text)


def remote_sources(lock_text: str) -> list[str]:
    """The entries of a lockfile whose ``resolved`` URL is not a registry tarball."""
    found = []
    header = ""
    for line in lock_text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            header = line.rstrip(":")
        match = re.match(r'\s+resolved "([^"]+)"', line)
        if match and "/-/" not in match.group(1):
            found.append(header)
    return found


# yarn 1's answer to a locked tarball the registry does not hold.
MISSING_TARBALL = re.compile(r'(https?://\S+?\.tgz): Request failed "404 Not Found"')


def missing_tarballs(output: str) -> list[str]:
    """The tarball URLs a failed ``yarn install`` could not find (404), in order, once each."""
    return list(dict.fromkeys(MISSING_TARBALL.findall(output)))


def drop_resolved(lock_text: str, urls: Sequence[str]) -> tuple[str, list[str]]:
    """``lock_text`` without the entries resolved to one of ``urls``; and their headers.

    A registry that serves only some versions of a package (a mirror) answers 404 for a locked
    version it lacks; without its entry, yarn resolves that one range anew against the versions
    the registry has, and every other package stays locked.
    """
    wanted = {url.split("#", 1)[0] for url in urls}
    kept: list[str] = []
    dropped: list[str] = []
    for block in re.split(r"\n(?=\S)", lock_text):
        match = re.search(r'^\s+resolved "([^"#]+)', block, re.M)
        if match and match.group(1) in wanted:
            dropped.append(block.split("\n", 1)[0].rstrip(":"))
            continue
        kept.append(block)
    text = "\n".join(kept)
    return text if text.endswith("\n") else text + "\n", dropped


# -- what versions.toml pins ---------------------------------------------------


@dataclass(frozen=True)
class UiSpec:
    """``[nomad.ui]`` of versions.toml: the tools the UI build uses, and its recipe."""

    recipe: str
    yarn: str
    go_bindata: str  # "module/cmd@version", for `go install`
    go_bindata_assetfs: str

    @classmethod
    def from_versions(cls, versions: dict[str, Any]) -> UiSpec | None:
        """The spec, or None when versions.toml asks for no UI build."""
        table = versions.get("nomad", {}).get("ui")
        if not table:
            return None
        try:
            return cls(
                recipe=f"{table['recipe']}.{PATCH_RECIPE}",
                yarn=str(table["yarn"]),
                go_bindata=str(table["go-bindata"]),
                go_bindata_assetfs=str(table["go-bindata-assetfs"]),
            )
        except KeyError as exc:
            raise InstallError(f"versions.toml: [nomad.ui] has no {exc.args[0]}") from exc


# -- what was built --------------------------------------------------------------


@dataclass(frozen=True)
class UiRecord:
    """Whether the cached Nomad binary serves the web UI, kept beside it as ``nomad.ui.json``.

    ``billowin setup`` reads it to know whether to build the UI: a binary cached before the UI
    build existed has no record, and one whose UI build failed has ``ui`` false with the reason,
    so that a failing build is not paid again on every setup.
    """

    ui: bool
    source: str  # "release" (HashiCorp's archive), "go-module" (built here), "found" (a scan)
    recipe: str = ""
    built_at: str = ""
    seconds: float | None = None
    failed: str = ""  # what failed, and its first line
    log: str = ""
    substitutes: tuple[str, ...] = ()  # lockfile ranges yarn resolved anew (a registry lacked them)


def record_path(binary: Path) -> Path:
    return binary.with_name(binary.name + ".ui.json")


def load_record(binary: Path) -> UiRecord | None:
    """The record beside ``binary``; None when there is none (or it cannot be read)."""
    try:
        data = json.loads(record_path(binary).read_text())
        data["substitutes"] = tuple(data.get("substitutes", ()))
        return UiRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def save_record(binary: Path, record: UiRecord) -> None:
    path = record_path(binary)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(tmp, path)


# What a Nomad built without the `ui` tag answers at /ui/ (command/agent/stub_asset.go), so the
# binary holds it; one built with the tag does not.
STUB_TEXT = b"Nomad UI is not available in this binary"
DISABLED_TEXT = "Nomad UI is disabled"  # a UI build whose agent config says `ui { enabled = false }`
APP_MARKER = 'name="nomad-ui/config/environment"'  # in the Ember app's index.html


def binary_has_ui(binary: Path) -> bool:
    """Whether ``binary`` was built with Nomad's UI (it lacks the stub page's text)."""
    overlap = len(STUB_TEXT)
    tail = b""
    with binary.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            if STUB_TEXT in tail + chunk:
                return False
            tail = chunk[-overlap:]
    return True


class UiPlan(StrEnum):
    KEEP = "keep"  # the cached binary serves the UI
    RECORD = "record"  # it does, but nothing says so yet: write the record
    BUILD = "build"  # build the UI and rebuild Nomad with it
    FAILED = "failed"  # its UI build failed at this recipe: keep the plain binary, say so
    WITHOUT = "without"  # no UI, and no Go build allowed (BILLOWIN_INSTALL_METHOD=release)


def plan_ui(record: UiRecord | None, recipe: str, has_ui: Callable[[], bool], can_build: bool) -> UiPlan:
    """What setup does about the UI of an already cached Nomad binary.

    A failure is retried only when the recipe changed since (a fixed patch, new pins): the
    cold build costs minutes, and what failed once (a registry missing a package) usually
    fails again. Removing the record retries it by hand.
    """
    if record is not None:
        if record.ui:
            return UiPlan.KEEP
        if record.recipe == recipe or not can_build:
            return UiPlan.FAILED
        return UiPlan.BUILD
    if has_ui():
        return UiPlan.RECORD
    return UiPlan.BUILD if can_build else UiPlan.WITHOUT


def failure_warning(record: UiRecord, binary: Path) -> str:
    """The warning setup prints when the Nomad it installed has no UI because the build failed."""
    return (
        f"the Nomad web UI was not built: {record.failed}. Nomad is installed without it "
        f"(its API and CLI are unaffected). Log: {record.log}. To retry: "
        f"`rm {record_path(binary)}` and run `make setup` again."
    )


# -- the build -------------------------------------------------------------------

NICE = ("nice", "-n", "10")  # the UI build shares the machine with everything else
LOCK_ROUNDS = 20  # yarn installs, each after dropping the locked versions a registry lacks
# As Nomad's GNUmakefile (static-assets) runs it.
ASSETFS_FLAGS = ("-pkg", "agent", "-prefix", "ui", "-modtime", "1480000000", "-tags", "ui")
OPENSSL_ERROR = "ERR_OSSL_EVP_UNSUPPORTED"  # webpack 4's md4 on Node 17+'s OpenSSL 3


class Runner(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        what: str,
        hint: str | None = None,
        log: Path | None = None,
    ) -> str: ...


@dataclass
class UiBuild:
    """The steps of Nomad's ``ember-dist`` and ``static-assets`` targets, on a module tree."""

    spec: UiSpec
    go: str
    tools_dir: Path  # <cache>/tools: yarn and the go-bindata commands, kept by version
    work_dir: Path  # <cache>/build: yarn's download cache while the build runs
    log: Path
    run: Runner
    note: Callable[[str], None] = lambda _line: None

    def build(self, tree: Path) -> list[str]:
        """Build the UI into ``tree/command/agent/bindata_assetfs.go``; returns the substitutes.

        Raises InstallError naming the step that failed.
        """
        node = shutil.which("node")
        if node is None:
            raise InstallError(
                "no `node` on this machine", hint="Install Node.js (Debian: nodejs npm), then retry."
            )
        ui = tree / "ui"
        registry = self.npm_registry()
        changes = patch_ui_tree(ui, registry)
        self.log_lines([f"patched {ui}:", *(f"  {change}" for change in changes)])
        yarn = self.yarn()
        cache = self.work_dir / "yarn-cache"
        env = {
            "YARN_CACHE_FOLDER": str(cache),
            "HUSKY_SKIP_INSTALL": "1",  # husky 4 would install git hooks
            "JOBS": "1",  # ember-cli's Babel workers: one, on a shared machine
        }
        started = time.monotonic()
        substitutes = self.yarn_install(yarn, ui, registry, env)
        self.note(f"yarn install ({time.monotonic() - started:.0f}s)")
        started = time.monotonic()
        self.ember_build(yarn, ui, env)
        self.note(f"ember build -prod ({time.monotonic() - started:.0f}s)")
        self.static_assets(tree)
        shutil.rmtree(ui / "node_modules", ignore_errors=True)  # 700 MB; ui/dist is what counts
        shutil.rmtree(cache, ignore_errors=True)
        return substitutes

    def log_lines(self, lines: Sequence[str]) -> None:
        with self.log.open("a") as log:
            log.write("\n".join(lines) + "\n")

    def npm_registry(self) -> str:
        """The registry npm is configured for here (yarn 1 reads no .npmrc of a mirror's)."""
        if shutil.which("npm") is None:
            return "https://registry.npmjs.org/"
        out = self.run(["npm", "config", "get", "registry"], what="npm config get registry", log=self.log)
        registry = out.strip().splitlines()[-1] if out.strip() else ""
        return registry if registry.startswith(("https://", "http://")) else "https://registry.npmjs.org/"

    def yarn(self) -> Path:
        """yarn 1 at the pinned version, from the npm registry into the tools cache (once)."""
        prefix = self.tools_dir / f"yarn-{self.spec.yarn}"
        binary = prefix / "node_modules" / "yarn" / "bin" / "yarn.js"
        if not binary.is_file():
            if shutil.which("npm") is None:
                raise InstallError(
                    "no `npm` on this machine to fetch yarn with",
                    hint="Install npm (Debian: npm), then retry.",
                )
            self.run(
                ["npm", "install", "--no-save", "--prefix", str(prefix), f"yarn@{self.spec.yarn}"],
                what=f"npm install yarn@{self.spec.yarn}",
                hint="Check that this machine reaches the npm registry.",
                log=self.log,
            )
        return binary

    def yarn_install(self, yarn: Path, ui: Path, registry: str, env: dict[str, str]) -> list[str]:
        """``yarn install`` at the locked versions, but for those the registry does not serve.

        A mirror may hold only some versions of a package: yarn then fails on the first locked
        tarball that answers 404. Each such entry is dropped and yarn runs again, resolving
        that one range against what the registry has; at most LOCK_ROUNDS times.
        """
        argv = [*NICE, "node", str(yarn), "install", "--non-interactive", "--no-progress"]
        argv += ["--network-timeout", "300000", "--registry", registry]
        dropped: list[str] = []
        for _ in range(LOCK_ROUNDS):
            try:
                self.run(argv, cwd=ui, env=env, what="yarn install of the Nomad UI", log=self.log)
                break
            except InstallError:
                lock = ui / "yarn.lock"
                text, gone = drop_resolved(lock.read_text(), missing_tarballs(last_output(self.log)))
                if not gone:
                    raise
                lock.write_text(text)
                dropped += gone
                self.log_lines([f"not in the registry, resolved anew: {', '.join(gone)}"])
        else:
            raise InstallError(
                f"yarn install of the Nomad UI: more than {LOCK_ROUNDS} locked versions are missing "
                f"from {registry}",
                hint="Point npm at a registry that has them (`npm config set registry URL`).",
            )
        return resolved_anew(dropped, (ui / "yarn.lock").read_text())

    def ember_build(self, yarn: Path, ui: Path, env: dict[str, str]) -> None:
        """``ember build --environment=production`` (Nomad's ``yarn build``) into ``ui/dist``."""
        argv = [*NICE, "node", str(yarn), "run", "build"]
        try:
            self.run(argv, cwd=ui, env=env, what="ember build of the Nomad UI", log=self.log)
        except InstallError as exc:
            if OPENSSL_ERROR not in exc.message:
                raise
            legacy = {**env, "NODE_OPTIONS": "--openssl-legacy-provider"}
            self.run(argv, cwd=ui, env=legacy, what="ember build of the Nomad UI", log=self.log)
        if not (ui / "dist" / "index.html").is_file():
            raise InstallError(f"the ember build wrote no {ui / 'dist' / 'index.html'}")

    def static_assets(self, tree: Path) -> None:
        """Nomad's ``static-assets``: ui/dist packed into command/agent/bindata_assetfs.go."""
        gobin = self.tools_dir / "go-bindata"
        for package in (self.spec.go_bindata, self.spec.go_bindata_assetfs):
            command = package.split("@", 1)[0].rsplit("/", 1)[-1]
            if not (gobin / command).is_file():
                self.run(
                    [*NICE, self.go, "install", package],
                    env={"GOBIN": str(gobin), "GOFLAGS": "-buildvcs=false"},
                    what=f"go install {package}",
                    hint="Check that this machine reaches the Go module proxy (GOPROXY).",
                    log=self.log,
                )
        out = tree / "bindata_assetfs.go"
        self.run(
            [str(gobin / "go-bindata-assetfs"), *ASSETFS_FLAGS, "-o", out.name, "./ui/dist/..."],
            cwd=tree,
            env={"PATH": f"{gobin}{os.pathsep}{os.environ.get('PATH', '')}"},
            what="go-bindata-assetfs of the Nomad UI",
            log=self.log,
        )
        text = out.read_text()
        if "func assetFS()" not in text or "ui/dist/index.html" not in text:
            raise InstallError(f"go-bindata-assetfs wrote an unexpected {out}")
        os.replace(out, tree / "command" / "agent" / "bindata_assetfs.go")


def last_output(log: Path, size: int = 1 << 20) -> str:
    """The output of the last command in ``log`` (each begins with a ``$ argv`` line)."""
    with log.open("rb") as fh:
        fh.seek(max(0, log.stat().st_size - size))
        text = fh.read().decode(errors="replace")
    return text.rsplit("\n$ ", 1)[-1]


def resolved_anew(dropped: Sequence[str], lock_text: str) -> list[str]:
    """``"<range> -> <version>"`` for each dropped entry, read from the lockfile yarn saved."""
    versions: dict[str, str] = {}
    header = ""
    for line in lock_text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            header = line.rstrip(":")
        elif line.startswith("  version "):
            for pattern in header.split(","):
                versions[pattern.strip().strip('"')] = line.split('"')[1]
    out = []
    for entry in dropped:
        patterns = [p.strip().strip('"') for p in entry.split(",")]
        new = sorted({versions[p] for p in patterns if p in versions})
        # Gone from the saved lockfile: only another dropped version wanted it.
        out.append(f"{', '.join(patterns)} -> {', '.join(new) or 'no longer needed'}")
    return out


# -- what a running Nomad serves -----------------------------------------------


class ServedUi(StrEnum):
    UI = "ui"
    NONE = "none"  # a binary built without the UI
    DISABLED = "disabled"  # a UI binary whose agent config turns it off
    UNKNOWN = "unknown"  # Nomad did not answer, or answered something else


def served_ui(nomad_addr: str, timeout: float = 3.0) -> ServedUi:
    """What the Nomad at ``nomad_addr`` serves at ``/ui/``.

    Asked of the running agent rather than read from the build record: a Nomad started before
    setup rebuilt the binary keeps running the old one until it is restarted. Both a UI-less
    Nomad and a UI one answer 200 there; the page tells them apart. No token is needed.
    """
    try:
        resp = httpx.get(nomad_addr.rstrip("/") + "/ui/", timeout=timeout, follow_redirects=True)
    except httpx.HTTPError:
        return ServedUi.UNKNOWN
    text = resp.text
    if STUB_TEXT.decode() in text:
        return ServedUi.NONE
    if DISABLED_TEXT in text:
        return ServedUi.DISABLED
    if resp.status_code == 200 and APP_MARKER in text:
        return ServedUi.UI
    return ServedUi.UNKNOWN


def ui_note(served: ServedUi) -> str:
    """One plain phrase for ``billowin status`` and the ``make up`` summary."""
    return {
        ServedUi.UI: "web UI at /ui/",
        ServedUi.NONE: "API only: this Nomad binary has no web UI (see `make setup`'s warning)",
        ServedUi.DISABLED: "API only: the web UI is turned off in Nomad's config",
        ServedUi.UNKNOWN: "web UI: unknown (Nomad did not answer /ui/)",
    }[served]
