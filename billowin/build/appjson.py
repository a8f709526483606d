"""``app.json``: the keys Heroku and Dokku users already have, read and checked once, where the
source tree comes in (``detect``), and carried on the build record to the deploy.

What Billowin honours:

=============================  ==================================================================
``formation``                  ``{"web": {"quantity": 2}}``: the initial scale, on the app's first
                               deploy only; later deploys keep the current scale, so a
                               ``billowin scale`` wins (Heroku's reading: Dokku reapplies it on
                               every deploy and refuses ``ps:scale``).
``scripts.dokku.predeploy``    after the build, before the release goes out, in a one-off of the
                               new image and config, then the Procfile ``release`` phase (Dokku's
                               order). If it fails, nothing is rolled out. Unlike Dokku, what it
                               changes in the container's files is not kept in the image.
``scripts.dokku.postdeploy``   once the release is live, in a one-off. If it fails, the job fails
                               with its output; the release stays live (as on Dokku).
``scripts.postdeploy``         Heroku's: the same, on the app's first successful deploy only
                               (Dokku runs it before that deploy goes out).
``healthchecks.web``           Dokku's format: the web process's HTTP check: ``path``,
                               ``timeout``, ``wait`` (the interval), ``attempts`` (failed checks
                               in a row that restart an instance) and ``initialDelay``.
``billowin.language``          overrides the language detection.
=============================  ==================================================================

Every other key is allowed (``name``, ``env``, ``addons``, ``buildpacks``…), but a key Billowin
honours with a wrong type or an out-of-range value is ``InvalidInput`` naming its path. What is
understood but not applied (a dyno ``size``, a check's ``content``, ``env``…) becomes a warning
in ``AppManifest.warnings``, which the builder writes to the build log.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from billowin.errors import InvalidInput
from billowin.names import is_process_name
from billowin.release.deploy import DeployTask
from billowin.release.jobspec import HEALTH_PATH
from billowin.release.oneoff import MAX_COMMAND

HINT = (
    "Fix app.json and push again. Billowin reads formation, scripts (dokku.predeploy, "
    "dokku.postdeploy, postdeploy), healthchecks and billowin.language; other keys are ignored."
)
FIRST_DEPLOY_ONLY = "run it by hand with `billowin run` (it runs on an app's first deploy only)"
HONOURED = ("formation", "scripts", "healthchecks", "billowin")
CHECK_TYPES = ("startup", "readiness", "liveness")
# Top-level keys with a meaning Billowin does not provide: said once each, in the build log.
NOT_APPLIED = {
    "env": "set config vars with `billowin config:set`",
    "addons": "Billowin provisions no add-ons",
    "buildpacks": "Billowin picks the build from the repository's files",
    "stack": "Billowin picks the build from the repository's files",
    "image": "Billowin picks the build from the repository's files",
    "environments": "Billowin has no review or test environments",
    "cron": "Billowin runs no scheduled commands",
}
CHECK_KEYS_NOT_APPLIED = {
    "content": "Consul's HTTP check passes on any 2xx answer, whatever its body",
    "port": "the check goes to the port Nomad gives the web process ($PORT)",
}


def _path(value: str) -> str:
    if not HEALTH_PATH.fullmatch(value):
        raise ValueError("should start with '/' and hold only letters, digits and . _ ~ / -")
    return value


def _command(value: str) -> str:
    if "\x00" in value:
        raise ValueError("should not contain a NUL byte")
    return value


Command = Annotated[StrictStr, Field(max_length=MAX_COMMAND), AfterValidator(_command)]
Seconds = Annotated[StrictInt, Field(ge=1, le=600)]
Delay = Annotated[StrictInt, Field(ge=0, le=600)]
Attempts = Annotated[StrictInt, Field(ge=1, le=100)]


class Section(BaseModel):
    """An object in app.json: the keys Billowin reads are checked, any other is kept (to warn about)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def others(self) -> list[str]:
        return list(self.model_extra or {})


class Formation(Section):
    quantity: Annotated[StrictInt, Field(ge=0, le=100)] | None = None


class DokkuScripts(Section):
    predeploy: Command | None = None
    postdeploy: Command | None = None


class Scripts(Section):
    dokku: DokkuScripts = Field(default_factory=DokkuScripts)
    postdeploy: Command | None = None  # Heroku's: once, after the app's first deploy


class HealthCheck(Section):
    """One of Dokku's checks; Billowin renders one HTTP check for web, from the first with a path."""

    type: StrictStr | None = None
    name: StrictStr | None = None
    path: Annotated[StrictStr, AfterValidator(_path)] | None = None
    timeout: Seconds | None = None
    attempts: Attempts | None = None
    wait: Seconds | None = None
    initial_delay: Delay | None = Field(None, alias="initialDelay")


class BillowinKeys(Section):
    language: StrictStr | None = None


class AppManifest(BaseModel):
    """The parts of app.json Billowin honours (see the module); other keys are dropped."""

    formation: dict[str, Formation] = Field(default_factory=dict)
    scripts: Scripts = Field(default_factory=Scripts)
    healthchecks: dict[str, list[HealthCheck]] = Field(default_factory=dict)
    billowin: BillowinKeys = Field(default_factory=BillowinKeys)
    # For the build log; not carried further (the build record leaves them out).
    warnings: list[str] = Field(default_factory=list, exclude=True)

    @property
    def language(self) -> str | None:
        return self.billowin.language

    def initial_scale(self) -> dict[str, int]:
        """``formation``'s quantities by process type (named as the Procfile's are): a first deploy's."""
        return {
            _process_name(name): entry.quantity
            for name, entry in self.formation.items()
            if entry.quantity is not None and is_process_name(_process_name(name))
        }

    @property
    def web_check(self) -> HealthCheck | None:
        return next((c for c in self.healthchecks.get("web", []) if c.path is not None), None)

    def web_check_settings(self) -> dict[str, Any]:
        """The web ``Process``'s check fields (``release/jobspec.py``) that app.json sets."""
        check = self.web_check
        if check is None:
            return {}
        fields = {
            "health_path": check.path,
            "health_timeout": check.timeout,
            "health_interval": check.wait,
            "health_restart_after": check.attempts,
            "health_grace": check.initial_delay,
        }
        return {name: value for name, value in fields.items() if value is not None}

    def predeploy(self) -> list[DeployTask]:
        """What runs before the release goes out (ahead of the Procfile ``release`` phase)."""
        return _task("predeploy", self.scripts.dokku.predeploy, "app.json scripts.dokku.predeploy")

    def postdeploy(self, *, first_deploy: bool) -> list[DeployTask]:
        """What runs once the release is live: Heroku's postdeploy on a first deploy, then Dokku's."""
        heroku = self.scripts.postdeploy if first_deploy else None
        return [
            *_task("postdeploy", heroku, "app.json scripts.postdeploy", again=FIRST_DEPLOY_ONLY),
            *_task("postdeploy", self.scripts.dokku.postdeploy, "app.json scripts.dokku.postdeploy"),
        ]

    def check_processes(self, processes: dict[str, str]) -> None:
        """Warn about what names a process type the app does not have."""
        for name in self.formation:
            known = _process_name(name)
            if known == "release":
                self.warnings.append(f"formation.{name}: the release phase is no process type; ignored")
            elif processes and known not in processes:
                have = ", ".join(p for p in processes if p != "release")
                self.warnings.append(
                    f"formation.{name}: the app has no {known} process type ({have}); ignored"
                )
        if self.web_check is not None and processes and "web" not in processes:
            self.warnings.append("healthchecks.web: the app has no web process type; ignored")


def _task(name: str, command: str | None, source: str, again: str = "deploy again") -> list[DeployTask]:
    """The script as a deploy task; none when it is missing or blank (as Dokku skips it)."""
    return [DeployTask(name, command, source, again)] if command and command.strip() else []


def _process_name(name: str) -> str:
    return name.lower().replace("_", "-")  # as the Procfile's types are read (detect.parse_procfile)


def parse(text: str) -> AppManifest:
    """app.json's text, checked; ``InvalidInput`` names the key of every problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"app.json is not valid JSON: {exc}", hint=HINT) from exc
    if not isinstance(data, dict):
        raise InvalidInput("app.json should hold a JSON object ({...})", hint=HINT)
    try:
        manifest = AppManifest.model_validate({k: v for k, v in data.items() if k in HONOURED})
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors()]
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise InvalidInput("app.json " + "; ".join(problems[:5]) + more, hint=HINT) from exc
    manifest.warnings.extend(_warnings(manifest, data))
    return manifest


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problem(error: Any) -> str:
    kind = error["type"]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        text = "should be an object ({...})"
    elif kind == "list_type":
        text = "should be a list ([...])"
    elif kind == "int_type":
        text = "should be a whole number"
    elif kind == "string_type":
        text = "should be a string"
    else:
        text = re.sub(r"^(Value error, )?(Input |String |List )?", "", str(error["msg"]))
    got = error.get("input")
    if got is None or isinstance(got, str | int | float | bool):
        shown = json.dumps(got)
        text += f" (got {shown})" if len(shown) <= 60 else ""
    return f"{_where(tuple(error['loc']))} {text}"


def _warnings(manifest: AppManifest, data: dict[str, Any]) -> list[str]:
    out = [f"app.json {key} is not applied: {why}" for key, why in NOT_APPLIED.items() if key in data]
    for name, entry in manifest.formation.items():
        if not is_process_name(_process_name(name)):
            out.append(f"formation.{name}: not a process type name; ignored")
        for key in entry.others():
            why = (
                "Billowin gives every process the same CPU and memory"
                if key == "size"
                else "Billowin does not use it"
            )
            out.append(f"formation.{name}.{key} is not applied: {why}")
    out += [
        f"scripts.{key} is not run: Billowin runs predeploy and postdeploy"
        for key in manifest.scripts.others()
    ]
    out += [
        f"scripts.dokku.{key} is not run: Billowin runs predeploy and postdeploy"
        for key in manifest.scripts.dokku.others()
    ]
    for process, checks in manifest.healthchecks.items():
        if process != "web":
            out.append(f"healthchecks.{process}: Billowin checks the web process only; ignored")
            continue
        chosen = manifest.web_check
        for number, check in enumerate(checks):
            where = f"healthchecks.web[{number}]"
            if check.path is None:
                out.append(f"{where}: only HTTP checks (with a path) are supported; ignored")
            elif check is not chosen:
                out.append(f"{where}: Billowin renders one check, the first with a path; ignored")
            if check.type is not None and check.type not in CHECK_TYPES:
                out.append(f"{where}.type {check.type!r} is not one of {', '.join(CHECK_TYPES)}")
            for key in check.others():
                why = CHECK_KEYS_NOT_APPLIED.get(key, "Billowin does not use it")
                out.append(f"{where}.{key} is not applied: {why}")
    return out
