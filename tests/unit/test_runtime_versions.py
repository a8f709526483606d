"""Runtime versions, read from an app's files the way Heroku's buildpacks read them, and chosen."""

from __future__ import annotations

from pathlib import Path

import pytest

from billowin.build.runtimes.requests import RuntimeRequest, read_request
from billowin.build.runtimes.resolve import RuntimeUnavailable, choose, newest_matching, satisfies
from billowin.errors import InvalidInput

PYTHONS = ["3.11.0", "3.11.2", "3.13.4", "3.13.5", "3.14.0", "3.14.8", "3.15.0rc1"]
NODES = ["18.20.8", "20.9.0", "20.11.1", "20.19.5", "21.7.3", "22.21.1", "23.11.1", "24.11.0"]
GOS = ["1.21.13", "1.24.9", "1.25.0", "1.25.4", "1.26rc1"]
RUBIES = ["3.2.9", "3.3.0", "3.3.8", "3.4.7"]


def app(tmp_path: Path, **files: str) -> Path:
    """An app directory with ``files`` (``python_version=`` writes ``.python-version``)."""
    for name, text in files.items():
        filename = {
            "python_version": ".python-version",
            "nvmrc": ".nvmrc",
            "node_version": ".node-version",
            "ruby_version": ".ruby-version",
            "runtime_txt": "runtime.txt",
            "pyproject": "pyproject.toml",
            "package_json": "package.json",
            "go_mod": "go.mod",
            "gemfile": "Gemfile",
            "gemfile_lock": "Gemfile.lock",
        }[name]
        (tmp_path / filename).write_text(text)
    return tmp_path


def pick(src: Path, language: str, versions: list[str]) -> str:
    return choose(read_request(src, language), {"heroku": versions})[1]


# --- Python ---------------------------------------------------------------------------------


def test_python_getting_started_gets_the_newest_314(tmp_path: Path) -> None:
    src = app(tmp_path, python_version="3.14\n", pyproject='[project]\nrequires-python = ">=3.11"\n')
    assert read_request(src, "python") == RuntimeRequest(
        "python", "3.14", ".python-version", "exact-or-prefix"
    )
    assert pick(src, "python", PYTHONS) == "3.14.8"


def test_python_version_skips_comments_and_pins_a_patch(tmp_path: Path) -> None:
    src = app(tmp_path, python_version="# pinned for the CVE fix\n\n3.13.4\n")
    assert pick(src, "python", PYTHONS) == "3.13.4"


def test_runtime_txt_is_read_when_there_is_no_python_version(tmp_path: Path) -> None:
    src = app(tmp_path, runtime_txt="python-3.11.2\n", pyproject='[project]\nrequires-python = ">=3.13"\n')
    assert read_request(src, "python") == RuntimeRequest("python", "3.11.2", "runtime.txt", "exact-or-prefix")


def test_requires_python_is_a_pep440_range_and_skips_prereleases(tmp_path: Path) -> None:
    src = app(tmp_path, pyproject='[project]\nname = "x"\nrequires-python = ">=3.12,<3.14"\n')
    assert pick(src, "python", PYTHONS) == "3.13.5"
    assert pick(app(tmp_path, pyproject='[project]\nrequires-python = ">=3.12"\n'), "python", PYTHONS) == (
        "3.14.8"
    )


def test_a_pyproject_without_requires_python_asks_for_nothing(tmp_path: Path) -> None:
    assert read_request(app(tmp_path, pyproject="[tool.ruff]\nline-length = 100\n"), "python") is None


def test_free_threaded_python_is_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"\.python-version .*free-threaded.*'3\.14t'") as caught:
        read_request(app(tmp_path, python_version="3.14t\n"), "python")
    assert "`3.14`" in caught.value.hint


@pytest.mark.parametrize(
    ("files", "named", "found"),
    [
        ({"python_version": "latest\n"}, ".python-version", "'latest'"),
        ({"runtime_txt": "3.12.3\n"}, "runtime.txt", "'3.12.3'"),
        ({"pyproject": '[project]\nrequires-python = "three twelve"\n'}, "pyproject.toml", "'three twelve'"),
        ({"pyproject": "[project\n"}, "pyproject.toml", "not valid TOML"),
    ],
)
def test_unreadable_python_versions_name_the_file_and_what_it_says(
    tmp_path: Path, files: dict[str, str], named: str, found: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_request(app(tmp_path, **files), "python")
    assert named in caught.value.message
    assert found in caught.value.message
    assert caught.value.hint


def test_runtime_txt_hint_shows_a_valid_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_request(app(tmp_path, runtime_txt="3.12.3\n"), "python")
    assert "`python-3.14.2`" in caught.value.hint


def test_an_app_without_version_files_asks_for_nothing_and_gets_the_newest_stable(tmp_path: Path) -> None:
    assert read_request(tmp_path, "python") is None
    assert choose(None, {"heroku": PYTHONS}, language="python") == ("heroku", "3.14.8")


# --- Node -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engines", "chosen"),
    [("22.x", "22.21.1"), (">=18 <21", "20.19.5"), ("^20.10.0", "20.19.5"), (">= 18.0.0", "24.11.0")],
)
def test_package_json_engines_node_is_an_npm_range(tmp_path: Path, engines: str, chosen: str) -> None:
    src = app(tmp_path, package_json=f'{{"name": "x", "engines": {{"node": "{engines}"}}}}', nvmrc="18\n")
    assert read_request(src, "node") == RuntimeRequest("node", engines, "package.json (engines.node)", "npm")
    assert pick(src, "node", NODES) == chosen


def test_nvmrc_is_read_when_package_json_has_no_engines(tmp_path: Path) -> None:
    src = app(tmp_path, package_json='{"name": "x"}', nvmrc="v20.11.1\n", node_version="22\n")
    assert read_request(src, "node") == RuntimeRequest("node", "20.11.1", ".nvmrc", "npm")
    assert pick(src, "node", NODES) == "20.11.1"


def test_node_version_is_read_last(tmp_path: Path) -> None:
    assert pick(app(tmp_path, node_version="v22\n"), "node", NODES) == "22.21.1"


def test_nvmrc_lts_aliases(tmp_path: Path) -> None:
    assert pick(app(tmp_path, nvmrc="lts/iron\n"), "node", NODES) == "20.19.5"
    assert pick(app(tmp_path, nvmrc="lts/*\n"), "node", NODES) == "24.11.0"
    assert pick(app(tmp_path, nvmrc="node\n"), "node", NODES) == "24.11.0"


def test_lts_info_from_the_provider_beats_the_even_major_guess() -> None:
    offered = [*NODES, "26.0.0"]  # 26 is out but not yet LTS
    assert newest_matching(RuntimeRequest("node", "lts/*", ".nvmrc", "npm"), offered) == "26.0.0"
    assert newest_matching(RuntimeRequest("node", "lts/*", ".nvmrc", "npm"), offered, lts=["24"]) == "24.11.0"
    assert choose(None, {"heroku": offered}, language="node", lts=["22", "24"]) == ("heroku", "24.11.0")


def test_node_without_a_version_gets_the_newest_even_major_not_a_current_odd_one() -> None:
    assert choose(None, {"heroku": [*NODES, "25.2.1", "26.0.0-rc.1"]}, language="node") == (
        "heroku",
        "24.11.0",
    )


@pytest.mark.parametrize(
    ("files", "named", "found"),
    [
        ({"package_json": '{"engines": {"node": "lts/*"}}'}, "package.json", "'lts/*'"),
        ({"package_json": '{"engines": {"node": 20}}'}, "package.json", "'20'"),
        ({"package_json": '{"name": "x",}'}, "package.json", "not valid JSON"),
        ({"nvmrc": "lts/unobtanium\n"}, ".nvmrc", "'lts/unobtanium'"),
        ({"node_version": "twenty\n"}, ".node-version", "'twenty'"),
    ],
)
def test_unreadable_node_versions_name_the_file_and_what_it_says(
    tmp_path: Path, files: dict[str, str], named: str, found: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_request(app(tmp_path, **files), "node")
    assert named in caught.value.message
    assert found in caught.value.message


# --- Go -------------------------------------------------------------------------------------

GO_MOD = """module github.com/heroku/go-getting-started

go {go}
{toolchain}
require (
\tgithub.com/gin-gonic/gin v1.10.0 // indirect
)
"""


def test_go_getting_started_gets_the_newest_patch_of_its_go_line(tmp_path: Path) -> None:
    src = app(tmp_path, go_mod=GO_MOD.format(go="1.25.0", toolchain=""))
    assert read_request(src, "go") == RuntimeRequest("go", "1.25.0", "go.mod (go)", "go")
    assert pick(src, "go", GOS) == "1.25.4"


def test_a_go_line_without_patch_means_that_release_at_its_newest_patch(tmp_path: Path) -> None:
    assert pick(app(tmp_path, go_mod=GO_MOD.format(go="1.21", toolchain="")), "go", GOS).startswith("1.21.")


def test_a_toolchain_line_wins_and_is_exact(tmp_path: Path) -> None:
    src = app(tmp_path, go_mod=GO_MOD.format(go="1.21", toolchain="toolchain go1.24.9 // pinned"))
    assert read_request(src, "go") == RuntimeRequest("go", "1.24.9", "go.mod (toolchain)", "go")
    assert pick(src, "go", GOS) == "1.24.9"


def test_a_go_mod_without_a_go_line_asks_for_nothing(tmp_path: Path) -> None:
    assert read_request(app(tmp_path, go_mod="module example.com/x\n"), "go") is None


def test_a_garbage_go_line_is_refused_naming_the_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"go\.mod \(go\) says 'latest'") as caught:
        read_request(app(tmp_path, go_mod=GO_MOD.format(go="latest", toolchain="")), "go")
    assert "`go 1.25.0`" in caught.value.hint


# --- Ruby -----------------------------------------------------------------------------------

LOCK = """GEM
  remote: https://rubygems.org/
  specs:
    rack (3.1.0)

RUBY VERSION
   ruby 3.3.0p0

BUNDLED WITH
   2.5.6
"""


@pytest.mark.parametrize(
    ("line", "requirement", "chosen"),
    [
        ('ruby "~> 3.3"', "~> 3.3", "3.4.7"),
        ("ruby '~> 3.3.1'", "~> 3.3.1", "3.3.8"),
        ('ruby "3.3.0", engine: "ruby", engine_version: "3.3.0"', "3.3.0", "3.3.0"),
        ('ruby ">= 3.2", "< 3.4" # supported range', ">= 3.2, < 3.4", "3.3.8"),
        ('ruby("!= 3.4.7")', "!= 3.4.7", "3.3.8"),
    ],
)
def test_gemfile_ruby_line_is_a_rubygems_requirement(
    tmp_path: Path, line: str, requirement: str, chosen: str
) -> None:
    src = app(tmp_path, gemfile=f'source "https://rubygems.org"\n\n{line}\n\ngem "rack"\n', gemfile_lock=LOCK)
    assert read_request(src, "ruby") == RuntimeRequest("ruby", requirement, "Gemfile", "ruby")
    assert pick(src, "ruby", RUBIES) == chosen


def test_gemfile_lock_ruby_version_is_exact_when_the_gemfile_does_not_say(tmp_path: Path) -> None:
    src = app(tmp_path, gemfile='source "https://rubygems.org"\ngem "rack"\n', gemfile_lock=LOCK)
    assert read_request(src, "ruby") == RuntimeRequest("ruby", "3.3.0", "Gemfile.lock", "ruby")
    assert pick(src, "ruby", RUBIES) == "3.3.0"


def test_a_gemfile_reading_ruby_version_falls_through_to_the_files(tmp_path: Path) -> None:
    src = app(tmp_path, gemfile='ruby file: ".ruby-version"\ngem "rails"\n', ruby_version="ruby-3.3\n")
    assert read_request(src, "ruby") == RuntimeRequest("ruby", "3.3", ".ruby-version", "exact-or-prefix")
    assert pick(src, "ruby", RUBIES) == "3.3.8"


def test_a_garbage_gemfile_ruby_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"Gemfile says 'latest please'") as caught:
        read_request(app(tmp_path, gemfile='ruby "latest please"\n'), "ruby")
    assert 'ruby "~> 3.3"' in caught.value.hint


# --- What a user sees when nothing on offer fits ---------------------------------------------


def test_an_unavailable_python_names_file_version_and_what_is_on_offer(tmp_path: Path) -> None:
    src = app(tmp_path, python_version="3.12\n")
    with pytest.raises(RuntimeUnavailable) as caught:
        choose(read_request(src, "python"), {"heroku": PYTHONS})
    assert caught.value.message == (
        ".python-version asks for python '3.12', which no runtime provider offers; "
        "on offer: 3.11.2, 3.13.5, 3.14.8, 3.15.0rc1"
    )
    assert caught.value.hint == "Change .python-version to ask for a version on offer, e.g. `3.14`."
    assert caught.value.status_code == 422


def test_an_unavailable_node_lists_the_newest_per_major(tmp_path: Path) -> None:
    src = app(tmp_path, package_json='{"engines": {"node": "16.x"}}')
    with pytest.raises(RuntimeUnavailable) as caught:
        choose(read_request(src, "node"), {"heroku": NODES})
    assert "package.json (engines.node) asks for node '16.x'" in caught.value.message
    assert caught.value.message.endswith("on offer: 18.20.8, 20.19.5, 21.7.3, 22.21.1, 23.11.1, 24.11.0")
    assert '"engines": {"node": "24.x"}' in caught.value.hint


def test_an_unavailable_go_toolchain_says_which_line(tmp_path: Path) -> None:
    src = app(tmp_path, go_mod=GO_MOD.format(go="1.22", toolchain="toolchain go1.22.5"))
    with pytest.raises(RuntimeUnavailable, match=r"go\.mod \(toolchain\) asks for go '1\.22\.5'") as caught:
        choose(read_request(src, "go"), {"heroku": GOS})
    assert "1.21.13, 1.24.9, 1.25.4, 1.26rc1" in caught.value.message
    assert "`toolchain go1.25.4`" in caught.value.hint


def test_an_unavailable_gemfile_lock_ruby_says_how_to_change_it(tmp_path: Path) -> None:
    src = app(tmp_path, gemfile_lock=LOCK.replace("3.3.0p0", "2.7.8p225"))
    with pytest.raises(RuntimeUnavailable, match=r"Gemfile\.lock asks for ruby '2\.7\.8'") as caught:
        choose(read_request(src, "ruby"), {"heroku": RUBIES})
    assert caught.value.hint == (
        'Ask for a version on offer in Gemfile, e.g. `ruby "~> 3.4"`, '
        "then run `bundle update --ruby` to rewrite Gemfile.lock."
    )


def test_nothing_offered_at_all() -> None:
    with pytest.raises(
        RuntimeUnavailable, match="no runtime provider offers a stable go version; on offer: nothing"
    ):
        choose(None, {"heroku": [], "local": []}, language="go")


# --- Providers and comparisons ----------------------------------------------------------------


def test_the_newest_version_wins_and_ties_go_to_the_first_provider() -> None:
    request = RuntimeRequest("python", "3.14", ".python-version", "exact-or-prefix")
    offered = {"mirror": ["3.14.2"], "heroku": ["3.14.8", "3.13.5"], "docker": ["3.14.8"]}
    assert choose(request, offered) == ("heroku", "3.14.8")
    assert choose(request, {"docker": ["3.14.8"], "heroku": ["3.14.8"]}) == ("docker", "3.14.8")


def test_versions_compare_as_numbers_not_strings() -> None:
    request = RuntimeRequest("python", "3", ".python-version", "exact-or-prefix")
    assert newest_matching(request, ["3.9.20", "3.10.1", "3.14.10", "3.14.9"]) == "3.14.10"
    assert not satisfies(RuntimeRequest("python", "3.1", ".python-version", "exact-or-prefix"), "3.14.0")
    assert not satisfies(RuntimeRequest("go", "1.25.0", "go.mod (go)", "go"), "1.3.0")
