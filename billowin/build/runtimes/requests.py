"""Which runtime version an app asks for, read from the files Heroku's buildpacks read.

Each language looks in its files in the buildpack's order; the first one found wins:

======  ==========================================================================
python  ``.python-version``, ``runtime.txt``, ``requires-python`` in ``pyproject.toml``
node    ``engines.node`` in ``package.json``, ``.nvmrc``, ``.node-version``
go      ``go.mod``: its ``toolchain`` line, else its ``go`` line
ruby    ``ruby`` in ``Gemfile``, ``RUBY VERSION`` in ``Gemfile.lock``, ``.ruby-version``
======  ==========================================================================

This module only reads and checks what was written (a file that says something
unreadable is refused here, naming the file); :mod:`.resolve` matches it
against the versions the runtime providers offer.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import semantic_version  # type: ignore[import-untyped]
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from billowin.errors import InvalidInput

GO_TOOLCHAIN = "go.mod (toolchain)"  # exactly this version
GO_DIRECTIVE = "go.mod (go)"  # this version or newer (Go >= 1.21 semantics)

# Node's LTS codenames, as `.nvmrc` writes them (`lts/iron`).
NODE_CODENAMES = {
    "argon": 4,
    "boron": 6,
    "carbon": 8,
    "dubnium": 10,
    "erbium": 12,
    "fermium": 14,
    "gallium": 16,
    "hydrogen": 18,
    "iron": 20,
    "jod": 22,
    "krypton": 24,
}

# What a valid line looks like in each file, for hints; {major}, {minor}, {patch} come from a version.
_EXAMPLES = {
    ".python-version": "{minor}",
    "runtime.txt": "python-{patch}",
    "pyproject.toml (requires-python)": 'requires-python = ">={minor}"',
    "package.json (engines.node)": '"engines": {{"node": "{major}.x"}}',
    ".nvmrc": "{major}",
    ".node-version": "{major}",
    GO_TOOLCHAIN: "toolchain go{patch}",
    GO_DIRECTIVE: "go {patch}",
    "Gemfile": 'ruby "~> {minor}"',
    "Gemfile.lock": "ruby {patch}",
    ".ruby-version": "{patch}",
}
_SAMPLE = {"python": "3.14.2", "node": "22.21.1", "go": "1.25.0", "ruby": "3.3.8"}

_NUMERIC = re.compile(r"\d+(?:\.\d+){0,2}")
_GO_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:(?:rc|beta)\d+)?")
RUBY_CONSTRAINT = re.compile(r"\s*(=|!=|>=|<=|>|<|~>)?\s*(\d+(?:\.\d+)*)\s*")
_RUBY_DIRECTIVE = re.compile(r"^[ \t]*ruby[ \t(]+(.*)$", re.MULTILINE)
_RUBY_STRING = re.compile(r"""\s*(["'])(.*?)\1\s*(?:,|\)|(?=#)|$)""")
_LOCK_RUBY = re.compile(r"^RUBY VERSION[ \t]*\n[ \t]+ruby[ \t]+(\S+)", re.MULTILINE)
_NPM_OPERATOR_SPACE = re.compile(r"(<=|>=|<|>|=|~|\^)\s+")


@dataclass(frozen=True)
class RuntimeRequest:
    language: str  # python | node | go | ruby
    requirement: str  # as the user wrote it, stripped: "3.14", ">=3.12", "^20.10", "1.25.0", "~> 3.3"
    source: str  # where it came from, for messages: ".python-version", "go.mod (toolchain)", ...
    kind: str  # how to match it: "exact-or-prefix" | "pep440" | "npm" | "go" | "ruby"


def example(source: str, version: str) -> str:
    """A valid line for ``source`` asking for (about) ``version``, e.g. ``python-3.14.2``."""
    v = Version(version)
    major, minor, patch = (*v.release, 0, 0)[:3]
    return _EXAMPLES[source].format(major=major, minor=f"{major}.{minor}", patch=f"{major}.{minor}.{patch}")


def npm_spec(requirement: str) -> semantic_version.NpmSpec:
    """The npm range, allowing a space after an operator (``>= 18``) as npm itself does."""
    return semantic_version.NpmSpec(_NPM_OPERATOR_SPACE.sub(r"\1", requirement))


def read_request(src: Path, language: str) -> RuntimeRequest | None:
    """The runtime version the app at ``src`` asks for, or None if it names none."""
    readers = {"python": _python, "node": _node, "go": _go, "ruby": _ruby}
    return readers[language](src)


def _refuse(source: str, found: str, what: str, language: str) -> InvalidInput:
    file = source.split(" (")[0]
    return InvalidInput(
        f"{source} says {found!r}, which is not {what}",
        hint=f"A valid line in {file} looks like `{example(source, _SAMPLE[language])}`.",
    )


def _parsed(path: Path) -> Any:
    """A ``pyproject.toml`` or ``package.json``, parsed; invalid syntax is the user's to fix."""
    syntax = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        return tomllib.loads(path.read_text()) if syntax == "TOML" else json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(
            f"{path.name} is not valid {syntax}: {exc}", hint=f"Fix the {syntax} syntax in {path.name}."
        ) from exc


def _first_line(path: Path) -> str | None:
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            return line
    return None


def _python(src: Path) -> RuntimeRequest | None:
    path = src / ".python-version"
    if path.is_file() and (line := _first_line(path)):
        if re.fullmatch(r"\d+(?:\.\d+){0,2}t", line):
            raise InvalidInput(
                f".python-version asks for the free-threaded build {line!r}, which Billowin does not offer",
                hint=f"Ask for the standard build instead: `{line[:-1]}` in .python-version.",
            )
        if not _NUMERIC.fullmatch(line):
            raise _refuse(".python-version", line, "a Python version", "python")
        return RuntimeRequest("python", line, ".python-version", "exact-or-prefix")
    path = src / "runtime.txt"
    if path.is_file() and (text := path.read_text().strip()):
        match = re.fullmatch(r"python-(\d+\.\d+(?:\.\d+)?)", text)
        if not match:
            raise _refuse("runtime.txt", text, "`python-` and a Python version", "python")
        return RuntimeRequest("python", match.group(1), "runtime.txt", "exact-or-prefix")
    path = src / "pyproject.toml"
    if path.is_file():
        source = "pyproject.toml (requires-python)"
        data = _parsed(path)
        project = data.get("project")
        wanted = project.get("requires-python") if isinstance(project, dict) else None
        if wanted is None:
            return None
        try:
            SpecifierSet(str(wanted))
        except InvalidSpecifier:
            raise _refuse(source, str(wanted), "a PEP 440 version specifier", "python") from None
        return RuntimeRequest("python", str(wanted).strip(), source, "pep440")
    return None


def _node(src: Path) -> RuntimeRequest | None:
    path = src / "package.json"
    if path.is_file():
        source = "package.json (engines.node)"
        data = _parsed(path)
        engines = data.get("engines") if isinstance(data, dict) else None
        wanted = engines.get("node") if isinstance(engines, dict) else None
        if wanted is not None:
            if not isinstance(wanted, str):
                raise _refuse(source, json.dumps(wanted), "an npm version range", "node")
            try:
                npm_spec(wanted.strip())
            except ValueError:
                raise _refuse(source, wanted, "an npm version range", "node") from None
            return RuntimeRequest("node", wanted.strip(), source, "npm")
    for name in (".nvmrc", ".node-version"):
        path = src / name
        if path.is_file() and (line := _first_line(path)):
            wanted = line.removeprefix("v")
            if wanted.lower().startswith("lts/"):
                wanted = wanted.lower()
                if wanted != "lts/*" and wanted[4:] not in NODE_CODENAMES:
                    raise _refuse(name, line, "`lts/*` or a Node LTS codename such as `lts/iron`", "node")
            elif wanted != "node":
                try:
                    npm_spec(wanted)
                except ValueError:
                    raise _refuse(name, line, "a Node version", "node") from None
            return RuntimeRequest("node", wanted, name, "npm")
    return None


def _go(src: Path) -> RuntimeRequest | None:
    path = src / "go.mod"
    if not path.is_file():
        return None
    lines: dict[str, str] = {}  # directive -> its first value
    for raw in path.read_text().splitlines():
        words = raw.split("//")[0].split()
        if len(words) == 2 and words[0] in ("go", "toolchain"):
            lines.setdefault(words[0], words[1])
    if "toolchain" in lines:
        found = lines["toolchain"]
        if not (found.startswith("go") and _GO_VERSION.fullmatch(found[2:])):
            raise _refuse(GO_TOOLCHAIN, found, "a Go toolchain name", "go")
        return RuntimeRequest("go", found[2:], GO_TOOLCHAIN, "go")
    if "go" in lines:
        found = lines["go"]
        if not _GO_VERSION.fullmatch(found):
            raise _refuse(GO_DIRECTIVE, found, "a Go version", "go")
        return RuntimeRequest("go", found, GO_DIRECTIVE, "go")
    return None


def _ruby(src: Path) -> RuntimeRequest | None:
    gemfile = src / "Gemfile"
    if gemfile.is_file() and (directive := _RUBY_DIRECTIVE.search(gemfile.read_text())):
        # Only string literals count; `ruby file: ".ruby-version"` and the like fall through to
        # Gemfile.lock and .ruby-version, which say the same thing.
        args, pos, literals = directive.group(1), 0, []
        while match := _RUBY_STRING.match(args, pos):
            literals.append(match.group(2))
            pos = match.end()
        if literals:
            wanted = ", ".join(part.strip() for part in literals)
            if not all(RUBY_CONSTRAINT.fullmatch(part) for part in wanted.split(",")):
                raise _refuse("Gemfile", wanted, "a Ruby version requirement", "ruby")
            return RuntimeRequest("ruby", wanted, "Gemfile", "ruby")
    lock = src / "Gemfile.lock"
    if lock.is_file() and (section := _LOCK_RUBY.search(lock.read_text())):
        match = re.fullmatch(r"(\d+\.\d+\.\d+)(?:p\d+)?", section.group(1))
        if not match:
            raise InvalidInput(
                f"Gemfile.lock's RUBY VERSION says {section.group(1)!r}, which is not a Ruby version",
                hint="It looks like `ruby 3.3.8p100`; run `bundle update --ruby` to rewrite it.",
            )
        return RuntimeRequest("ruby", match.group(1), "Gemfile.lock", "ruby")
    path = src / ".ruby-version"
    if path.is_file() and (line := _first_line(path)):
        wanted = line.removeprefix("ruby-")
        if not _NUMERIC.fullmatch(wanted):
            raise _refuse(".ruby-version", line, "a Ruby version", "ruby")
        return RuntimeRequest("ruby", wanted, ".ruby-version", "exact-or-prefix")
    return None
