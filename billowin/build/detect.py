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
override the detection.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from billowin.errors import InvalidInput

MARKERS: dict[str, tuple[str, ...]] = {
    "ruby": ("Gemfile",),
    "go": ("go.mod",),
    "python": ("requirements.txt", "pyproject.toml", "Pipfile"),
    "node": ("package.json",),
}
LANGUAGES = tuple(MARKERS)
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


@dataclass(frozen=True)
class AppSpec:
    language: str
    processes: dict[str, str] = field(default_factory=dict)  # process type -> shell command

    @property
    def web_command(self) -> str | None:
        return self.processes.get("web")


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


def _overrides(src: Path) -> tuple[str | None, dict[str, str]]:
    language: str | None = None
    processes: dict[str, str] = {}
    toml_path = src / "billowin.toml"
    if toml_path.is_file():
        try:
            data = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"billowin.toml is not valid TOML: {exc}") from exc
        language = data.get("language")
        processes = {str(k): str(v) for k, v in (data.get("processes") or {}).items()}
    app_json = src / "app.json"
    if language is None and app_json.is_file():
        try:
            data = json.loads(app_json.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"app.json is not valid JSON: {exc}") from exc
        language = (data.get("billowin") or {}).get("language")
    if language is not None and language not in LANGUAGES:
        raise InvalidInput(f"unsupported language {language!r}; Billowin builds {', '.join(LANGUAGES)}")
    return language, processes


def detect(src: Path) -> AppSpec:
    """Detect the language and process types of the source tree at ``src``."""
    language, processes = _overrides(src)
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
    return AppSpec(language=language, processes=processes)
