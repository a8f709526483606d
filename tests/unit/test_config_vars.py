"""Config var names, ``KEY=value`` parsing, the store factory and the templates (no network)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from billowin.adapters.nomad_vars import NomadVariables
from billowin.adapters.vault import VaultKV
from billowin.config.vars import parse_assignments, validate_key, validate_values
from billowin.errors import ConfigError, InvalidInput
from billowin.ports import ConfigStore
from billowin.settings import Settings
from billowin.system import System


@pytest.mark.parametrize("key", ["A", "DATABASE_URL", "_private", "a1", "x" * 256, "Mixed_Case_9"])
def test_environment_variable_names_are_accepted(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "empty"),
        ("1ABC", "not a valid"),
        ("A-B", "not a valid"),
        ("A B", "not a valid"),
        ("A=B", "not a valid"),
        ("ÄPFEL", "not a valid"),
        ("A\n", "not a valid"),
        ("x" * 257, "longer than"),
        ("__billowin_empty", "reserved"),
        ("__BILLOWIN_anything", "reserved"),
        (42, "string"),
    ],
)
def test_other_names_are_refused_saying_why(key: object, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        validate_key(key)


def test_values_must_be_strings_without_nul_and_are_never_echoed() -> None:
    secret = "hunter2-very-secret"
    with pytest.raises(InvalidInput) as info:
        validate_values({"A": secret + "\x00"})
    assert "NUL" in info.value.message and secret not in str(info.value)
    with pytest.raises(InvalidInput, match="must be a string"):
        validate_values({"A": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput) as bad_key:
        validate_values({"bad key": secret})
    assert secret not in str(bad_key.value)
    assert validate_values({}) == {}


def test_assignments_split_at_the_first_equals_sign() -> None:
    assert parse_assignments(["A=1", "URL=postgres://u:p@h/db?x=1&y=2", "EMPTY=", "EQ==="]) == {
        "A": "1",
        "URL": "postgres://u:p@h/db?x=1&y=2",
        "EMPTY": "",
        "EQ": "==",
    }


def test_later_assignments_win_and_values_keep_spaces_and_newlines() -> None:
    assert parse_assignments(["A=1", "B= two \n", "A=3"]) == {"A": "3", "B": " two \n"}
    assert parse_assignments([]) == {}


@pytest.mark.parametrize("bad", ["NOEQUALS", "=value", "1A=x", "A B=x", "__billowin_empty=1"])
def test_malformed_assignments_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_assignments(["OK=1", bad])


def test_an_assignment_without_equals_is_not_echoed() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_assignments(["A=1", "sup3rs3cret"])
    assert "sup3rs3cret" not in str(info.value)
    assert "2" in info.value.message  # which argument


def test_the_store_defaults_to_nomad_variables() -> None:
    store = _config_store(Settings(nomad_addr="http://127.0.0.1:1"))
    assert isinstance(store, NomadVariables) and store.backend == "nomad"
    assert store.job_vault_policies("shop") == []


def test_the_vault_store_needs_an_address() -> None:
    with pytest.raises(ConfigError) as info:
        _config_store(Settings(config_backend="vault", vault_addr=None))
    assert "VAULT_ADDR" in info.value.hint


def test_the_vault_store_is_chosen_by_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLOWIN_CONFIG_BACKEND", "vault")
    monkeypatch.setenv("BILLOWIN_VAULT_ADDR", "127.0.0.1:8200")
    monkeypatch.setenv("BILLOWIN_VAULT_KV_MOUNT", "kv")
    store = _config_store(Settings(vault_token=SecretStr("t")))
    assert isinstance(store, VaultKV) and store.backend == "vault"
    assert store.mount == "kv"
    assert store.job_vault_policies("shop") == ["billowin-app-shop"]


def test_templates_name_the_exact_version_and_render_json_quoted_lines() -> None:
    nomad = NomadVariables(Settings(nomad_addr="http://127.0.0.1:1"))
    assert nomad.template("web", 7) == (
        '{{ with nomadVar "billowin/config/web/7" }}{{ range .Tuples }}'
        '{{ if ne .K "__billowin_empty" }}{{ .K }}={{ .V | toJSON }}\n{{ end }}{{ end }}{{ end }}'
    )
    vault = VaultKV(Settings(vault_addr="http://127.0.0.1:1"))
    assert vault.template("web", 7) == (
        '{{ with secret "secret/data/billowin/web?version=7" }}'
        "{{ range $k, $v := .Data.data }}{{ $k }}={{ $v | toJSON }}\n{{ end }}{{ end }}"
    )


def test_app_names_are_checked_before_they_become_paths() -> None:
    nomad = NomadVariables(Settings(nomad_addr="http://127.0.0.1:1"))
    for bad in ("../etc", "Web", "a/b", "", "web\n"):
        with pytest.raises(InvalidInput, match="app name"):
            nomad.template(bad, 1)


def _config_store(settings: Settings) -> ConfigStore:
    """The store ``BILLOWIN_CONFIG_BACKEND`` picks, built by the composition root as the API does."""
    return System(settings).config
