from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from billowin.errors import InstallError
from billowin.settings import Settings
from billowin.stack.install import install_from_archive, local_replacements
from billowin.stack.tools import Toolset, load_versions, pinned_tools


def make_zip(name: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, content)
    return buf.getvalue()


def test_a_verified_archive_installs_an_executable(tmp_path: Path) -> None:
    archive = make_zip("nomad", b"#!/bin/true\n")
    sums = f"{hashlib.sha256(archive).hexdigest()}  nomad_1.6.3_linux_amd64.zip\n"
    target = tmp_path / "nomad"
    install_from_archive(archive, sums, "nomad_1.6.3_linux_amd64.zip", "nomad", target)
    assert target.read_bytes() == b"#!/bin/true\n"
    assert target.stat().st_mode & 0o111


def test_a_tampered_archive_is_refused_and_nothing_is_installed(tmp_path: Path) -> None:
    archive = make_zip("nomad", b"evil")
    sums = f"{'0' * 64}  nomad_1.6.3_linux_amd64.zip\n"
    target = tmp_path / "nomad"
    with pytest.raises(InstallError, match="checksum mismatch"):
        install_from_archive(archive, sums, "nomad_1.6.3_linux_amd64.zip", "nomad", target)
    assert not target.exists()


def test_an_archive_missing_from_sha256sums_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="not listed"):
        install_from_archive(b"x", "abc  other.zip\n", "nomad.zip", "nomad", tmp_path / "nomad")


def test_local_replacements_are_found_with_their_required_versions(tmp_path: Path) -> None:
    go_mod = tmp_path / "go.mod"
    go_mod.write_text(
        "module github.com/hashicorp/consul\n\n"
        "replace github.com/hashicorp/consul/api => ./api\n"
        "replace (\n\tgithub.com/hashicorp/consul/sdk => ./sdk\n"
        "\tgithub.com/other/x => github.com/fork/x v1.0.0\n)\n"
        "require (\n\tgithub.com/hashicorp/consul/api v1.18.1\n"
        "\tgithub.com/hashicorp/consul/sdk v0.13.0 // indirect\n)\n"
    )
    assert local_replacements(go_mod, "github.com/hashicorp/consul") == [
        ("api", "v1.18.1"),
        ("sdk", "v0.13.0"),
    ]


def test_every_hashicorp_tool_is_pinned_in_one_versions_file() -> None:
    settings = Settings()
    tools = {t.name: t for t in pinned_tools(settings)}
    assert set(tools) == {"nomad", "consul", "consul-template"}
    for tool in tools.values():
        assert tool.version[0].isdigit() and tool.build in {"go-install", "module-dir"}
    assert "base-image" in load_versions(settings.versions_file)


def test_missing_binaries_are_named_with_what_to_run(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    with pytest.raises(InstallError) as info:
        Toolset.resolve(settings)
    assert "nomad" in info.value.message and "consul-template" in info.value.message
    assert "make setup" in info.value.hint


def test_the_debian_mirror_comes_from_this_machines_apt_sources(tmp_path: Path) -> None:
    from billowin.stack.install import debian_mirror

    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    assert debian_mirror(Settings(), "bookworm", tmp_path) == "http://mirror.example/debian"
    assert (
        debian_mirror(Settings(debian_mirror="http://local/debian"), "bookworm", tmp_path)
        == "http://local/debian"
    )
    with pytest.raises(InstallError, match="Debian mirror"):
        debian_mirror(Settings(), "trixie", tmp_path)


def test_a_legacy_sources_list_is_understood(tmp_path: Path) -> None:
    from billowin.stack.install import debian_mirror

    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://old.example/debian bookworm main\n"
    )
    assert debian_mirror(Settings(), "bookworm", tmp_path) == "http://old.example/debian"
