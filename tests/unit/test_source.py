"""Hostile repository URLs and refs are refused before git (or any shell) sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

from billowin.build.source import check_repository, check_sha, fetch
from billowin.errors import InvalidInput

SHA = "0123456789abcdef0123456789abcdef01234567"


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
    ],
)
def test_hostile_repository_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_repository(url)


def test_private_addresses_can_be_allowed_explicitly() -> None:
    assert check_repository("https://10.0.0.5/repo.git", allow_private=True) == "https://10.0.0.5/repo.git"


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
