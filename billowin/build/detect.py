"""What kind of app is this, and how is it run? (Like a Heroku buildpack's detect step.)

Languages, by the file that gives each away:

=========  =================================================
ruby       ``Gemfile``
go         ``go.mod``
python     ``requirements.txt``, ``pyproject.toml`` or ``Pipfile``
node       ``package.json``
=========  =================================================

Process types come from the ``Procfile``; without one, each language has a
sensible ``web`` default. ``billowin.toml`` (``language = "..."`` and a
``[processes]`` table) or ``app.json`` (``"billowin": {"language": ...}``)
override the detection. ``app.json`` is read here, once, for the deploy too
(``build/appjson.py``: formation, predeploy/postdeploy scripts, healthchecks).

An app with its own ``Dockerfile`` at the root (or the one ``billowin.toml`` names:
``dockerfile = "docker/web.Dockerfile"``, inside the tree) is built with it
(``build/dockerfile.py``): ``builder = "dockerfile"``, language ``docker``, whatever
marker files it also has, unless ``billowin.toml`` says ``builder = "packer"``. Its
Procfile still names the process types; without a ``web`` line, ``web`` runs the
image's own ``CMD``/``ENTRYPOINT`` (an empty command, ``IMAGE_COMMAND``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billowin.build import appjson
from billowin.build.appjson import AppManifest
from billowin.build.dockerfile import DEFAULT_DOCKERFILE, dockerfile_path
from billowin.errors import InvalidInput

MARKERS: dict[str, tuple[str, ...]] = {
    "ruby": ("Gemfile",),
    "go": ("go.mod",),
    "python": ("requirements.txt", "pyproject.toml", "Pipfile"),
    "node": ("package.json",),
}
LANGUAGES = tuple(MARKERS)
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
BUILDERS = ("packer", "dockerfile")
IMAGE_COMMAND = ""  # a process that runs the image's own CMD/ENTRYPOINT (Dockerfile apps)


@dataclass(frozen=True)
class AppSpec:
    language: str
    processes: dict[str, str] = field(default_factory=dict)  # process type -> shell command
    builder: str = "packer"  # which ImageRecipe builds it (ports.py): packer | dockerfile
    dockerfile: str | None = None  # builder "dockerfile": its path in the tree, checked
    manifest: AppManifest | None = None  # app.json's keys Billowin honours, if it has one

    @property
    def web_command(self) -> str | None:
        return self.processes.get("web") or None  # None also for the image's own CMD


def parse_procfile(text: str) -> dict[str, str]:
    processes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PROCFILE_LINE.match(line)
        if not match:
            raise InvalidInput(
                f"Procfile line {number} is not `<type>: <command>`: {line!r}",
                hint="Each Procfile line is a process type, a colon and a command: `web: gunicorn app:app`.",
            )
        name = match.group(1).lower().replace("_", "-")
        processes[name] = match.group(2).strip()
    return processes


def default_web(language: str, src: Path) -> str | None:
    if language == "node":
        return "npm start"
    if language == "go":
        return "/app/bin/web"
    if language == "ruby" and (src / "config.ru").exists():
        return "bundle exec rackup config.ru -o 0.0.0.0 -p $PORT"
    if language == "python":
        for entry in ("app.py", "main.py", "server.py"):
            if (src / entry).exists():
                return f"python3 {entry}"
    return None


def _billowin_toml(src: Path) -> dict[str, Any] | None:
    toml_path = src / "billowin.toml"
    if not toml_path.is_file():
        return None
    try:
        return tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"billowin.toml is not valid TOML: {exc}") from exc


def _app_json(src: Path) -> AppManifest | None:
    path = src / "app.json"
    if not path.is_file():
        return None
    if not path.resolve().is_relative_to(src.resolve()):
        raise InvalidInput("app.json is a link to outside the repository", hint="Commit app.json itself.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("app.json is not UTF-8 text", hint="Save app.json as UTF-8.") from exc
    return appjson.parse(text)


def _overrides(src: Path, manifest: AppManifest | None) -> tuple[str | None, dict[str, str]]:
    language: str | None = None
    processes: dict[str, str] = {}
    data = _billowin_toml(src)
    if data is not None:
        language = data.get("language")
        processes = {str(k): str(v) for k, v in (data.get("processes") or {}).items()}
    if language is None and manifest is not None:
        language = manifest.language
    if language is not None and language not in LANGUAGES:
        raise InvalidInput(f"unsupported language {language!r}; Billowin builds {', '.join(LANGUAGES)}")
    return language, processes


def _dockerfile(src: Path) -> str | None:
    """The Dockerfile this app is built with (its checked path in the tree), or None when it is
    built by Packer: no Dockerfile, or ``builder = "packer"`` in billowin.toml."""
    data = _billowin_toml(src) or {}
    builder = data.get("builder")
    if builder is not None and builder not in BUILDERS:
        raise InvalidInput(
            f"billowin.toml: builder = {builder!r} is not one Billowin has",
            hint='Say builder = "dockerfile" (the app\'s own Dockerfile) or "packer" (a language image).',
        )
    if builder == "packer":
        return None
    named = data.get("dockerfile")
    if named is not None and not isinstance(named, str):
        raise InvalidInput(
            "billowin.toml: dockerfile must be a path, as a string",
            hint='Name it relative to the repository\'s root: dockerfile = "docker/web.Dockerfile".',
        )
    root = src / DEFAULT_DOCKERFILE
    if named is None and not (root.is_file() or root.is_symlink()):
        if builder == "dockerfile":
            raise InvalidInput(
                'billowin.toml says builder = "dockerfile", but the repository has no Dockerfile',
                hint='Commit a Dockerfile at its root, or name yours: dockerfile = "path".',
            )
        return None
    name = named if named is not None else DEFAULT_DOCKERFILE
    dockerfile_path(src, name)  # inside the tree, a file: else InvalidInput, before any build
    return name


def detect(src: Path) -> AppSpec:
    """Detect the language and process types of the source tree at ``src``, and read its app.json."""
    manifest = _app_json(src)
    dockerfile = _dockerfile(src)
    if dockerfile is not None:
        table = (_billowin_toml(src) or {}).get("processes") or {}
        processes = {str(k): str(v) for k, v in table.items()}
        procfile = src / "Procfile"
        if procfile.is_file():
            processes = {**parse_procfile(procfile.read_text()), **processes}
        processes = {"web": IMAGE_COMMAND, **processes}  # a Procfile's web line wins
        if manifest is not None:
            manifest.check_processes(processes)
        return AppSpec(
            language="docker",
            processes=processes,
            builder="dockerfile",
            dockerfile=dockerfile,
            manifest=manifest,
        )
    language, processes = _overrides(src, manifest)
    if language is None:
        found = [lang for lang, files in MARKERS.items() if any((src / f).is_file() for f in files)]
        if not found:
            looked_for = "; ".join(f"{lang}: {', '.join(files)}" for lang, files in MARKERS.items())
            raise InvalidInput(
                "cannot tell what kind of app this is: found none of the files "
                f"Billowin looks for ({looked_for})",
                hint='Add the file your language uses, or say it in billowin.toml: language = "python".',
            )
        language = found[0]
    procfile = src / "Procfile"
    if procfile.is_file():
        processes = {**parse_procfile(procfile.read_text()), **processes}
    if "web" not in processes:
        default = default_web(language, src)
        if default:
            processes = {"web": default, **processes}
    if not processes:
        raise InvalidInput(
            f"this {language} app has no Procfile and no default way to start it",
            hint="Add a Procfile with a `web:` line, e.g. `web: gunicorn --bind 0.0.0.0:$PORT app:app`.",
        )
    if manifest is not None:
        manifest.check_processes(processes)
    return AppSpec(language=language, processes=processes, manifest=manifest)
