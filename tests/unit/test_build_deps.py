"""Which builds install their dependencies apart from the source, and when they are reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from billowin.build.deps import dependency_files, dependency_key


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
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
        ({"Pipfile": "[packages]\n", "Pipfile.lock": "{}"}, "python", ["Pipfile", "Pipfile.lock"]),
        (
            {"package.json": '{"scripts": {"start": "node index.js"}}', "package-lock.json": "{}"},
            "node",
            ["package-lock.json", "package.json"],
        ),
        ({"package.json": '{"scripts": {"postinstall": "node build.js"}}'}, "node", None),
        ({"package.json": "not json"}, "node", None),
        ({"go.mod": "module x\n"}, "go", None),  # Go compiles the source: one step
        ({"Gemfile": "source 'https://rubygems.org'\n"}, "ruby", None),
    ],
)
def test_only_manifests_that_install_alone_are_split_out(
    tmp_path: Path, files: dict[str, str], language: str, split: list[str] | None
) -> None:
    found = dependency_files(write(tmp_path, files), language)
    assert (sorted(found) if found is not None else None) == split


def test_the_key_changes_with_any_byte_of_the_manifests_or_the_base_image() -> None:
    def key(files: dict[str, bytes], base: str = "billowin/python:1", script: str = "v1") -> str:
        return dependency_key(files, language="python", base_image=base, extra=[script])

    files = {"requirements.txt": b"flask==3.0.3\n"}
    assert key(files) == key(dict(files))
    assert key(files) != key({"requirements.txt": b"flask==3.0.4\n"})
    assert key(files) != key(files, base="billowin/python:2")
    assert key(files) != key(files, script="v2")
