"""App names, domains and process types: one check each, used everywhere a name enters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from billowin.apps.store import App
from billowin.config.vars import validate_app
from billowin.errors import InvalidInput
from billowin.names import check_app_name, check_domain, is_process_name, normalize_domain
from billowin.release.jobspec import AppJob, Process


@pytest.mark.parametrize("name", ["shop", "a", "my-app-2", "x" * 63])
def test_good_app_names_pass(name: str) -> None:
    assert check_app_name(name) == name


@pytest.mark.parametrize(
    "name", ["shop\n", "Shop", "-shop", "shop-", "2shop", "sh_op", "", "x" * 64, "shop.example", None]
)
def test_bad_app_names_are_refused_everywhere(name: object) -> None:
    with pytest.raises(InvalidInput, match="not a valid app name"):
        check_app_name(name)
    with pytest.raises(InvalidInput):
        validate_app(name)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        App(name=name, repository="/src")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        AppJob(app=name, release="v1", image="img:1", processes=[])  # type: ignore[arg-type]


def test_a_trailing_newline_no_longer_slips_through() -> None:
    """``re.match`` with ``$`` accepts "shop\\n"; every check now uses fullmatch."""
    for check in (check_app_name, check_domain):
        with pytest.raises(InvalidInput):
            check("shop\n" if check is check_app_name else "www.example.com\n")


def test_domains_are_normalized_then_checked() -> None:
    assert check_domain(normalize_domain(" WWW.Example.COM. ")) == "www.example.com"
    for bad in ["localhost", "exa mple.com", "-a.example.com", "a..example.com", "a.b.c4"]:
        with pytest.raises(InvalidInput, match="not a valid domain name"):
            check_domain(bad)


def test_process_names() -> None:
    assert is_process_name("web") and is_process_name("worker_2")
    assert not is_process_name("Web") and not is_process_name("web\n") and not is_process_name("1web")
    with pytest.raises(ValidationError):
        Process(name="web\n")
