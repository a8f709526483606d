"""Which builds install their dependencies apart from the source, and when they are reused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from billowin.build import deps
from billowin.build.deps import dependency_files, dependency_key, write_dependency_files

SCRIPT = Path(__file__).resolve().parents[2] / "packer" / "scripts" / "build-app.sh"

UV_PROJECT = "[project]\nname = 'x'\nversion = '1'\ndependencies = ['django']\n"
POETRY_PROJECT = "[project]\nname = 'x'\nreadme = 'README.md'\n\n[tool.poetry]\npackage-mode = false\n"
PIPFILE_LOCK = '{"_meta": {}, "default": {"flask": {"version": "==3.0.3"}}, "develop": {}}'


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "language", "split"),
    [
        ({"requirements.txt": "flask==3.0.3\n# a comment\n", "app.py": ""}, "python", ["requirements.txt"]),
        ({"requirements.txt": "flask\n-e .\n"}, "python", None),  # the project itself
        ({"requirements.txt": "-r base.txt\n", "base.txt": "flask\n"}, "python", None),
        ({"requirements.txt": "./vendor/pkg.whl\n"}, "python", None),
        ({"pyproject.toml": "[project]\nname='x'\n"}, "python", None),
        ({"Pipfile": "[packages]\n", "Pipfile.lock": PIPFILE_LOCK}, "python", ["Pipfile", "Pipfile.lock"]),
        ({"Pipfile": "[packages]\n"}, "python", ["Pipfile"]),  # the build asks for the lock
        (
            {"Pipfile": "", "Pipfile.lock": '{"default": {"mylib": {"path": ".", "editable": true}}}'},
            "python",
            None,
        ),
        # uv: a virtual project installs from pyproject.toml and uv.lock alone…
        ({"pyproject.toml": UV_PROJECT, "uv.lock": "version = 1\n"}, "python", ["pyproject.toml", "uv.lock"]),
        # …and wins over a requirements.txt beside it, as in build-app.sh
        (
            {"pyproject.toml": UV_PROJECT, "uv.lock": "", "requirements.txt": "flask\n"},
            "python",
            ["pyproject.toml", "uv.lock"],
        ),
        # a project that is itself a package, a workspace, path sources: they need the source
        (
            {"pyproject.toml": UV_PROJECT + "[build-system]\nrequires = ['hatchling']\n", "uv.lock": ""},
            "python",
            None,
        ),
        (
            {
                "pyproject.toml": UV_PROJECT + "[build-system]\nrequires = []\n[tool.uv]\npackage = false\n",
                "uv.lock": "",
            },
            "python",
            ["pyproject.toml", "uv.lock"],
        ),
        (
            {"pyproject.toml": UV_PROJECT + "[tool.uv.workspace]\nmembers = ['lib']\n", "uv.lock": ""},
            "python",
            None,
        ),
        (
            {"pyproject.toml": UV_PROJECT + "[tool.uv.sources]\nlib = { path = 'lib' }\n", "uv.lock": ""},
            "python",
            None,
        ),
        ({"pyproject.toml": "not toml [", "uv.lock": ""}, "python", None),
        ({"uv.lock": ""}, "python", None),  # uv will say pyproject.toml is missing, in one step
        # Poetry: the readme it loads the project with comes too
        (
            {"pyproject.toml": POETRY_PROJECT, "poetry.lock": "", "README.md": "# x\n", "app.py": ""},
            "python",
            ["README.md", "poetry.lock", "pyproject.toml"],
        ),
        (
            {"pyproject.toml": POETRY_PROJECT, "poetry.lock": "", "poetry.toml": "[virtualenvs]\n"},
            "python",
            ["poetry.lock", "poetry.toml", "pyproject.toml"],
        ),
        (
            {"pyproject.toml": "[tool.poetry.dependencies]\nlib = { path = './lib' }\n", "poetry.lock": ""},
            "python",
            None,
        ),
        (
            {"pyproject.toml": "[project]\ndependencies = ['lib @ file:///x']\n", "poetry.lock": ""},
            "python",
            None,
        ),
        ({"pyproject.toml": "[project]\nreadme = '../README.md'\n", "poetry.lock": ""}, "python", None),
        (
            {"package.json": '{"scripts": {"start": "node index.js"}}', "package-lock.json": "{}"},
            "node",
            ["package-lock.json", "package.json"],
        ),
        ({"package.json": '{"scripts": {"postinstall": "node build.js"}}'}, "node", None),
        ({"package.json": '{"scripts": {"heroku-prebuild": "./fetch.sh"}}'}, "node", None),
        ({"package.json": "not json"}, "node", None),
        # A build script runs in the app step, on the full install the dependency image holds.
        (
            {"package.json": '{"scripts": {"build": "tsc"}}', "pnpm-lock.yaml": "", ".npmrc": "x=1\n"},
            "node",
            [".npmrc", "package.json", "pnpm-lock.yaml"],
        ),
        (
            {"package.json": '{"packageManager": "yarn@1.22.22"}', "yarn.lock": "", ".yarnrc": ""},
            "node",
            [".yarnrc", "package.json", "yarn.lock"],
        ),
        # Yarn berry: its release, plugins and patches, not its install state
        (
            {
                "package.json": "{}",
                "yarn.lock": "__metadata:\n",
                ".yarnrc.yml": "yarnPath: .yarn/releases/yarn-4.5.0.cjs\n",
                ".yarn/releases/yarn-4.5.0.cjs": "",
                ".yarn/plugins/@yarnpkg/plugin-x.cjs": "",
                ".yarn/install-state.gz": "",
                ".yarn/unplugged/pkg/x.js": "",
            },
            "node",
            [
                ".yarn/plugins/@yarnpkg/plugin-x.cjs",
                ".yarn/releases/yarn-4.5.0.cjs",
                ".yarnrc.yml",
                "package.json",
                "yarn.lock",
            ],
        ),
        ({"package.json": "{}", ".yarnrc.yml": "", ".yarn/cache/pkg.zip": ""}, "node", None),  # zero-install
        ({"package.json": '{"workspaces": ["packages/*"]}'}, "node", None),
        ({"package.json": "{}", "pnpm-workspace.yaml": "packages: ['a']\n"}, "node", None),
        ({"package.json": '{"dependencies": {"lib": "file:./lib"}}'}, "node", None),
        ({"package.json": '{"devDependencies": {"lib": "link:../lib"}}'}, "node", None),
        ({"package.json": '{"overrides": {"a": {"b": "./b"}}}'}, "node", None),
        (
            {"package.json": '{"dependencies": {"a": "~1.2.0", "b": "^2", "c": "npm:d@1"}}'},
            "node",
            ["package.json"],
        ),
        (
            {
                "package.json": '{"pnpm": {"patchedDependencies": {"a@1.0.0": "patches/a@1.0.0.patch"}}}',
                "pnpm-lock.yaml": "",
                "patches/a@1.0.0.patch": "",
            },
            "node",
            ["package.json", "patches/a@1.0.0.patch", "pnpm-lock.yaml"],
        ),
        ({"package.json": '{"pnpm": {"patchedDependencies": {"a@1": "../a.patch"}}}'}, "node", None),
        ({"go.mod": "module x\n"}, "go", None),  # Go compiles the source: one step
        ({"Gemfile": "source 'https://rubygems.org'\n"}, "ruby", None),  # no lock: Bundler resolves
        (
            {"Gemfile": "gem 'rack'\n", "Gemfile.lock": "GEM\n", ".ruby-version": "3.1\n", "config.ru": ""},
            "ruby",
            [".ruby-version", "Gemfile", "Gemfile.lock"],
        ),
        (
            {"Gemfile": "gem 'rack'\n", "Gemfile.lock": "", ".bundle/config": "---\n"},
            "ruby",
            [".bundle/config", "Gemfile", "Gemfile.lock"],
        ),
        ({"Gemfile": "source 'https://rubygems.org'\ngemspec\n", "Gemfile.lock": ""}, "ruby", None),
        ({"Gemfile": "gem 'mine', path: 'vendor/mine'\n", "Gemfile.lock": ""}, "ruby", None),
        ({"Gemfile": "gem 'mine', :path => 'mine'\n", "Gemfile.lock": ""}, "ruby", None),
        ({"Gemfile": "gem 'rack'\n", "Gemfile.lock": "PATH\n  remote: .\n"}, "ruby", None),
    ],
)
def test_only_manifests_that_install_alone_are_split_out(
    tmp_path: Path, files: dict[str, str], language: str, split: list[str] | None
) -> None:
    found = dependency_files(write(tmp_path, files), language)
    assert (sorted(found) if found is not None else None) == split


@pytest.mark.parametrize(
    ("files", "link", "language"),
    [
        ({}, "requirements.txt", "python"),
        ({"pyproject.toml": UV_PROJECT}, "uv.lock", "python"),
        ({"uv.lock": ""}, "pyproject.toml", "python"),
        ({"Pipfile": ""}, "Pipfile.lock", "python"),
        ({}, "package.json", "node"),
        ({"package.json": "{}"}, "package-lock.json", "node"),
        ({"package.json": "{}", ".yarnrc.yml": ""}, ".yarn/releases", "node"),
        ({"Gemfile": "gem 'rack'\n"}, "Gemfile.lock", "ruby"),
    ],
)
def test_a_symlinked_dependency_file_is_never_read_into_the_dependency_image(
    tmp_path: Path, files: dict[str, str], link: str, language: str
) -> None:
    """Its target may be a file of the build host: the one-step build copies the link itself."""
    secret = tmp_path / "host-secret"
    secret.write_text("flask==3.0.3\n" if link != ".yarn/releases" else "")
    if link == ".yarn/releases":
        secret.unlink()
        secret.mkdir()
        (secret / "yarn.cjs").write_text("secret")
    src = write(tmp_path / "src", {".keep": "", **files})
    (src / link).parent.mkdir(parents=True, exist_ok=True)
    (src / link).symlink_to(secret)
    assert dependency_files(src, language) is None


def test_build_app_sh_picks_the_python_package_manager_in_the_same_order() -> None:
    """The dependency step sees only the files deps.py chose: both must pick the same manager."""
    match = re.search(r"^\s*for file in ([^;]+); do", SCRIPT.read_text(), re.MULTILINE)
    assert match, "build-app.sh's python manager loop"
    assert tuple(match.group(1).split()) == deps.PYTHON_MANAGERS


def test_the_python_manager_is_the_first_file_found(tmp_path: Path) -> None:
    write(tmp_path, {"requirements.txt": "", "pyproject.toml": "", "poetry.lock": ""})
    assert deps.python_manager(tmp_path) == "poetry.lock"
    (tmp_path / "uv.lock").write_text("")
    assert deps.python_manager(tmp_path) == "uv.lock"


def test_nested_dependency_files_are_written_where_they_belong(tmp_path: Path) -> None:
    files = {"package.json": b"{}", ".yarn/releases/yarn.cjs": b"yarn", "patches/a.patch": b"diff"}
    out = write_dependency_files(files, tmp_path / "deps")
    assert (out / ".yarn" / "releases" / "yarn.cjs").read_bytes() == b"yarn"
    assert (out / "patches" / "a.patch").read_bytes() == b"diff"
    with pytest.raises(ValueError, match="outside the source tree"):
        write_dependency_files({"../escape": b""}, tmp_path / "other")
    assert not (tmp_path / "escape").exists()


def test_the_key_changes_with_any_byte_of_the_manifests_or_the_base_image() -> None:
    def key(files: dict[str, bytes], base: str = "billowin/python:1", script: str = "v1") -> str:
        return dependency_key(files, language="python", base_image=base, extra=[script])

    files = {"requirements.txt": b"flask==3.0.3\n"}
    assert key(files) == key(dict(files))
    assert key(files) != key({"requirements.txt": b"flask==3.0.4\n"})
    assert key(files) != key(files, base="billowin/python:2")
    assert key(files) != key(files, script="v2")
    uv = {"pyproject.toml": b"[project]\n", "uv.lock": b"version = 1\n"}
    assert key(uv) != key({**uv, "uv.lock": b"version = 1\n# relocked\n"})
    assert key(uv) != key({**uv, "README.md": b""})  # a file more is another install
