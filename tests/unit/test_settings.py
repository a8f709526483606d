from __future__ import annotations

import pytest

from billowin.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "NOMAD_ADDR",
        "CONSUL_HTTP_ADDR",
        "VAULT_ADDR",
        "NOMAD_TOKEN",
        "BILLOWIN_NOMAD_ADDR",
        "BILLOWIN_CONSUL_ADDR",
        "BILLOWIN_DOMAIN",
    ):
        monkeypatch.delenv(var, raising=False)


def test_defaults_point_at_the_single_box_stack() -> None:
    s = Settings()
    assert s.nomad_addr == "http://127.0.0.1:4646"
    assert s.consul_addr == "http://127.0.0.1:8500"
    assert s.domain == "localhost"


def test_standard_hashicorp_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_ADDR", "http://nomad.internal:4646")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "consul.internal:8501")
    monkeypatch.setenv("VAULT_ADDR", "https://vault.internal:8200")
    monkeypatch.setenv("NOMAD_TOKEN", "s3cr3t")
    s = Settings()
    assert s.nomad_addr == "http://nomad.internal:4646"
    assert s.consul_addr == "http://consul.internal:8501"  # scheme added
    assert s.hostport("consul") == ("http", "consul.internal", 8501)
    assert s.vault_addr == "https://vault.internal:8200"
    assert s.nomad_token is not None and s.nomad_token.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(s)  # secrets never show up when settings are printed


def test_billowin_prefix_wins_over_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_ADDR", "http://other:4646")
    monkeypatch.setenv("BILLOWIN_NOMAD_ADDR", "http://mine:4646")
    assert Settings().nomad_addr == "http://mine:4646"


def test_settings_are_injected_not_global() -> None:
    a = Settings(domain="example.com")
    b = Settings()
    assert (a.domain, b.domain) == ("example.com", "localhost")


def test_an_unknown_install_method_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLOWIN_INSTALL_METHOD", "curl-pipe-sh")
    with pytest.raises(ValueError, match="BILLOWIN_INSTALL_METHOD"):
        Settings()


def test_generic_environment_variables_never_configure_billowin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell with GITHUB_TOKEN, DOMAIN or PIPELINE set for something else leaves Billowin alone;
    only BILLOWIN_* and the documented NOMAD_*/CONSUL_*/VAULT_* fallbacks count."""
    for name, value in {
        "GITHUB_TOKEN": "ghp_not-for-billowin",
        "DOMAIN": "evil.example",
        "REGISTRY": "evil.example:5000",
        "PIPELINE": "false",
        "github_webhook_secret": "lowercase",
        "STATE_DIR": "/tmp/elsewhere",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.github_token is None and settings.github_webhook_secret is None
    assert (settings.domain, settings.registry, settings.pipeline) == ("localhost", "127.0.0.1:5000", True)
    assert str(settings.state_dir) != "/tmp/elsewhere"
    monkeypatch.setenv("BILLOWIN_DOMAIN", "apps.example.com")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.0.0.1:8500")
    assert Settings().domain == "apps.example.com"
    assert Settings().consul_addr == "http://10.0.0.1:8500"
