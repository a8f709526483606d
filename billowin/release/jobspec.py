"""Render jobspec templates from ``jobspecs/`` with typed, strictly checked variables.

Templates use ``[[ ]]`` / ``[% %]`` delimiters so Nomad's own ``{{ }}``
(``template`` blocks, interpolation) passes through untouched, and a missing
variable is an error rather than an empty string.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
from pydantic import BaseModel, Field, field_validator

from billowin.errors import InvalidInput
from billowin.names import APP_NAME_RULE, PROCESS, is_app_name, is_domain

# The web check's path: no query string, nothing HCL or Consul would read as syntax.
HEALTH_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")


class Process(BaseModel):
    name: str = Field(pattern=PROCESS.pattern)
    command: list[str] | None = None
    count: int = Field(1, ge=0, le=100)
    cpu: int = Field(100, ge=20)
    memory: int = Field(128, ge=16)
    health_path: str = Field("/", pattern=HEALTH_PATH.pattern)
    # The web check's timings in seconds, and how many failed checks in a row restart an
    # instance (None: never), counted after ``health_grace``: app.json ``healthchecks``.
    health_interval: int = Field(2, ge=1, le=600)
    health_timeout: int = Field(2, ge=1, le=600)
    health_restart_after: int | None = Field(None, ge=1, le=100)
    health_grace: int = Field(1, ge=0, le=600)
    # web: the port the container listens on (a Dockerfile's EXPOSE), mapped to the router's port
    # and given as $PORT; None: Nomad picks one, the same inside and out.
    port: int | None = Field(None, ge=1, le=65535)

    @property
    def web(self) -> bool:
        return self.name == "web"


DURATION = r"^[0-9]+(ms|s|m)$"


class ContainerLogs(BaseModel):
    """How much output Docker keeps per container (its ``local`` log driver, compressed files):
    up to ``log_max_files`` files of ``log_max_size`` each, the oldest dropped first."""

    log_max_size: str = Field("10m", pattern=r"^[1-9][0-9]{0,3}[km]$")
    log_max_files: int = Field(3, ge=1, le=20)


class Mount(BaseModel):
    """A Docker volume mounted into a process type's containers (``volumes:add``)."""

    volume: str = Field(pattern=r"^billowin-vol-[a-z0-9-]{1,100}$")
    path: str = Field(pattern=r"^(/[A-Za-z0-9._-]+)+$")


class AppJob(ContainerLogs):
    """The variables of ``jobspecs/app.nomad.hcl``."""

    app: str
    release: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    image: str = Field(pattern=r"^[A-Za-z0-9._:/@-]{1,255}$")
    processes: list[Process]
    domains: list[str] = Field(default_factory=list)
    # Per process type: its volumes, and the node that holds them (where it must run).
    mounts: dict[str, list[Mount]] = Field(default_factory=dict)
    pinned: dict[str, str] = Field(default_factory=dict)
    # A Nomad template body rendering the release's config vars (from the ConfigStore), if any.
    config_template: str | None = None
    vault_policies: list[str] = Field(default_factory=list)
    # Fast deploys on one box; every figure is a Nomad duration.
    shutdown_delay: str = Field("5s", pattern=DURATION)
    kill_timeout: str = Field("10s", pattern=DURATION)
    # Healthy for a second (the first checks pass) before the old instances go: a second more
    # was a fifth of a warm push's time to live.
    min_healthy_time: str = Field("1s", pattern=DURATION)
    healthy_deadline: str = Field("45s", pattern=DURATION)
    progress_deadline: str = Field("90s", pattern=DURATION)
    # The Docker network app containers join (BILLOWIN_APP_NETWORK; made by the stack, ICC off).
    network_mode: str = Field("billowin-apps", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

    @field_validator("domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        for value in values:
            if not is_domain(value):
                raise ValueError(f"{value!r} is not a valid domain name (lowercase, like www.example.com)")
        return values

    @field_validator("app")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not is_app_name(value):
            raise ValueError(f"an app name must be a DNS label: {APP_NAME_RULE}")
        return value


def hcl(value: object) -> str:
    """``value`` as an HCL literal: JSON syntax, with HCL's ``${`` and ``%{`` template sequences escaped.

    Every user-supplied string (Procfile commands, ``run`` commands, config templates) goes
    through this, so ``${PORT}`` reaches the container's shell as typed instead of being
    interpolated by Nomad's HCL parser.
    """
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def environment(jobspecs_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(  # noqa: S701 - HCL output, not HTML
        loader=jinja2.FileSystemLoader(str(jobspecs_dir)),
        undefined=jinja2.StrictUndefined,
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
        keep_trailing_newline=True,
    )
    env.filters["hcl"] = hcl
    return env


def render(jobspecs_dir: Path, template: str, variables: BaseModel) -> str:
    env = environment(jobspecs_dir)
    try:
        tmpl = env.get_template(template)
        context = {name: getattr(variables, name) for name in type(variables).model_fields}
        return tmpl.render(**context)
    except jinja2.UndefinedError as exc:
        raise InvalidInput(f"jobspec {template}: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise InvalidInput(f"no jobspec template {template} in {jobspecs_dir}") from exc
