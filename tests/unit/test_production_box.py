"""The production box's configuration, rendered offline: durable state, ACLs, secrets kept private."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from billowin.stack.process import read_env_file
from billowin.stack.production import ProductionBox, clear_stale_docker_pidfiles
from billowin.stack.single_box import Ports
from billowin.stack.tools import Toolset

TOOLS = Toolset(*(Path(sys.executable),) * 8)  # never run here: only their paths are rendered


def box(root: Path, **kw: object) -> ProductionBox:
    made = ProductionBox(TOOLS, root, domain="example.org", public_address="203.0.113.7", **kw)  # type: ignore[arg-type]
    made.write_configs()
    return made


def test_all_state_lives_under_the_root(tmp_path: Path) -> None:
    b = box(tmp_path, own_docker=True)
    consul = json.loads((tmp_path / "etc" / "consul.json").read_text())
    nomad = json.loads((tmp_path / "etc" / "nomad.json").read_text())
    assert consul["data_dir"] == str(tmp_path / "consul")
    assert nomad["data_dir"] == str(tmp_path / "nomad")
    registry = json.loads((tmp_path / "etc" / "registry.yml").read_text())
    assert registry["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "registry")
    api = read_env_file(tmp_path / "etc" / "api.env")
    assert api["BILLOWIN_STATE_DIR"] == str(tmp_path / "billowin")  # monitoring db, audit, build logs
    assert api["BILLOWIN_BUILD_CACHE_DIR"] == str(tmp_path / "cache")
    dockerd = b.dockerd().argv
    assert dockerd[dockerd.index("--data-root") + 1] == str(tmp_path / "docker")


def test_consul_and_nomad_are_servers_with_acls_that_deny_by_default(tmp_path: Path) -> None:
    box(tmp_path)
    consul = json.loads((tmp_path / "etc" / "consul.json").read_text())
    assert consul["server"] is True and consul["bootstrap_expect"] == 1
    assert consul["acl"]["enabled"] is True and consul["acl"]["default_policy"] == "deny"
    assert consul["encrypt"]  # gossip encryption
    assert consul["client_addr"] == "127.0.0.1"  # the HTTP API is not on a public address
    nomad = json.loads((tmp_path / "etc" / "nomad.json").read_text())
    assert nomad["server"]["enabled"] and nomad["client"]["enabled"]
    assert nomad["acl"]["enabled"] is True
    assert nomad["bind_addr"] == "127.0.0.1"
    assert nomad["client"]["network_interface"] == "lo"  # apps' ports: loopback, behind the router


def test_the_router_listens_on_the_public_address_and_serves_the_api_by_name(tmp_path: Path) -> None:
    box(tmp_path, ports=Ports(router_http=80, api=8000))
    env = read_env_file(tmp_path / "etc" / "router.env")
    assert env["BILLOWIN_ROUTER_BIND"] == "203.0.113.7:80"
    assert env["BILLOWIN_API_HOSTNAME"] == "billowin.example.org"
    assert env["BILLOWIN_API_BACKEND"] == "127.0.0.1:8000"


def test_the_bootstrap_tokens_are_kept_and_given_to_no_component(tmp_path: Path) -> None:
    b = box(tmp_path)
    b.secrets.put("consul-api", "api-secret")
    b.secrets.put("nomad-bootstrap", "nomad-boot")
    b.write_configs()
    boot = b.secrets.get("consul-bootstrap")
    assert boot
    api = (tmp_path / "etc" / "api.env").read_text()
    router = (tmp_path / "etc" / "router.env").read_text()
    assert "api-secret" in api
    for text in (api, router, (tmp_path / "etc" / "consul-template.hcl").read_text()):
        assert boot not in text and "nomad-boot" not in text
    assert b.admin_env()["CONSUL_HTTP_TOKEN"] == boot


def test_secrets_and_files_with_tokens_are_private(tmp_path: Path) -> None:
    box(tmp_path)
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    secrets = list((tmp_path / "secrets").iterdir())
    assert secrets
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for name in ("consul.json", "nomad.json", "consul-template.hcl", "api.env", "router.env"):
        assert stat.S_IMODE((tmp_path / "etc" / name).stat().st_mode) == 0o600, name


def test_configs_are_rendered_again_without_changing_the_secrets(tmp_path: Path) -> None:
    b = box(tmp_path)
    before = {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()}
    b.write_configs()
    box(tmp_path)  # a new box object on the same root: an upgrade, or the next boot
    assert {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()} == before


def test_supervised_processes_read_the_same_environment_files_as_their_units(tmp_path: Path) -> None:
    b = box(tmp_path, own_docker=True)
    plan = {p.name: p for p in b.plan()}
    assert list(plan) == ["dockerd", "registry", "consul", "nomad", "haproxy", "consul-template", "api"]
    assert plan["api"].env_file == tmp_path / "etc" / "api.env"
    assert plan["consul-template"].env_file == tmp_path / "etc" / "router.env"
    assert all(not p.env for p in plan.values())  # everything through files, nothing only in memory


def test_a_stale_docker_pidfile_is_cleared_and_a_live_one_kept(tmp_path: Path) -> None:
    box(tmp_path, own_docker=True)
    exec_root = tmp_path / "run" / "docker"
    (exec_root / "containerd").mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "30"])  # a process that got a recycled pid
    try:
        (exec_root / "dockerd.pid").write_text(str(stranger.pid))
        (exec_root / "containerd" / "containerd.pid").write_text("999999999")
        clear_stale_docker_pidfiles(exec_root)
        assert not (exec_root / "dockerd.pid").exists()
        assert not (exec_root / "containerd" / "containerd.pid").exists()
        (exec_root / "dockerd.pid").write_text(str(os.getpid()))  # not ours either
        clear_stale_docker_pidfiles(exec_root)
        assert not (exec_root / "dockerd.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_on_a_production_box_the_token_verbs_use_its_consul_and_the_apis_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billowin.cli.platform import host_settings

    b = box(tmp_path, ports=Ports(consul_http=18500))
    b.secrets.put("consul-api", "the-api-token")
    b._write_manifest()
    monkeypatch.setenv("BILLOWIN_ROOT", str(tmp_path))
    for var in ("BILLOWIN_CONSUL_TOKEN", "CONSUL_HTTP_TOKEN", "BILLOWIN_CONSUL_ADDR", "CONSUL_HTTP_ADDR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("billowin.cli.platform.Toolset.resolve", lambda _settings: TOOLS)
    settings = host_settings()
    assert settings.consul_addr == "http://127.0.0.1:18500"
    assert settings.consul_token is not None and settings.consul_token.get_secret_value() == "the-api-token"
    monkeypatch.setenv("BILLOWIN_CONSUL_TOKEN", "by-hand")  # set by hand: it wins
    token = host_settings().consul_token
    assert token is not None and token.get_secret_value() == "by-hand"


def test_the_admins_settings_file_reaches_the_api_and_is_never_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billowin.settings import Settings

    b = box(tmp_path)
    b.settings_file.write_text(
        b.settings_file.read_text()
        + "BILLOWIN_GITHUB_WEBHOOK_SECRET=s3cret\nBILLOWIN_CONSUL_ADDR=http://evil:1\n"
    )
    b.write_configs()  # the next start, or an upgrade
    assert "s3cret" in b.settings_file.read_text()
    for key, value in read_env_file(tmp_path / "etc" / "api.env").items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.github_webhook_secret is not None
    assert settings.github_webhook_secret.get_secret_value() == "s3cret"
    assert settings.consul_addr == f"http://127.0.0.1:{b.ports.consul_http}"  # the box's own wins
    # HTTPS is on by default on a real box, and the admin can switch it off in this file.
    assert settings.acme_auto is True and settings.acme_api_name == f"billowin.{b.domain}"
