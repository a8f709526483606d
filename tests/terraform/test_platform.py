"""terraform/platform applied for real: on a production box's Nomad and Consul (ACLs on), its
router job serves an app Billowin deployed, a second plan changes nothing, and destroy removes
everything it made. The cloud modules are checked with their providers (fmt and validate)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billowin.stack.acl import consul_client, nomad_client
from billowin.stack.process import free_port
from billowin.stack.production import ProductionBox
from billowin.stack.single_box import SingleBox
from billowin.system import System
from tests.integration.conftest import wait_for
from tests.integration.production import DOMAIN, api_client, live, new_box, push_image, running

from .tofu import MODULES, Tofu


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionBox]:
    with running(new_box(tmp_path_factory.mktemp("tfbox") / "root")) as started:
        yield started


def deployed(box: ProductionBox, stack: SingleBox, base_image: str, work: Path) -> str:
    """An app, deployed by Billowin on ``box`` like a user would: its name."""
    name = f"tf{uuid.uuid4().hex[:8]}"
    token = System(box.settings).tokens.create("terraform test")
    image = push_image(stack.settings, base_image, box, name, "v1", work / name)
    with api_client(box, token) as api:
        assert api.post("/apps", json={"name": name, "repository": "/nonexistent"}).status_code == 201
        resp = api.post(f"/apps/{name}/deploys", json={"image": image})
        assert resp.status_code == 202, resp.text
        live(api, name, resp.json())
    return name


def page(port: int, host: str) -> str | None:
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": host}, timeout=5)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else f"HTTP {resp.status_code}"


def test_the_platform_module_runs_the_router_plans_clean_and_destroys_what_it_made(
    box: ProductionBox, stack: SingleBox, base_image: str, mirror: Path, tmp_path: Path
) -> None:
    app = deployed(box, stack, base_image, tmp_path / "images")
    prefix = f"tf{uuid.uuid4().hex[:6]}"
    port = free_port()
    root = tmp_path / "root"
    tofu = Tofu.in_dir(root, mirror)
    (root / "main.tf").write_text(
        # A relative source is used in place (an absolute one is copied, without the files the
        # module reads from the rest of the repository).
        f'module "platform" {{\n  source = {json.dumps(os.path.relpath(MODULES / "platform", root))}\n'
        "  nomad_address     = var.nomad_address\n  nomad_token       = var.nomad_token\n"
        "  consul_address    = var.consul_address\n  consul_token      = var.consul_token\n"
        "  domain            = var.domain\n  name_prefix       = var.name_prefix\n"
        "  router_http_port  = var.router_http_port\n  router_stats_port = var.router_stats_port\n"
        "  consul_dns_port   = var.consul_dns_port\n}\n"
        + "".join(
            f'variable "{v}" {{}}\n'
            for v in (
                "nomad_address",
                "nomad_token",
                "consul_address",
                "consul_token",
                "domain",
                "name_prefix",
                "router_http_port",
                "router_stats_port",
                "consul_dns_port",
            )
        )
        + 'output "router_job" {\n  value = module.platform.router_job\n}\n'
    )
    nomad_token = box.secrets.get("nomad-bootstrap")
    consul_token = box.secrets.get("consul-bootstrap")
    assert nomad_token and consul_token
    (root / "terraform.tfvars.json").write_text(
        json.dumps(
            {
                "nomad_address": f"http://127.0.0.1:{box.ports.nomad_http}",
                "nomad_token": nomad_token,
                "consul_address": f"127.0.0.1:{box.ports.consul_http}",
                "consul_token": consul_token,
                "domain": DOMAIN,
                "name_prefix": prefix,
                "router_http_port": port,
                "router_stats_port": free_port(),
                "consul_dns_port": box.ports.consul_dns,
            }
        )
    )
    tofu("init")
    applied = tofu("apply", "-auto-approve")
    print(applied.stdout[-2000:])
    assert json.loads(tofu("output", "-json").stdout)["router_job"]["value"] == f"{prefix}-router"

    # The router the module runs serves the app by name, from Consul's catalog, as Billowin's does.
    assert wait_for(lambda: page(port, f"{app}.{DOMAIN}"), 120, "the router job to serve the app").startswith(
        "hello release=v1"
    )
    assert page(port, f"nosuchapp.{DOMAIN}") == "HTTP 404"

    plan = tofu("plan", "-detailed-exitcode", ok=False)
    assert plan.returncode == 0, f"a second plan wants changes:\n{plan.stdout}\n{plan.stderr}"

    nomad = nomad_client(f"http://127.0.0.1:{box.ports.nomad_http}", nomad_token)
    consul = consul_client(f"http://127.0.0.1:{box.ports.consul_http}", consul_token)

    def made() -> set[str]:
        jobs = {j["ID"] for j in nomad.jobs.get_jobs() if j["ID"].startswith(prefix)}
        nomad_policies = {p["Name"] for p in nomad.acl.get_policies() if p["Name"].startswith(prefix)}
        consul_policies = {p["Name"] for p in consul.acl.policy.list() if p["Name"].startswith(prefix)}
        return jobs | nomad_policies | consul_policies

    assert made() == {
        f"{prefix}-router",
        *(f"{prefix}-{name}" for name in ("agent", "api", "dns", "nomad", "router")),
    }
    tofu("destroy", "-auto-approve")
    assert made() == set()
    assert page(port, f"{app}.{DOMAIN}") is None  # nothing listens there any more
    # Billowin's own router and policies are untouched.
    assert wait_for(
        lambda: page(box.ports.router_http, f"{app}.{DOMAIN}"), 30, "the box's router"
    ).startswith("hello release=v1")


@pytest.mark.parametrize("module", ["single-box", "cluster"])
def test_the_cloud_modules_are_formatted_and_valid_with_their_providers(
    module: str, mirror: Path, tmp_path: Path
) -> None:
    # A copy: init writes .terraform/ and a lock file, and neither belongs in the repository (a
    # lock file of providers built from source would not match the registry's builds).
    shutil.copytree(MODULES, tmp_path / "terraform")  # the modules share cloud-init.yaml.tftpl
    tofu = Tofu.in_dir(tmp_path / "terraform" / module, mirror)
    assert tofu("fmt", "-check", "-diff").stdout == ""
    assert "successfully initialized" in tofu("init", "-backend=false").stdout
    valid = tofu("validate", "-json", ok=False)
    assert json.loads(valid.stdout)["valid"] is True, valid.stdout
