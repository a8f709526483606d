"""App management pieces that need no running system: rendering, parsing, the CLI's client."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from billowin.cli import app as cli_app
from billowin.cli.client import ClientConfig, _raise_for, config_path, load_config
from billowin.errors import BillowinError, InvalidInput, NotFound, Unauthorized
from billowin.pipeline.jobs import Job, JobKind
from billowin.release.jobspec import AppJob, Process, render
from billowin.release.logs import instance_name
from billowin.release.oneoff import RunJob, _exit_code, shell_command
from billowin.settings import Settings

JOBSPECS = Settings().jobspecs_dir
TEMPLATE = (
    '{{ with nomadVar "billowin/config/shop/3" }}{{ range .Tuples }}{{ .K }}="{{ .V }}"\n{{ end }}{{ end }}'
)


def test_config_vars_reach_the_task_through_a_template_never_the_job() -> None:
    hcl = render(
        JOBSPECS,
        "app.nomad.hcl",
        AppJob(
            app="shop",
            release="v3",
            image="127.0.0.1:5000/shop:abc",
            processes=[Process(name="web")],
            config_template=TEMPLATE,
            vault_policies=["billowin-apps"],
        ),
    )
    assert 'destination = "secrets/config.env"' in hcl
    assert "env         = true" in hcl
    # The template text is one escaped HCL string: quotes and newlines cannot break out of it.
    assert 'data        = "{{ with nomadVar \\"billowin/config/shop/3\\" }}' in hcl
    assert '\\n{{ end }}{{ end }}"' in hcl
    assert 'policies    = ["billowin-apps"]' in hcl


def test_without_config_there_is_no_template_block() -> None:
    hcl = render(
        JOBSPECS,
        "app.nomad.hcl",
        AppJob(app="shop", release="v1", image="img", processes=[Process(name="web")]),
    )
    assert "template {" not in hcl and "vault {" not in hcl


def test_a_one_off_run_is_a_batch_job_that_is_never_retried() -> None:
    hcl = render(
        JOBSPECS,
        "run.nomad.hcl",
        RunJob(
            job_id="shop-run-1a2b3c4d",
            app="shop",
            release="v3",
            kind="run",
            image="127.0.0.1:5000/shop:abc",
            script=shell_command("rake db:migrate && echo \"${HOME}\" '{{ x }}'"),
            delimiter="billowin-0123",
        ),
    )
    assert 'type        = "batch"' in hcl
    assert "attempts = 0" in hcl
    assert 'args  = ["sh", "/local/billowin-run.sh"]' in hcl
    # The command is a file's content, verbatim: no HCL, Nomad or template interpolation applies.
    assert 'data            = "rake db:migrate && echo \\"$${HOME}\\" \'{{ x }}\'\\n"' in hcl
    assert 'left_delimiter  = "billowin-0123{{"' in hcl


def test_shell_syntax_in_commands_is_not_interpolated_by_hcl() -> None:
    hcl = render(
        JOBSPECS,
        "app.nomad.hcl",
        AppJob(
            app="shop",
            release="v1",
            image="img",
            processes=[Process(name="web", command=["sh", "-c", "gunicorn -b 0.0.0.0:${PORT} %{x}"])],
        ),
    )
    assert '"gunicorn -b 0.0.0.0:$${PORT} %%{x}"' in hcl


@pytest.mark.parametrize("command", ["", "   ", "echo \x00", "x" * 5000])
def test_run_refuses_empty_or_unusable_commands(command: str) -> None:
    with pytest.raises(InvalidInput):
        shell_command(command)


def test_the_exit_code_of_a_run_comes_from_its_terminated_event() -> None:
    alloc = {
        "ClientStatus": "failed",
        "TaskStates": {
            "run": {"Failed": True, "Events": [{"Type": "Terminated", "Details": {"exit_code": "3"}}]}
        },
    }
    assert _exit_code(alloc) == (3, "")
    never_started = {
        "ClientStatus": "failed",
        "TaskStates": {
            "run": {
                "Failed": True,
                "Events": [{"Type": "Driver Failure", "FailsTask": True, "DisplayMessage": "no image"}],
            }
        },
    }
    assert _exit_code(never_started) == (1, "no image")


@pytest.mark.parametrize(
    ("name", "expected"), [("shop.web[0]", "web.1"), ("shop.worker[4]", "worker.5"), ("odd", "web")]
)
def test_instances_are_named_like_heroku_dynos(name: str, expected: str) -> None:
    assert instance_name({"Name": name, "TaskGroup": "web"}) == expected


def test_pipeline_jobs_say_what_they_do() -> None:
    assert Job(id="1", app="shop", sha="a" * 40).describe() == f"build and deploy {'a' * 12}"
    assert Job(id="2", app="shop", kind=JobKind.ROLLBACK, rollback_to=3).describe() == "roll back to v3"
    assert Job(id="3", app="shop", kind=JobKind.CONFIG, note="config: set X").describe() == "config: set X"


def _response(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://api/apps/x"))


def test_api_errors_become_the_same_errors_with_their_hint() -> None:
    with pytest.raises(NotFound) as found:
        _raise_for(_response(404, {"error": "NotFound", "message": "no app named 'x'", "hint": "List apps."}))
    assert (found.value.message, found.value.hint) == ("no app named 'x'", "List apps.")
    with pytest.raises(Unauthorized):
        _raise_for(_response(401, {"message": "a valid API token is required"}))
    with pytest.raises(InvalidInput, match=r"body\.counts"):
        _raise_for(_response(422, {"detail": [{"loc": ["body", "counts"], "msg": "field required"}]}))
    with pytest.raises(BillowinError, match="HTTP 502"):
        _raise_for(httpx.Response(502, text="bad gateway", request=httpx.Request("GET", "http://api/")))


def test_login_is_saved_privately_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for var in ("BILLOWIN_API_URL", "BILLOWIN_API_TOKEN", "BILLOWIN_API_PORT"):
        monkeypatch.delenv(var, raising=False)
    path = ClientConfig(api_url="https://paas.example.com", api_token="bw_x_y").save()  # type: ignore[arg-type]
    assert path == config_path() and stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_config()
    assert loaded.api_url == "https://paas.example.com"
    assert loaded.api_token is not None and loaded.api_token.get_secret_value() == "bw_x_y"
    assert "bw_x_y" not in repr(loaded)
    monkeypatch.setenv("BILLOWIN_API_URL", "http://127.0.0.1:9999")
    assert load_config().api_url == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    "args",
    [
        ["ps:scale", "shop", "web=two"],
        ["rollback", "shop", "latest"],
        ["config:set", "shop", "NOEQUALS"],
        ["config:set", "shop", "1BAD=x"],
    ],
)
def test_bad_cli_input_is_one_plain_error_before_any_call(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("BILLOWIN_API_URL", "http://127.0.0.1:9")  # nothing listens: no call must be made
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 1
    assert "error:" in result.output and "cannot reach" not in result.output
    assert "Traceback" not in result.output


def test_the_cli_says_what_to_do_when_the_api_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("BILLOWIN_API_URL", "http://127.0.0.1:9")
    result = CliRunner().invoke(cli_app, ["apps", "--json"])
    assert result.exit_code == 1
    assert "cannot reach http://127.0.0.1:9" in result.output and "what to do:" in result.output


def test_run_keeps_each_argument_as_typed() -> None:
    """`billowin run APP -- printf '%s' 'a b'` runs exactly those arguments; one argument is a shell line."""
    from billowin.cli.logs import shell_line

    assert shell_line(["printf", "%s\\n", "two words", "$HOME"]) == "printf '%s\\n' 'two words' '$HOME'"
    assert shell_line(["echo $HOME; ls -l"]) == "echo $HOME; ls -l"
    assert shell_line(["python3", "-c", "print('a b')"]) == "python3 -c 'print('\"'\"'a b'\"'\"')'"
