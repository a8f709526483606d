from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from billowin.errors import InvalidInput
from billowin.release.jobspec import AppJob, Process, render
from billowin.settings import Settings

JOBSPECS = Settings().jobspecs_dir


def test_app_job_renders_metadata_port_and_check() -> None:
    hcl = render(
        JOBSPECS,
        "app.nomad.hcl",
        AppJob(
            app="shop",
            release="v7",
            image="127.0.0.1:5000/shop:abc",
            processes=[Process(name="web"), Process(name="worker", command=["rake", "jobs"])],
        ),
    )
    assert '"billowin.app"     = "shop"' in hcl
    assert '"billowin.release" = "v7"' in hcl
    assert 'group "web"' in hcl and 'group "worker"' in hcl
    assert 'PORT = "${NOMAD_PORT_http}"' in hcl
    assert hcl.count('port "http"') == 1  # only web gets a port and a service
    assert 'args  = ["rake", "jobs"]' in hcl


@pytest.mark.parametrize("name", ["Shop", "-shop", "shop_1", "a" * 64, "$(reboot)", "shop.evil", ""])
def test_app_names_must_be_dns_labels(name: str) -> None:
    with pytest.raises(ValidationError, match=r"DNS label|at least"):
        AppJob(app=name, release="v1", image="x", processes=[])


def test_image_references_cannot_inject_hcl() -> None:
    with pytest.raises(ValidationError):
        AppJob(app="ok", release="v1", image='x" }\n job "evil', processes=[])


def test_a_missing_variable_is_an_error_not_an_empty_string(tmp_path: Path) -> None:
    (tmp_path / "t.hcl").write_text('job "[[ app ]]" { meta { x = "[[ nope ]]" } }')

    class Vars(BaseModel):
        app: str

    with pytest.raises(InvalidInput, match="nope"):
        render(tmp_path, "t.hcl", Vars(app="a"))


def test_nomad_template_syntax_passes_through_untouched(tmp_path: Path) -> None:
    (tmp_path / "t.hcl").write_text('data = "{{ with nomadVar \\"x\\" }}{{ .y }}{{ end }} [[ app ]]"')

    class Vars(BaseModel):
        app: str

    assert (
        render(tmp_path, "t.hcl", Vars(app="a")) == 'data = "{{ with nomadVar \\"x\\" }}{{ .y }}{{ end }} a"'
    )
