from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from billowin.errors import InstallError
from billowin.settings import Settings
from billowin.stack.install import (
    check_license,
    install_from_archive,
    local_replacements,
    pseudo_versions,
    submodule_candidates,
)
from billowin.stack.tools import PinnedTool, Toolset, load_versions, pinned_tools


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


def test_every_hashicorp_tool_and_opentofu_is_pinned_in_one_versions_file() -> None:
    settings = Settings()
    tools = {t.name: t for t in pinned_tools(settings)}
    assert set(tools) == {"nomad", "consul", "consul-template", "vault", "tofu"}
    assert tools["tofu"].package == "./cmd/tofu" and tools["nomad"].package == "."
    for tool in tools.values():
        assert tool.version[0].isdigit() and tool.build in {"go-install", "module-dir"}
    assert "base-image" in load_versions(settings.versions_file)
    # Every tool built from its module tree must be an MPL-2.0 release.
    assert all(t.license == "MPL-2.0" for t in tools.values() if t.build == "module-dir")


def test_sub_module_pins_and_licenses_are_read_from_the_versions_file(tmp_path: Path) -> None:
    versions = tmp_path / "versions.toml"
    versions.write_text(
        "".join(
            f'[{name}]\nversion = "1.0.0"\nmodule = "example.com/{name}"\nbuild = "module-dir"\n'
            for name in ("nomad", "consul", "consul-template", "tofu")
        )
        + '[vault]\nversion = "1.14.2"\nmodule = "github.com/hashicorp/vault"\nbuild = "module-dir"\n'
        'license = "MPL-2.0"\n[vault.submodules]\nsdk = "v0.9.2"\napi = "v1.9.2"\n'
    )
    tools = {t.name: t for t in pinned_tools(Settings(versions_file=versions))}
    assert tools["vault"].submodules == (("api", "v1.9.2"), ("sdk", "v0.9.2"))
    assert tools["vault"].license == "MPL-2.0"
    assert tools["nomad"].submodules == () and tools["nomad"].license is None


def test_a_sub_module_at_the_tags_commit_is_named_as_go_names_it() -> None:
    commit = "bf23fe8636b04d554c0fa35a756c75c2f59026c0"  # vault v1.14.1
    # go.mod requires a pseudo-version: same base (the newest sdk tag below it is v0.9.1).
    assert pseudo_versions("v0.9.2-0.20230530190758-08ee474850e0", "2023-07-21T17:15:14Z", commit) == [
        "v0.9.2-0.20230721171514-bf23fe8636b0",
        "v0.0.0-20230721171514-bf23fe8636b0",
    ]
    # go.mod requires a release: the commit comes after it.
    after_release = pseudo_versions("v1.9.2", "2023-07-21T17:15:14Z", commit)
    assert after_release[0] == "v1.9.3-0.20230721171514-bf23fe8636b0"
    assert pseudo_versions(None, "2023-07-21T17:15:14Z", commit) == ["v0.0.0-20230721171514-bf23fe8636b0"]
    assert pseudo_versions("v1.9.2", "2023-07-21T17:15:14Z", "") == []  # the proxy named no commit


def test_a_pinned_sub_module_version_is_the_only_one_tried() -> None:
    at_commit = ["v0.9.2-0.20240228220726-7d15950da2e3", "v0.0.0-20240228220726-7d15950da2e3"]
    assert submodule_candidates("v0.9.2", at_commit, "v0.10.2") == ["v0.9.2"]
    assert submodule_candidates(None, at_commit, "v0.10.2") == [*at_commit, "v0.10.2"]
    assert submodule_candidates(None, [], "v0.10.2") == ["v0.10.2"]
    assert submodule_candidates(None, at_commit, None) == at_commit


def test_a_release_under_another_license_is_refused_before_building(tmp_path: Path) -> None:
    vault = PinnedTool("vault", "1.14.10", "github.com/hashicorp/vault", "module-dir", license="MPL-2.0")
    (tmp_path / "LICENSE").write_text(
        "License text copyright (c) 2020 MariaDB Corporation Ab, All Rights Reserved.\n"
        '"Business Source License" is a trademark of MariaDB Corporation Ab.\n'
    )
    with pytest.raises(InstallError, match="Business Source License") as info:
        check_license(tmp_path, vault)
    assert "MPL-2.0" in info.value.hint
    (tmp_path / "LICENSE").write_text(
        "Copyright (c) 2015 HashiCorp, Inc.\n\nMozilla Public License, version 2.0\n"
    )
    check_license(tmp_path, vault)
    check_license(tmp_path / "nowhere", PinnedTool("x", "1", "m", "module-dir"))  # no license asked: no check
    (tmp_path / "LICENSE").unlink()
    with pytest.raises(InstallError, match="no LICENSE"):
        check_license(tmp_path, vault)


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
