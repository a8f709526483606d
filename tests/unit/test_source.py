"""Hostile repository URLs and refs are refused before git (or any shell) sees them.

No network: ``socket.getaddrinfo`` is replaced by a table, and the git runs that
matter are recorded instead of run.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from billowin.build import source
from billowin.build.source import (
    check_repository,
    check_sha,
    fetch,
    is_public_address,
    redact,
    redact_url,
    resolve_repository,
)
from billowin.errors import InvalidInput, ServiceError

SHA = "0123456789abcdef0123456789abcdef01234567"
PUBLIC = "140.82.112.3"


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A fake resolver: host -> addresses; any other name does not resolve."""
    table: dict[str, list[str]] = {"git.example.com": [PUBLIC]}

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for address in table[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
            out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return out

    monkeypatch.setattr("billowin.build.source.socket.getaddrinfo", getaddrinfo)
    return table


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% /tmp/pwned",
        "file:///etc",
        "ssh://git@example.com/x.git",
        "git://example.com/x.git",
        "--upload-pack=touch /tmp/pwned",
        "-u evil",
        "relative/path",
        "https://127.0.0.1/repo.git",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5/repo.git",
        "https://[::1]/repo.git",
        # not globally routable, however it is written
        "https://100.64.0.1/repo.git",  # carrier-grade NAT (shared)
        "https://0.0.0.0/repo.git",
        "https://224.0.0.1/repo.git",
        "https://2130706433/repo.git",  # 127.0.0.1 as one decimal number
        "https://0x7f.1/repo.git",  # hex and a short form
        "https://017700000001/repo.git",  # octal
        "https://127.1/repo.git",
        "https://127.0.0.1./repo.git",  # a trailing dot
        "https://[::ffff:127.0.0.1]/repo.git",  # IPv4-mapped IPv6
        "https://[::ffff:a9fe:a9fe]/repo.git",  # 169.254.169.254, mapped, in hex
        "https://[2002:7f00:1::]/repo.git",  # 6to4 of 127.0.0.1
        "https://[64:ff9b::a00:5]/repo.git",  # NAT64 of 10.0.0.5
        "https://[fe80::1]/repo.git",
        "https://[fd00::1]/repo.git",
        # names that do not resolve, or are not names
        "https://no-such-host.invalid/repo.git",
        "https://exa mple.com/repo.git",
        "https://example.com\\@127.0.0.1/repo.git",
        "https://ex%61mple.com/repo.git",
        "https://exämple.com/repo.git",
        "https://git.example.com:99999/repo.git",
    ],
)
def test_hostile_repository_urls_are_refused(url: str, dns: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidInput):
        check_repository(url)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "100.100.0.1", "::1", "fc00::5"])
def test_a_name_resolving_to_any_private_address_is_refused(address: str, dns: dict[str, list[str]]) -> None:
    dns["rebind.example.com"] = [PUBLIC, address]  # one bad answer among good ones is enough
    with pytest.raises(InvalidInput, match="loopback, private, shared or metadata"):
        check_repository("https://rebind.example.com/repo.git")


def test_a_name_that_does_not_resolve_is_refused_with_a_reason(dns: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidInput, match="does not resolve"):
        check_repository("https://nowhere.example.com/repo.git")


def test_numeric_forms_of_public_addresses_must_be_written_plainly(dns: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidInput, match=r"as 8\.8\.8\.8"):
        check_repository("https://0x08080808/repo.git")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", False),  # mapped addresses are never dialled as such
        ("2002:808:808::1", True),  # 6to4 of a public address
        ("100.64.0.1", False),
        ("100.127.255.254", False),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("169.254.169.254", False),
        ("198.18.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("ff02::1", False),
        ("::", False),
    ],
)
def test_only_globally_routable_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_private_addresses_can_be_allowed_explicitly(dns: dict[str, list[str]]) -> None:
    assert check_repository("https://10.0.0.5/repo.git", allow_private=True) == "https://10.0.0.5/repo.git"
    dns["git.internal"] = ["10.0.0.7"]
    remote = resolve_repository("https://git.internal/repo.git", allow_private=True)
    assert remote.pins == ("git.internal:443:10.0.0.7",)  # still resolved once and pinned


def test_a_name_is_pinned_to_every_address_that_was_checked(dns: dict[str, list[str]]) -> None:
    dns["git.example.com"] = [PUBLIC, "2606:50c0:8000::153"]
    remote = resolve_repository("https://GIT.example.com.:8443/owner/repo.git?x=1#frag")
    assert remote.url == "https://git.example.com:8443/owner/repo.git?x=1"
    assert remote.pins == (f"git.example.com:8443:{PUBLIC},[2606:50c0:8000::153]",)
    assert resolve_repository(f"https://{PUBLIC}/r.git").pins == ()  # an address needs no pin


def test_credentials_are_taken_out_of_the_url(dns: dict[str, list[str]]) -> None:
    remote = resolve_repository("https://deploy:s3cr%40t@git.example.com/owner/repo.git")
    assert remote.url == "https://git.example.com/owner/repo.git"
    assert (remote.username, remote.password) == ("deploy", "s3cr@t")
    assert "s3cr" not in remote.shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:tok3n@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://ghp_abcdef@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://a@b:c@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("/srv/git/app", "/srv/git/app"),
    ],
)
def test_redact_url_hides_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_hides_urls_and_secrets_in_any_text() -> None:
    text = "fatal: unable to access 'https://x:tok3n@github.com/o/r.git/': tok3n rejected"
    assert redact(text, "tok3n") == "fatal: unable to access 'https://***@github.com/o/r.git/': *** rejected"


@pytest.mark.parametrize(
    "ref", ["main", "--output=/etc/passwd", "$(reboot)", SHA[:12], SHA.upper(), SHA + "0"]
)
def test_only_full_commit_shas_are_built(ref: str) -> None:
    with pytest.raises(InvalidInput):
        check_sha(ref)


def test_nothing_is_fetched_for_a_refused_url(tmp_path: Path) -> None:
    dest = tmp_path / "src"
    with pytest.raises(InvalidInput):
        fetch("ext::sh -c id", SHA, dest)
    assert not dest.exists()


class GitRuns:
    """Records git's argv and environment instead of running it; fails the fetch if told to."""

    def __init__(self, stderr: str = "") -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.stderr = stderr

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if argv[:2] == ["git", "version"]:
            return subprocess.CompletedProcess(argv, 0, "git version 2.39.5\n", "")
        self.calls.append((argv, kwargs["env"]))
        failing = "fetch" in argv and self.stderr
        return subprocess.CompletedProcess(argv, 128 if failing else 0, "", self.stderr if failing else "")

    def fetch_call(self) -> tuple[list[str], dict[str, str]]:
        return next(c for c in self.calls if "fetch" in c[0])


@pytest.fixture
def git(monkeypatch: pytest.MonkeyPatch) -> Iterator[GitRuns]:
    runs = GitRuns()
    monkeypatch.setattr("billowin.build.source.subprocess.run", runs)
    source.git_version.cache_clear()
    yield runs
    source.git_version.cache_clear()


def test_git_is_pinned_refuses_redirects_and_gets_credentials_only_by_environment(
    git: GitRuns, dns: dict[str, list[str]], tmp_path: Path
) -> None:
    fetch("https://deploy:hunter22@git.example.com/o/r.git", SHA, tmp_path / "src")
    argv, env = git.fetch_call()
    assert argv[argv.index("--") + 1 :] == ["https://git.example.com/o/r.git", SHA]
    assert "http.followRedirects=false" in argv
    assert f"http.curloptResolve=git.example.com:443:{PUBLIC}" in argv
    assert not any("hunter22" in a or "Authorization" in a for a in argv)  # argv is public (`ps`)
    basic = base64.b64encode(b"deploy:hunter22").decode()
    assert (env["GIT_CONFIG_COUNT"], env["GIT_CONFIG_KEY_0"]) == ("1", "http.extraHeader")
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {basic}"


def test_a_deploy_token_wins_over_url_credentials(
    git: GitRuns, dns: dict[str, list[str]], tmp_path: Path
) -> None:
    fetch("https://old:creds@git.example.com/o/r.git", SHA, tmp_path / "src", token=SecretStr("ghs_T0KEN"))
    _, env = git.fetch_call()
    basic = base64.b64encode(b"x-access-token:ghs_T0KEN").decode()
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {basic}"


def test_inherited_git_config_from_the_environment_is_dropped(
    git: GitRuns, dns: dict[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "http.followRedirects")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "true")
    fetch("https://git.example.com/o/r.git", SHA, tmp_path / "src")
    _, env = git.fetch_call()
    assert env["GIT_CONFIG_COUNT"] == "0"
    assert "GIT_CONFIG_KEY_0" not in env


def test_git_errors_never_show_credentials(git: GitRuns, dns: dict[str, list[str]], tmp_path: Path) -> None:
    git.stderr = "fatal: could not read from 'https://deploy:hunter22@git.example.com/o/r.git': hunter22"
    with pytest.raises(ServiceError) as info:
        fetch("https://deploy:hunter22@git.example.com/o/r.git", SHA, tmp_path / "src")
    assert "hunter22" not in str(info.value)
    assert "https://git.example.com/o/r.git" in info.value.message


def test_an_old_git_that_cannot_pin_is_refused_rather_than_fetching_unpinned(
    monkeypatch: pytest.MonkeyPatch, dns: dict[str, list[str]], tmp_path: Path
) -> None:
    runs: list[list[str]] = []

    def old_git(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        runs.append(argv)
        return subprocess.CompletedProcess(argv, 0, "git version 2.30.2\n", "")

    monkeypatch.setattr("billowin.build.source.subprocess.run", old_git)
    source.git_version.cache_clear()
    try:
        with pytest.raises(ServiceError, match=r"2\.37"):
            fetch("https://git.example.com/o/r.git", SHA, tmp_path / "src")
    finally:
        source.git_version.cache_clear()
    assert runs == [["git", "version"]]  # nothing else ran
