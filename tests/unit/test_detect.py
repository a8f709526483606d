from __future__ import annotations

from pathlib import Path

import pytest

from billowin.build.detect import detect, parse_procfile
from billowin.build.packer_images import failure_reason
from billowin.errors import InvalidInput

APPS = Path(__file__).resolve().parents[1] / "fixtures" / "apps"


@pytest.mark.parametrize(
    ("language", "web"),
    [
        ("python", "gunicorn --bind 0.0.0.0:$PORT --workers 2 app:app"),
        ("node", "npm start"),
        ("go", "/app/bin/web"),
        ("ruby", "bundle exec puma -b tcp://0.0.0.0:$PORT config.ru"),
    ],
)
def test_each_sample_is_detected_with_its_web_command(language: str, web: str) -> None:
    spec = detect(APPS / language)
    assert spec.language == language
    assert spec.web_command == web


def test_procfile_lines_become_process_types() -> None:
    assert parse_procfile(
        "# comment\nweb: gunicorn app:app\n\nworker: celery -A x worker\nrelease: ./migrate\n"
    ) == {
        "web": "gunicorn app:app",
        "worker": "celery -A x worker",
        "release": "./migrate",
    }


def test_a_malformed_procfile_line_is_named() -> None:
    with pytest.raises(InvalidInput, match="line 2"):
        parse_procfile("web: ok\nthis is not a process\n")


def test_without_a_procfile_defaults_apply(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask\n")
    (tmp_path / "main.py").write_text("print('hi')\n")
    assert detect(tmp_path).processes == {"web": "python3 main.py"}


def test_billowin_toml_overrides_detection(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{}")
    (tmp_path / "go.mod").write_text("module x\n")
    (tmp_path / "billowin.toml").write_text('language = "node"\n[processes]\nweb = "node server.js"\n')
    spec = detect(tmp_path)
    assert (spec.language, spec.processes) == ("node", {"web": "node server.js"})


def test_an_unknown_language_override_is_refused(tmp_path: Path) -> None:
    (tmp_path / "billowin.toml").write_text('language = "cobol"\n')
    with pytest.raises(InvalidInput, match="cobol"):
        detect(tmp_path)


def test_an_unrecognizable_tree_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("hi")
    with pytest.raises(InvalidInput) as info:
        detect(tmp_path)
    for marker in ("Gemfile", "go.mod", "requirements.txt", "pyproject.toml", "Pipfile", "package.json"):
        assert marker in info.value.message


def test_the_failure_reason_is_the_telling_line_of_the_log() -> None:
    log = [
        "==> docker: Provisioning with shell script: scripts/build-app.sh",
        "    docker: -----> Installing requirements.txt",
        "    docker: Collecting flask==3.0.3",
        "    docker: ERROR: No matching distribution found for nosuchpkg==1.0",
        "==> docker: Script exited with non-zero exit status: 1.Allowed exit codes are: [0]",
        "Build 'docker' errored after 5 seconds: Script exited with non-zero exit status: 1",
    ]
    assert failure_reason(log) == "ERROR: No matching distribution found for nosuchpkg==1.0"


def test_a_syntax_error_is_reported_over_packers_own_lines() -> None:
    log = [
        "    docker: -----> Checking the source compiles",
        "==> docker: *** Error compiling '/app/app.py'...",
        '==> docker:   File "/app/app.py", line 1',
        "==> docker: SyntaxError: invalid syntax",
        "==> docker: error: the Python source does not compile",
        "==> docker: Provisioning step had errors: Running the cleanup provisioner, if present...",
        "Build 'docker' errored after 6 seconds: Script exited with non-zero exit status: 1",
        "==> Builds finished but no artifacts were created.",
    ]
    assert failure_reason(log) == "error: the Python source does not compile"


def test_a_package_that_fails_to_build_names_its_own_error_not_pips_summary() -> None:
    """An old package whose setup.py is Python 2 (a 2014 sample app's Flask 0.9)."""
    log = [
        "    docker:   Getting requirements to build wheel: finished with status 'error'",
        "==> docker:   error: subprocess-exited-with-error",
        '==> docker:           print "Audit requires PyFlakes installed in your system."',
        "==> docker:       SyntaxError: Missing parentheses in call to 'print'. Did you mean print(...)?",
        "==> docker:       [end of output]",
        "==> docker:   note: This error originates from a subprocess, and is likely not a problem with pip.",
        "==> docker: error: subprocess-exited-with-error",
        "==> docker: \u00d7 Getting requirements to build wheel did not run successfully.",  # pip's own
        "==> docker: note: This error originates from a subprocess, and is likely not a problem with pip.",
    ]
    assert failure_reason(log) == (
        "SyntaxError: Missing parentheses in call to 'print'. Did you mean print(...)?"
    )
