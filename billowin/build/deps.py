"""Dependency images: an app's installed dependencies as an image of their own, reused by every
build whose dependency files have not changed.

A build whose language and manifests allow it runs in two steps: dependencies only (the
manifests alone, on the language base image) → ``billowin-deps/<app>:<key>``; then the source
on that image, with nothing to install. The key is a hash of everything the installed result
depends on: the language, the base image, the build script, the package mirrors and each
dependency file's name and bytes. Unchanged dependencies skip the install, and the app image's
new layer is the source alone, so its push is small too.

Only what installs from the manifests alone is split: Python's ``requirements.txt`` without
local or editable entries and ``Pipfile``/``Pipfile.lock``; Node's ``package.json`` (with its
lockfile and ``.npmrc``) without install-time scripts of its own. Anything else (a
``pyproject.toml`` project, ``-e .``, a ``postinstall`` script, Go, which compiles the source,
and Ruby, whose gems install fast from the base image) builds in one step as before.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Lines of a requirements file that point at the source tree or at other files.
LOCAL_REQUIREMENTS = ("-e", "--editable", ".", "/", "file:", "-r", "--requirement", "-c", "--constraint")
# npm runs these of the app's own package.json during `npm ci`: they may need the source.
INSTALL_SCRIPTS = ("preinstall", "install", "postinstall", "prepare", "prepublish")
REPOSITORY = "billowin-deps"


def dependency_files(src: Path, language: str) -> dict[str, bytes] | None:
    """The files the dependencies install from, by name; ``None`` when they cannot be installed
    apart from the source (then the build runs in one step)."""
    if language == "python":
        return _python(src)
    if language == "node":
        return _node(src)
    return None


def _python(src: Path) -> dict[str, bytes] | None:
    requirements = src / "requirements.txt"
    if requirements.is_file():
        text = requirements.read_text(errors="replace")
        for line in text.splitlines():
            entry = line.split("#", 1)[0].strip()
            if entry.startswith(LOCAL_REQUIREMENTS):
                return None
        return {"requirements.txt": requirements.read_bytes()}
    if (src / "pyproject.toml").is_file():
        return None  # installs the project itself: it needs the source
    pipfile = src / "Pipfile"
    if pipfile.is_file():
        return _existing(src, ("Pipfile", "Pipfile.lock"))
    return None


def _node(src: Path) -> dict[str, bytes] | None:
    package = src / "package.json"
    if not package.is_file():
        return None
    try:
        scripts = json.loads(package.read_bytes()).get("scripts") or {}
    except (ValueError, AttributeError):
        return None  # npm will say what is wrong with it, in a one-step build
    if not isinstance(scripts, dict) or any(name in scripts for name in INSTALL_SCRIPTS):
        return None
    return _existing(src, ("package.json", "package-lock.json", "npm-shrinkwrap.json", ".npmrc"))


def _existing(src: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {name: (src / name).read_bytes() for name in names if (src / name).is_file()}


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
        (directory / name).write_bytes(data)
    return directory
