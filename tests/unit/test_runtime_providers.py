"""Runtime providers offline: Debian's table, the order providers are asked in, a provider that
cannot be reached, and archives that are not what they claim to be."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from billowin.build.runtimes import fetch
from billowin.build.runtimes.choice import Runtimes, runtimes_from
from billowin.build.runtimes.providers import DebianSuites, _untar, go_dirhash
from billowin.build.runtimes.resolve import RuntimeUnavailable
from billowin.errors import BuildFailed
from billowin.ports import RuntimeFiles
from billowin.settings import Settings

SUITES = {
    "bookworm": {"stable": True, "python": "3.11.2", "ruby": "3.1.2"},
    "trixie": {"stable": True, "python": "3.13.5", "ruby": "3.3.8"},
    "forky": {"stable": False, "python": "3.14.7", "ruby": "3.3.8"},
}
PACKAGES = {"python": ["python3", "python3-venv"], "ruby": ["ruby"]}


class Offline:
    """A provider whose server does not answer."""

    name = "upstream"

    def offered(self, language: str) -> list[str]:
        raise fetch.Unreachable("nodejs.org is unreachable: no route")

    defaults = offered

    def fetch(self, language: str, version: str, log: object) -> RuntimeFiles:
        raise AssertionError("never asked")


class Fixed:
    def __init__(self, name: str, versions: list[str]) -> None:
        self.name, self.versions = name, versions

    def offered(self, language: str) -> list[str]:
        return self.versions

    defaults = offered

    def fetch(self, language: str, version: str, log: object) -> RuntimeFiles:
        return RuntimeFiles(suite="trixie", label=self.name)


def test_debian_offers_every_suite_but_defaults_only_to_stable_ones() -> None:
    debian = DebianSuites(SUITES, PACKAGES)
    assert debian.offered("python") == ["3.11.2", "3.13.5", "3.14.7"]
    assert debian.defaults("python") == ["3.11.2", "3.13.5"]
    files = debian.fetch("ruby", "3.3.8", print)
    assert files.suite == "trixie" and files.packages == ("ruby",)  # the newest stable suite with it
    assert debian.fetch("python", "3.14.7", print).suite == "forky"  # only testing has it


def test_no_version_file_gets_the_newest_stable_python_and_a_version_file_may_ask_for_testing(
    tmp_path: Path,
) -> None:
    runtimes = Runtimes([DebianSuites(SUITES, PACKAGES)])
    assert runtimes.choose("python", tmp_path, print).version == "3.13.5"
    (tmp_path / ".python-version").write_text("3.14\n")
    chosen = runtimes.choose("python", tmp_path, print)
    assert (chosen.version, chosen.asked) == ("3.14.7", ".python-version asks for '3.14'")


def test_an_unreachable_provider_is_skipped_with_a_line_in_the_build_log(tmp_path: Path) -> None:
    said: list[str] = []
    (tmp_path / ".node-version").write_text("22\n")
    runtimes = Runtimes([Offline(), Fixed("npm", ["20.19.2", "22.23.5"])])
    chosen = runtimes.choose("node", tmp_path, said.append)
    assert (chosen.provider.name, chosen.version) == ("npm", "22.23.5")
    assert said == ["-----> Runtime provider upstream skipped: nodejs.org is unreachable: no route"]


def test_an_unsatisfiable_version_names_the_file_the_version_and_what_is_on_offer(tmp_path: Path) -> None:
    (tmp_path / ".python-version").write_text("3.9\n")
    with pytest.raises(RuntimeUnavailable) as caught:
        Runtimes([DebianSuites(SUITES, PACKAGES)]).choose("python", tmp_path, print)
    assert caught.value.message == (
        ".python-version asks for python '3.9', which no runtime provider offers; "
        "on offer: 3.11.2, 3.13.5, 3.14.7"
    )


def test_auto_asks_the_publishers_first_then_the_registries_then_debian() -> None:
    names = [p.name for p in runtimes_from(Settings()).providers]
    assert names == ["upstream", "npm", "goproxy", "debian"]
    only = runtimes_from(Settings(runtime_providers="debian,npm")).providers
    assert [p.name for p in only] == ["debian", "npm"]


def test_a_provider_list_with_an_unknown_name_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="runtime_providers"):
        Settings(runtime_providers="debian,homebrew")


def test_a_download_that_does_not_match_its_checksum_is_refused_and_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetch, "get_bytes", lambda url, headers=None: b"tampered")
    good = "sha512-" + base64.b64encode(hashlib.sha512(b"the real tarball").digest()).decode()
    with pytest.raises(BuildFailed, match="does not match its published checksum"):
        fetch.download("https://registry.example/node.tgz", tmp_path / "node.tgz", sri=good)
    assert list(tmp_path.iterdir()) == []
    path = fetch.download(
        "https://registry.example/node.tgz",
        tmp_path / "node.tgz",
        sha256=hashlib.sha256(b"tampered").hexdigest(),
    )
    assert path.read_bytes() == b"tampered"


def test_a_stale_offer_list_is_used_when_the_server_is_down(tmp_path: Path) -> None:
    assert fetch.cached_offer(tmp_path, "toolchains", lambda: ["1.25.14"]) == ["1.25.14"]
    (tmp_path / "toolchains.json").touch()
    import os

    os.utime(tmp_path / "toolchains.json", (0, 0))  # long stale

    def down() -> list[str]:
        raise fetch.Unreachable("proxy.golang.org is unreachable")

    assert fetch.cached_offer(tmp_path, "toolchains", down) == ["1.25.14"]


def test_an_archive_with_a_path_out_of_its_tree_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("package/../../etc/cron.d/evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"boom"))
    with pytest.raises(tarfile.TarError):
        _untar(archive, tmp_path / "tree", strip=1)
    assert not (tmp_path / "etc").exists()


def test_go_dirhash_is_the_sum_over_sorted_file_hashes() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m@v1/b.go", b"package b\n")
        zf.writestr("m@v1/a.go", b"package a\n")
    lines = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in (("m@v1/a.go", b"package a\n"), ("m@v1/b.go", b"package b\n"))
    )
    expected = "h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode()
    assert go_dirhash(buf.getvalue()) == expected


def test_a_server_that_did_not_answer_is_not_asked_again_for_ten_minutes_by_any_build(tmp_path: Path) -> None:
    asked: list[str] = []

    def down() -> list[str]:
        asked.append("asked")
        raise fetch.Unreachable("raw.githubusercontent.com is unreachable: no route")

    for _ in range(3):  # three builds, each its own process: only the disk remembers
        with pytest.raises(fetch.Unreachable, match=r"raw\.githubusercontent\.com is unreachable"):
            fetch.cached_offer(tmp_path, "python", down)
    assert asked == ["asked"]
    import os

    os.utime(tmp_path / "python.down", (0, 0))  # ten minutes later
    assert fetch.cached_offer(tmp_path, "python", lambda: ["3.14.2"]) == ["3.14.2"]
    assert not (tmp_path / "python.down").exists()
