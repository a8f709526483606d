"""Dependency images: an app's installed dependencies as an image of their own, reused by every
build whose dependency files have not changed.

A build whose language and manifests allow it runs in two steps: dependencies only (the
manifests alone, on the language base image) → ``billowin-deps/<app>:<key>``; then the source
on that image, with nothing to install. The key is a hash of everything the installed result
depends on: the language, the base image, the build script, the package mirrors and each
dependency file's name and bytes. Unchanged dependencies skip the install, and the app image's
new layer is the source alone, so its push is small too.

Which files make up each install (``packer/scripts/build-app.sh`` picks the package manager
by the same files, in the same order):

=======  ==================================================================================
python   the first of ``uv.lock`` (+ ``pyproject.toml``), ``poetry.lock`` (+ ``pyproject.toml``,
         ``poetry.toml``, the readme), ``Pipfile.lock`` (+ ``Pipfile``), ``requirements.txt``
node     ``package.json``, its lockfile (npm, yarn or pnpm), ``.npmrc``, ``.yarnrc``,
         ``.yarnrc.yml``, ``.pnpmfile.cjs``, ``.yarn/releases|plugins|patches``, pnpm's
         patched dependencies
ruby     ``Gemfile``, ``Gemfile.lock``, ``.ruby-version``, ``.bundle/config``
=======  ==================================================================================

Only what installs from those files alone is split. Anything that needs the source builds in
one step as before: a ``pyproject.toml`` installed with pip, a uv project that is itself a
package or a workspace, local or editable requirements and path dependencies (all managers),
npm install-time scripts of the app's own (``postinstall``, ``prepare``…, and Heroku's
``heroku-prebuild``), workspaces, Yarn's zero-install cache, a Gemfile without its lock or
with ``gemspec``/``path:`` gems, Go (which compiles the source), any dependency file that is a
symlink.

Node's build step (``heroku-postbuild`` or else ``build`` in package.json) needs the source,
so with one the dependency image holds the full install, devDependencies included; the app
step runs the build on it and then prunes the devDependencies. A code-only change therefore
reinstalls nothing: it rebuilds and prunes (both quick), and the image's new layer is the
source, the build output and the prune. Django's ``collectstatic`` and Ruby's
``rake assets:precompile`` run in the app step the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

# Lines of a requirements file that point at the source tree or at other files.
LOCAL_REQUIREMENTS = ("-e", "--editable", ".", "/", "file:", "-r", "--requirement", "-c", "--constraint")
# npm runs these of the app's own package.json during `npm ci`: they may need the source;
# Heroku runs heroku-prebuild before the install.
INSTALL_SCRIPTS = ("preinstall", "install", "postinstall", "prepare", "prepublish", "heroku-prebuild")
# The Python package manager: the first of these files found (build-app.sh, same order).
PYTHON_MANAGERS = ("uv.lock", "poetry.lock", "Pipfile.lock", "requirements.txt", "pyproject.toml", "Pipfile")
NODE_LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml")
NODE_CONFIG = (".npmrc", ".yarnrc", ".yarnrc.yml", ".pnpmfile.cjs")
# Yarn berry's own files an install reads: its release (yarnPath), plugins and patches.
YARN_DIRECTORIES = (".yarn/releases", ".yarn/plugins", ".yarn/patches")
# package.json dependency specifiers that point into the source tree.
LOCAL_SPECIFIERS = ("file:", "link:", "portal:", "workspace:", "patch:", "./", "../", "/", "~/")
NODE_DEPENDENCY_FIELDS = (
    "dependencies",
    "devDependencies",
    "optionalDependencies",
    "overrides",
    "resolutions",
)
REPOSITORY = "billowin-deps"


def dependency_files(src: Path, language: str) -> dict[str, bytes] | None:
    """The files the dependencies install from, by name (a relative POSIX path); ``None`` when
    they cannot be installed apart from the source (then the build runs in one step)."""
    if language == "python":
        return _python(src)
    if language == "node":
        return _node(src)
    if language == "ruby":
        return _ruby(src)
    return None


def python_manager(src: Path) -> str | None:
    """The file that picks the Python package manager, as build-app.sh picks it."""
    return next((name for name in PYTHON_MANAGERS if _present(src / name)), None)


def _python(src: Path) -> dict[str, bytes] | None:
    manager = python_manager(src)
    if manager == "requirements.txt":
        requirements = src / "requirements.txt"
        if requirements.is_symlink():
            return None
        text = requirements.read_text(errors="replace")
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry.startswith(LOCAL_REQUIREMENTS):
                return None
        return _existing(src, ("requirements.txt",))
    if manager == "uv.lock":
        project = _toml(src / "pyproject.toml")
        if project is None or _uv_needs_source(project):
            return None
        return _existing(src, ("pyproject.toml", "uv.lock"))
    if manager == "poetry.lock":
        project = _toml(src / "pyproject.toml")
        if project is None or _poetry_needs_source(project):
            return None
        readmes = _poetry_readmes(project)
        if readmes is None:
            return None
        return _existing(src, ("pyproject.toml", "poetry.lock", "poetry.toml", *readmes))
    if manager == "Pipfile.lock":
        if _pipfile_lock_needs_source(src / "Pipfile.lock"):
            return None
        return _existing(src, ("Pipfile", "Pipfile.lock"))
    if manager == "Pipfile":
        return _existing(src, ("Pipfile",))  # the build stops there: it asks for Pipfile.lock
    return None  # a pyproject.toml installed with pip installs the project: it needs the source


def _uv_needs_source(project: dict[str, Any]) -> bool:
    """A uv project that is itself a package (installed from the source), a workspace (its
    members' pyproject files), or with path sources."""
    uv = _table(_table(project.get("tool")).get("uv"))
    package = uv.get("package")
    if package is None:
        package = "build-system" in project
    if package or "workspace" in uv:
        return True
    for source in _table(uv.get("sources")).values():
        entries = source if isinstance(source, list) else [source]
        if any(isinstance(entry, dict) and ("path" in entry or "workspace" in entry) for entry in entries):
            return True
    return False


def _poetry_needs_source(project: dict[str, Any]) -> bool:
    """Path dependencies (Poetry's own tables or PEP 621 ``file:`` references)."""
    poetry = _table(_table(project.get("tool")).get("poetry"))
    tables = [_table(poetry.get("dependencies"))]
    tables += [_table(_table(group).get("dependencies")) for group in _table(poetry.get("group")).values()]
    for table in tables:
        for spec in table.values():
            entries = spec if isinstance(spec, list) else [spec]
            if any(isinstance(entry, dict) and "path" in entry for entry in entries):
                return True
    listed = _table(project.get("project")).get("dependencies") or []
    return any(isinstance(line, str) and "file:" in line for line in listed)


def _poetry_readmes(project: dict[str, Any]) -> list[str] | None:
    """The readme files pyproject.toml names (Poetry reads them to load the project)."""
    names: list[str] = []
    for readme in (
        _table(_table(project.get("tool")).get("poetry")).get("readme"),
        _table(project.get("project")).get("readme"),
    ):
        if isinstance(readme, dict):
            readme = readme.get("file")
        for name in readme if isinstance(readme, list) else [readme]:
            if isinstance(name, str):
                if not _relative(name):
                    return None
                names.append(name)
    return names


def _pipfile_lock_needs_source(lock: Path) -> bool:
    if lock.is_symlink():
        return True
    try:
        data = json.loads(lock.read_bytes())
    except (OSError, ValueError):
        return True  # pipenv will say what is wrong with it, in a one-step build
    default = data.get("default") if isinstance(data, dict) else None
    if not isinstance(default, dict):
        return True
    return any(isinstance(entry, dict) and ("path" in entry or "file" in entry) for entry in default.values())


def _node(src: Path) -> dict[str, bytes] | None:
    package_file = src / "package.json"
    if not package_file.is_file() or package_file.is_symlink():
        return None
    try:
        package = json.loads(package_file.read_bytes())
    except ValueError:
        return None  # npm will say what is wrong with it, in a one-step build
    if not isinstance(package, dict):
        return None
    scripts = package.get("scripts") or {}
    if not isinstance(scripts, dict) or any(name in scripts for name in INSTALL_SCRIPTS):
        return None
    if "workspaces" in package or _present(src / "pnpm-workspace.yaml") or (src / ".yarn" / "cache").exists():
        return None
    pnpm = _table(package.get("pnpm"))
    specs = [spec for field in NODE_DEPENDENCY_FIELDS for spec in _strings(package.get(field))]
    specs += _strings(pnpm.get("overrides"))
    if any(spec.startswith(LOCAL_SPECIFIERS) or "patch:" in spec for spec in specs):
        return None
    patches = list(_strings(pnpm.get("patchedDependencies")))
    if not all(_relative(name) for name in patches):
        return None
    yarn = _tree(src, YARN_DIRECTORIES) if (src / ".yarnrc.yml").is_file() else []
    if yarn is None:
        return None
    return _existing(src, ("package.json", *NODE_LOCKFILES, *NODE_CONFIG, *patches, *yarn))


def _ruby(src: Path) -> dict[str, bytes] | None:
    gemfile, lock = src / "Gemfile", src / "Gemfile.lock"
    if not (gemfile.is_file() and lock.is_file()) or gemfile.is_symlink() or lock.is_symlink():
        return None  # without a lock, Bundler resolves afresh: one step
    text = gemfile.read_text(errors="replace")
    if re.search(r"^\s*(gemspec|eval_gemfile)\b|\bpath\s*(:|=>)|^\s*path\b", text, re.MULTILINE):
        return None  # gems from the source tree
    if re.search(r"^PATH$", lock.read_text(errors="replace"), re.MULTILINE):
        return None
    return _existing(src, ("Gemfile", "Gemfile.lock", ".ruby-version", ".bundle/config"))


def _existing(src: Path, names: Iterable[str]) -> dict[str, bytes] | None:
    """The named files that exist, by name; ``None`` if one is a symlink (its target may lie
    outside the source: the one-step build copies it as a link, never what it points at)."""
    found: dict[str, bytes] = {}
    for name in names:
        path = src / name
        if any((src / parent).is_symlink() for parent in PurePosixPath(name).parents if str(parent) != "."):
            return None
        if path.is_symlink():
            return None
        if path.is_file():
            found[name] = path.read_bytes()
    return found


def _tree(src: Path, directories: Iterable[str]) -> list[str] | None:
    """Every file under ``directories`` (relative names); ``None`` when one is a symlink."""
    names: list[str] = []
    for directory in directories:
        top = src / directory
        if top.is_symlink() or any((src / p).is_symlink() for p in PurePosixPath(directory).parents):
            return None
        if not top.is_dir():
            continue
        for root, dirs, files in os.walk(top):  # never into a symlinked directory
            for name in [*dirs, *files]:
                path = Path(root, name)
                if path.is_symlink():
                    return None
                if name in files and path.is_file():
                    names.append(path.relative_to(src).as_posix())
    return sorted(names)


def _present(path: Path) -> bool:
    return path.is_file() or path.is_symlink()


def _relative(name: str) -> bool:
    """A path that stays inside the source tree."""
    parts = PurePosixPath(name).parts
    return bool(parts) and not name.startswith(("/", "\\")) and ".." not in parts and "\\" not in name


def _toml(path: Path) -> dict[str, Any] | None:
    if not path.is_file() or path.is_symlink():
        return None
    try:
        return tomllib.loads(path.read_text(errors="replace"))
    except tomllib.TOMLDecodeError:
        return None  # the package manager will say what is wrong with it, in a one-step build


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: object) -> Iterator[str]:
    """Every string value in a (nested) JSON object."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def dependency_key(files: dict[str, bytes], *, language: str, base_image: str, extra: list[str]) -> str:
    """A hash of everything the installed dependencies depend on (``extra``: the build script,
    the package mirrors)."""
    digest = hashlib.sha256()
    for part in (language, base_image, *extra):
        digest.update(part.encode() + b"\0")
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()[:32]


def write_dependency_files(files: dict[str, bytes], directory: Path) -> Path:
    """The dependency files alone, in ``directory``: the source of the dependencies step."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if not _relative(name):
            raise ValueError(f"a dependency file outside the source tree: {name!r}")
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return directory
