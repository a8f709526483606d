"""ACLs of a production box: bootstrap Consul and Nomad once, then one scoped token per component.

Consul and Nomad run with ACLs on and nothing allowed to anonymous callers, so a
process on the host or in an app container can neither read Billowin's state in
Consul KV nor submit Nomad jobs. At the first start this module bootstraps both
systems and keeps their bootstrap (management) tokens under ``secrets/`` for the
admin; nothing in Billowin uses them after that but backups and restores
(:mod:`billowin.stack.backup`: Consul's and Nomad's snapshots need management tokens).
Each component gets its own token:

=====================  ==========================================================
``consul-agent``       Consul's own agent: register its node (``node: write``)
``consul-nomad``       Nomad registering app services (``service: write``)
``consul-router``      consul-template reading services and health (read only)
``consul-api``         the API: Billowin's KV tree, sessions (locks), health reads
``nomad-router``       the router's reload cross-checking running apps (read only)
``nomad-api``          the API: a separate management token, because Billowin binds
                       an ACL policy to each job it submits, so that the job's tasks
                       can read that app's config vars, and only Nomad's management
                       tokens may write ACL policies
=====================  ==========================================================

Every step is idempotent: a later start checks each token and makes again only
what is missing. A secret is written to disk (mode 0600) *before* the system
learns it wherever the system lets us choose it (all of Consul's, Nomad's
bootstrap token), so a crash in between never leaves a token that nobody holds.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import consul
import nomad
import nomad.api.exceptions as nomad_exc

from billowin.errors import ServiceError
from billowin.stack.process import write_private

# The policies, one file each (policies/README.md says who carries which, and why); the
# Terraform module terraform/platform reads the same files. Consul reads rules in JSON as well
# as HCL; py-consul sends them as JSON.
POLICIES = Path(__file__).with_name("policies")
CONSUL_POLICIES: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text()) for path in sorted((POLICIES / "consul").glob("*.json"))
}
# token file name -> the Consul policy it carries
CONSUL_TOKENS = {
    "consul-agent": "billowin-agent",
    "consul-nomad": "billowin-nomad",
    "consul-router": "billowin-router",
    "consul-api": "billowin-api",
    "consul-dns": "billowin-dns",
}
NOMAD_ROUTER_POLICY = (POLICIES / "nomad" / "billowin-router.hcl").read_text()

BOOTSTRAP_HINT = (
    "ACLs were bootstrapped before, but the bootstrap token in {path} is gone. Restore the file from a "
    "backup (`billowin restore`), or reset the bootstrap as the {system} documentation describes."
)


class Secrets:
    """The secrets directory of a box: one file per token or key, mode 0600, in a 0700 directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.token" if not name.endswith(".key") else self.dir / name

    def get(self, name: str) -> str | None:
        try:
            return self.path(name).read_text().strip() or None
        except FileNotFoundError:
            return None

    def ensure(self, name: str) -> str:
        """The secret ``name``, made (a random UUID) if there is none yet."""
        value = self.get(name)
        if value is None:
            value = str(uuid.uuid4())
            self.put(name, value)
        return value

    def put(self, name: str, value: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        write_private(self.path(name), value + "\n")


def _retry(what: str, fn: Callable[[], Any], timeout: float = 30) -> Any:
    """Call ``fn`` until it stops failing: an ACL system answers "not ready" for a moment after
    the leader is elected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (consul.ConsulException, nomad_exc.BaseNomadException, OSError) as exc:
            if time.monotonic() > deadline:
                raise ServiceError(what, f"ACL setup failed: {exc}") from exc
            time.sleep(0.5)


# -- Consul ----------------------------------------------------------------------
def consul_client(address: str, token: str | None) -> consul.Consul:
    host, _, port = address.removeprefix("http://").partition(":")
    return consul.Consul(host=host, port=int(port), token=token)


def ensure_consul_acls(address: str, secrets: Secrets) -> None:
    """Make sure every component's Consul token exists, with its policy.

    Consul makes the bootstrap token itself, from ``acl.tokens.initial_management`` in its
    configuration (its secret written by :meth:`Secrets.ensure` before Consul first starts),
    and its agent uses ``acl.tokens.agent``, made here.
    """
    boot = secrets.get("consul-bootstrap")
    if boot is None:
        raise ServiceError(
            "consul",
            f"no bootstrap token in {secrets.dir}",
            hint=BOOTSTRAP_HINT.format(path=secrets.dir, system="Consul"),
        )
    admin = consul_client(address, boot)
    _retry("consul", lambda: admin.acl.token.read_self())
    policies = {p["Name"]: p for p in admin.acl.policy.list()}
    for name, rules in CONSUL_POLICIES.items():
        if name in policies:
            admin.acl.policy.update(policies[name]["ID"], name, rules=rules)
        else:
            admin.acl.policy.create(name, rules=rules, description="made by billowin")
    existing = {t.get("Description"): t for t in admin.acl.token.list()}
    for token_name, policy in CONSUL_TOKENS.items():
        secret = secrets.ensure(token_name)
        description = f"billowin {token_name}"
        found = existing.get(description)
        if found is not None and _consul_token_works(address, secret):
            continue
        if found is not None:
            admin.acl.token.delete(found["AccessorID"])
        admin.acl.token.create(secret_id=secret, policies_name=[policy], description=description)


def _consul_token_works(address: str, secret: str) -> bool:
    try:
        consul_client(address, secret).acl.token.read_self()
    except consul.ConsulException:
        return False
    return True


# -- Nomad -----------------------------------------------------------------------
def nomad_client(address: str, token: str | None) -> nomad.Nomad:
    return nomad.Nomad(address=address, token=token, timeout=10)


def ensure_nomad_acls(address: str, secrets: Secrets) -> None:
    """Bootstrap Nomad's ACLs with the box's bootstrap secret when they are not yet (a new box,
    or a Nomad whose data was wiped or is about to be restored), then make the router's and the
    API's tokens."""
    boot = secrets.ensure("nomad-bootstrap")  # on disk before Nomad learns it
    if not _nomad_token_works(address, boot):
        anonymous = nomad_client(address, None)
        try:
            _retry(
                "nomad",
                lambda: anonymous.acl.request("bootstrap", method="post", json={"BootstrapSecret": boot}),
                timeout=10,
            )
        except ServiceError as exc:
            # Bootstrapped already: with our secret (its ACL system was not ready a moment
            # ago), or with another one (the secret file does not belong to this Nomad).
            try:
                _retry("nomad", lambda: nomad_client(address, boot).acl.get_self_token(), timeout=10)
            except ServiceError:
                raise ServiceError(
                    "nomad", exc.message, hint=BOOTSTRAP_HINT.format(path=secrets.dir, system="Nomad")
                ) from exc
    admin = nomad_client(address, boot)
    _retry("nomad", lambda: admin.acl.get_self_token())
    admin.acl.create_policy(
        "billowin-router",
        {"Name": "billowin-router", "Description": "made by billowin install", "Rules": NOMAD_ROUTER_POLICY},
    )
    wanted: dict[str, dict[str, Any]] = {
        "nomad-router": {"Name": "billowin nomad-router", "Type": "client", "Policies": ["billowin-router"]},
        "nomad-api": {"Name": "billowin nomad-api", "Type": "management"},
    }
    for token_name, spec in wanted.items():
        secret = secrets.get(token_name)
        if secret is not None and _nomad_token_works(address, secret):
            continue
        for old in admin.acl.get_tokens():
            if old.get("Name") == spec["Name"]:
                admin.acl.delete_token(old["AccessorID"])
        made = admin.acl.create_token(spec)
        secrets.put(token_name, str(made["SecretID"]))


def _nomad_token_works(address: str, secret: str) -> bool:
    try:
        nomad_client(address, secret).acl.get_self_token()
    except nomad_exc.BaseNomadException:
        return False
    return True
