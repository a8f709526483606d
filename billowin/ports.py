"""The small typed interfaces the rest of Billowin depends on.

Each real system has one adapter under ``billowin.adapters`` implementing
these protocols; ``billowin.system.System`` builds the adapters and is the
only module outside ``billowin.adapters`` that names them. Stores, the
pipeline, the platform, monitoring, the API and the CLI are typed on these,
so a system can be swapped, or replaced by an in-memory fake in unit tests
(``tests/fakes.py``), without touching them.

    Probe              health of one real system (/health)
    KeyValueStore      small records with check-and-set and blocking waits (Consul KV)
    Sessions           locks that die with their holder (Consul sessions)
    Coordinator        both: what the durable pipeline needs
    ServiceRegistry    where healthy instances are (Consul catalog and checks)
    ClusterMembers     the agents of the cluster's gossip pool (Consul members: force-leave)
    Router             the HTTP router: health and configuration checks (HAProxy)
    Scheduler          jobs, allocations and client nodes (Nomad)
    ConfigStore        apps' config vars as numbered versions (Nomad Variables, Vault)
    ContainerEngine    images, containers and their logs on this machine (Docker Engine)
    ImageRegistry      where images are pushed for Nomad clients to pull (the registry)
    ImageBuildTool     runs an image template, streaming its output (Packer)
    ImageRecipe        a fetched source tree → a local app image (Packer on a language image;
                       the app's own Dockerfile with BuildKit)
    RuntimeProvider    where a language runtime comes from (Debian's suites, the npm registry, the
                       Go proxy, the publishers' archives)
    AppBuilder         a repository at one commit → a pushed image (in this process, or a child)
    CommitStatuses     reports a deploy back to the forge (GitHub commit statuses)
    Deployments        a review app's deployment and its URL on the forge (GitHub deployments)
    CertificateStore   certificates, their keys and the ACME account (Consul KV; Vault later)
    CertificateAuthority  orders certificates (an ACME CA: Let's Encrypt, pebble in tests)
    ChallengeSolver    proves control of a name to the CA (HTTP-01 on Consul KV, DNS-01 by RFC 2136)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydantic import SecretStr

    from billowin.build.builder import BuildRecord


@dataclass(frozen=True)
class ComponentHealth:
    """What ``/health`` says about one real system."""

    name: str
    ok: bool
    version: str | None = None
    address: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Instance:
    """One healthy instance of a service, as the service registry sees it."""

    service: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    node: str = ""


@dataclass(frozen=True)
class DeployResult:
    job_id: str
    status: str  # successful | failed | cancelled | no-deployment
    description: str = ""
    deployment_id: str | None = None
    job_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Probe(Protocol):
    def health(self) -> ComponentHealth: ...


@dataclass(frozen=True)
class KVEntry:
    """One key with the index of its last change (for callers that cache parsed records)."""

    key: str
    modify_index: int
    value: bytes


@dataclass(frozen=True)
class KVWrite:
    """One write of a ``kv_txn`` transaction; ``cas`` as in ``kv_put`` (``None``: unconditional)."""

    key: str
    value: bytes
    cas: int | None = None


class KeyValueStore(Protocol):
    """Billowin's own small records (Consul KV).

    Keys are ``/``-separated paths. ``cas`` is check-and-set on the key's modify
    index: 0 means "only if the key does not exist yet".

    Every key and prefix is checked before anything is sent: parts of letters,
    digits, ``-``, ``_`` and ``.``, none empty, ``.`` or ``..``, no leading ``/``
    (a prefix may end in one ``/``; the empty prefix, everything, only for reads).
    Anything else raises ``InvalidInput``.
    """

    def kv_get(self, key: str) -> tuple[int, bytes | None]:
        """``(modify_index, value)``; ``(0, None)`` when the key does not exist."""
        ...

    def kv_put(self, key: str, value: bytes, *, cas: int | None = None) -> bool:
        """Write ``value``; with ``cas`` only if the modify index is still ``cas``. Whether it was written."""
        ...

    def kv_list(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every ``(key, value)`` under ``prefix``, in key order."""
        ...

    def kv_entries(self, prefix: str) -> list[KVEntry]:
        """Every key under ``prefix`` with its modify index and value, in key order."""
        ...

    def kv_keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (no values), in key order."""
        ...

    def kv_wait(self, prefix: str, index: int | None, wait: str = "30s") -> int:
        """Block until something under ``prefix`` changes after ``index`` (or ``wait`` passes).

        Returns the new index; pass it back in to wait for the next change.
        """
        ...

    def kv_list_wait(self, prefix: str, index: int | None, wait: str = "30s") -> tuple[int, list[KVEntry]]:
        """``kv_wait`` and then every entry under ``prefix``, read in one answer (at once for
        ``None``): the new index and the entries it belongs to."""
        ...

    def kv_delete_tree(self, prefix: str) -> None: ...

    def kv_txn(self, writes: Sequence[KVWrite]) -> bool:
        """Apply every write or none, atomically (Consul's ``/v1/txn``).

        False, and nothing written, when any write's ``cas`` does not hold.
        """
        ...


class Sessions(Protocol):
    """Locks that disappear when their holder stops renewing them (Consul sessions)."""

    def session_create(self, name: str, ttl: int = 15) -> str: ...

    def session_renew(self, session: str) -> bool:
        """Whether the session still exists (a lost session has lost its locks)."""
        ...

    def session_destroy(self, session: str) -> None:
        """End the session; every lock it held is released (its keys are deleted)."""
        ...

    def kv_acquire(self, key: str, session: str, value: bytes = b"") -> bool:
        """Take the lock ``key`` for ``session``; False when another session holds it."""
        ...

    def kv_release(self, key: str, session: str) -> None: ...


class Coordinator(KeyValueStore, Sessions, Protocol):
    """Records, blocking waits and locks: everything the durable pipeline needs of Consul."""


class Router(Probe, Protocol):
    """The HTTP router (HAProxy)."""

    def check_config(self, path: Path) -> str | None:
        """``None`` when ``path`` is a configuration the router accepts, else why not."""
        ...


class Scheduler(Probe, Protocol):
    """Runs jobs (Nomad)."""

    def parse(self, hcl: str) -> dict[str, Any]: ...

    def current(self, job_id: str) -> dict[str, Any] | None: ...

    def plan(self, job: dict[str, Any]) -> dict[str, Any]: ...

    def submit(self, job: dict[str, Any], *, expect_modify_index: int | None = None) -> str: ...

    def wait_for_deployment(
        self, job_id: str, *, timeout: float, after_version: int | None = None
    ) -> DeployResult: ...

    def scale(self, job_id: str, group: str, count: int, *, message: str = "") -> None: ...

    def restart(self, job_id: str, group: str | None = None) -> int: ...

    def stop(self, job_id: str, *, purge: bool = True) -> None: ...

    def jobs(self) -> list[dict[str, Any]]:
        """Every job's stub (``ID``, ``Type``, ``Stop``, ``JobModifyIndex``…)."""
        ...

    def allocations(self, job_id: str) -> list[dict[str, Any]]:
        """The job's allocations, in any state."""
        ...

    def all_allocations(self) -> list[dict[str, Any]]:
        """Every allocation of every job, in any state."""
        ...

    def live_allocations(self) -> list[dict[str, Any]]:
        """Allocations on any node that are still pending or running."""
        ...

    def allocation(self, alloc_id: str) -> dict[str, Any]: ...

    def allocation_stats(self, alloc_id: str) -> dict[str, Any]:
        """The allocation's resource usage (``ResourceUsage``: CPU and memory)."""
        ...

    # -- builds on Nomad (billowin/build/on_nomad.py) --
    def put_variable(self, path: str, items: Mapping[str, str]) -> None:
        """Write the Nomad Variable ``path`` (a job's tasks may read ``nomad/jobs/<job>``)."""
        ...

    def delete_variable(self, path: str) -> None:
        """Delete it; nothing when there is none."""
        ...

    def task_output(self, alloc_id: str, task: str, stream: str, offset: int) -> bytes:
        """What ``task`` wrote to ``stream`` (``stdout``/``stderr``) from byte ``offset`` on, so far."""
        ...

    def allocation_file(self, alloc_id: str, path: str) -> str | None:
        """A file of the allocation's directory (``alloc/…``), ``None`` if there is none."""
        ...

    # -- client nodes (billowin/nodes.py) --
    def nodes(self) -> list[dict[str, Any]]:
        """Every client node's stub (``ID``, ``Name``, ``Address``, ``Status``, ``Drain``,
        ``SchedulingEligibility``, ``NodeClass``…); ``node`` has the rest."""
        ...

    def node(self, node_id: str) -> dict[str, Any]:
        """One node in full (``Meta``, ``Attributes``, ``DrainStrategy``, ``LastDrain``…), never its
        ``SecretID``; ``NotFound`` when Nomad does not know it."""
        ...

    def node_allocations(self, node_id: str) -> list[dict[str, Any]]:
        """The node's allocations, in any state, with their ``AllocatedResources``."""
        ...

    def drain_node(self, node_id: str, *, deadline: float, meta: Mapping[str, str] | None = None) -> None:
        """Start (or update) a drain: the node becomes ineligible, its allocations move elsewhere
        (system jobs' last), and whatever is left after ``deadline`` seconds is stopped."""
        ...

    def activate_node(self, node_id: str) -> None:
        """End any drain and make the node eligible for new allocations again."""
        ...

    def purge_node(self, node_id: str) -> None:
        """Forget the node (a live client registers again at its next heartbeat)."""
        ...


class ServiceRegistry(Probe, Protocol):
    """Knows where healthy instances are (Consul)."""

    def healthy_instances(self, service: str) -> list[Instance]: ...

    def wait_for_healthy(self, service: str, *, count: int, timeout: float) -> list[Instance]: ...

    def health_checks(self) -> list[dict[str, Any]]:
        """Every health check in the catalog (``ServiceName``, ``ServiceID``, ``Status``…)."""
        ...


class ClusterMembers(Protocol):
    """The agents of the cluster's gossip pool (Consul's LAN members)."""

    def force_leave(self, node: str, *, prune: bool = True) -> None:
        """Move a gone node's agent to "left" (``prune``: out of the member list altogether), so
        Consul stops trying to reach it; ``NotFound`` when it is no member."""
        ...


class ConfigStore(Probe, Protocol):
    """Where an app's config vars live, as immutable numbered versions (Nomad Variables or Vault KV v2).

    Every change writes a whole new version; a release pins the version it runs,
    so a rollback restores the config along with the image.
    """

    backend: str  # "nomad" | "vault"

    def write(self, app: str, values: Mapping[str, str]) -> int:
        """Store ``values`` as the app's next version; returns its number (1, 2, …)."""
        ...

    def read(self, app: str, version: int) -> dict[str, str]:
        """The values of one version; ``NotFound`` when it does not exist."""
        ...

    def latest(self, app: str) -> tuple[int, dict[str, str]]:
        """The newest version and its values; ``(0, {})`` for an app without config."""
        ...

    def delete(self, app: str) -> None:
        """Remove every version of the app's config (``apps:destroy``)."""
        ...

    def template(self, app: str, version: int) -> str:
        """A Nomad ``template`` body that renders the version as ``KEY="value"`` env-file lines."""
        ...

    def job_vault_policies(self, app: str) -> list[str]:
        """Vault policies ``app``'s jobs need to read its config, and no other app's (none for Nomad)."""
        ...


class ContainerEngine(Probe, Protocol):
    """Images and containers on this machine (Docker Engine)."""

    def image_exists(self, ref: str) -> bool: ...

    def push(self, ref: str) -> str:
        """Push ``ref`` to its registry; returns the pushed ``sha256:`` digest."""
        ...

    def remove_image(self, ref: str) -> None: ...

    def running_containers(self, *, label: str) -> int:
        """How many containers with ``label`` (``key=value``) are running."""
        ...

    def remove_containers(self, *, label: str) -> int: ...

    def volume_exists(self, name: str) -> bool: ...

    def remove_volume(self, name: str) -> bool:
        """Remove a volume and its data; False if there was none."""
        ...

    def remove_volumes(self, *, label: str) -> list[str]:
        """Remove every volume labelled ``key=value``; the names removed."""
        ...

    def remove_exited(self, *, label: str, finished_before: float) -> int:
        """Remove exited containers with ``label`` that stopped before that Unix time."""
        ...

    def logs(
        self, name: str, stream: str, *, tail: int | None, since: float | None, follow: bool
    ) -> LogStream:
        """Container ``name``'s ``stdout`` or ``stderr``: the last ``tail`` lines (``None``: all)
        after ``since``, then (``follow``) new ones until it stops. ``NotFound`` if it is gone."""
        ...


class LogStream(Protocol):
    """Lines as ``(unix time, text without the newline)``; ``close()`` ends it from any thread."""

    def __iter__(self) -> Iterator[tuple[float, bytes]]: ...

    def close(self) -> None: ...


class ExecSession(Protocol):
    """One command running in a task (``TaskExec.open``): its stdin, its output, its exit code."""

    exit_code: int | None

    def write(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def resize(self, rows: int, cols: int) -> None: ...

    def output(self) -> Iterator[tuple[str, bytes]]:
        """``(stdout|stderr, bytes)`` as they come; ends once the command exited (``exit_code``)."""
        ...

    def close(self) -> None: ...


class TaskExec(Protocol):
    """Commands inside a running task, as ``nomad alloc exec`` runs them."""

    def open(self, alloc_id: str, task: str, command: Sequence[str], *, tty: bool = False) -> ExecSession: ...

    def run(
        self,
        alloc_id: str,
        task: str,
        command: Sequence[str],
        *,
        stdin: Iterable[bytes] = (),
        stdout: IO[bytes] | None = None,
    ) -> tuple[int, str]:
        """Run to the end; the exit code and the end of its stderr."""
        ...


class ImageRegistry(Probe, Protocol):
    """The registry Nomad clients pull from."""

    def delete(self, repository: str, digest: str) -> None: ...

    def tags(self, repository: str) -> list[str]: ...


class ImageBuildTool(Protocol):
    """Runs one image template (Packer); ``BuildFailed`` carries the tail of its output."""

    def version(self) -> str: ...

    def build(
        self, template: str, variables: dict[str, str], *, log: Callable[[str], None], timeout: float = 900
    ) -> list[str]: ...


@dataclass(frozen=True)
class ImageJob:
    """What an ``ImageRecipe`` builds: ``src`` (the fetched tree, already detected as ``spec``)
    into the local image ``repository:tag``, with ``cache`` kept between the app's builds and
    ``scratch`` for anything of this build's own."""

    app: str
    sha: str
    src: Path
    spec: Any  # build.detect.AppSpec
    repository: str
    tag: str
    cache: Path
    scratch: Path

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class BuiltImage:
    """What a recipe found out while building: the runtime it chose (``"python 3.14.8"``, with
    where it came from) and the port the image says it listens on (a Dockerfile's ``EXPOSE``)."""

    runtime: str | None = None
    runtime_source: str | None = None  # the file that asked for it; None for the default
    port: int | None = None


class ImageRecipe(Protocol):
    """One way of turning a source tree into an image (``build/packer_images.py``,
    ``build/dockerfile.py``); ``Builder`` picks one per build from what ``detect`` found, and
    does the fetch, the record, the push and the clean-up around it the same for both."""

    name: str

    def build_image(self, job: ImageJob, log: Callable[[str], None]) -> BuiltImage: ...


@dataclass(frozen=True)
class RuntimeFiles:
    """What a provider gives a language image: the Debian suite whose base image it goes on,
    packages to install from that suite, and a directory copied into ``/usr/local``."""

    suite: str
    packages: tuple[str, ...] = ()
    tree: Path | None = None
    label: str = ""  # where it came from, for people: "debian trixie", "npm registry"


class RuntimeProvider(Protocol):
    """One source of language runtimes (``build/runtimes/providers.py``). ``offered`` and
    ``defaults`` raise ``build.runtimes.fetch.Unreachable`` when the source cannot be reached."""

    name: str

    def offered(self, language: str) -> list[str]: ...

    def defaults(self, language: str) -> list[str]: ...  # the versions fit to be a default

    def suite(self, language: str, version: str) -> str: ...  # the Debian base it goes on

    def fetch(self, language: str, version: str, log: Callable[[str], None]) -> RuntimeFiles: ...


class AppBuilder(Protocol):
    """Builds ``repository`` at ``sha`` into ``<registry>/<app>:<sha>`` and pushes it
    (``build.builder.Builder`` in this process; ``build.isolated.ProcessBuilder`` in a child)."""

    def build(
        self,
        app: str,
        repository: str,
        sha: str,
        *,
        token: SecretStr | None = None,
        log: Callable[[str], None] = ...,
    ) -> BuildRecord: ...

    def remove_stale_build_containers(self) -> int: ...


class CommitStatuses(Protocol):
    """Tells the forge how a deploy of a commit is going (GitHub commit statuses)."""

    def report(
        self, repository: str, sha: str, state: str, description: str, target_url: str | None
    ) -> None: ...


class Deployments(Protocol):
    """Tells the forge of an environment's deployments (GitHub deployments and their statuses)."""

    def create_deployment(self, repository: str, sha: str, environment: str, description: str) -> int: ...

    def deployment_status(
        self, repository: str, deployment: int, state: str, description: str, environment_url: str | None
    ) -> None: ...


# -- certificates (billowin/certs/) -------------------------------------------------------------
@dataclass(frozen=True)
class CertificateRecord:
    """What is known of one certificate, as ``certs`` shows it: never its private key (``KeyPair``).

    ``status`` is the last attempt's outcome: ``pending`` (an order is under way), ``valid``
    (issued; ``not_after`` says until when) or ``failed`` (``last_error`` says why, and nothing
    is ordered again before ``next_attempt``). A failed renewal keeps the previous dates, chain
    and key: the router serves the old certificate until it expires.
    """

    id: str  # the KV key part: the first name, a wildcard's "*." as "_wildcard."
    names: tuple[str, ...]
    status: str = "pending"  # pending | valid | failed
    source: str = "acme"  # acme | uploaded (certs:add)
    issuer: str = ""
    serial: str = ""
    not_before: datetime | None = None
    not_after: datetime | None = None
    last_error: str = ""
    hint: str = ""
    failures: int = 0  # failed attempts in a row
    next_attempt: datetime | None = None
    updated_at: datetime | None = None
    failing_since: datetime | None = None  # the first failure of the current run of failures


@dataclass(frozen=True)
class KeyPair:
    """A certificate's chain (leaf first, then intermediates) and its private key, both PEM."""

    chain_pem: str
    key_pem: str = field(repr=False)


@dataclass(frozen=True)
class AcmeAccount:
    """Billowin's account with one ACME directory; ``key_json`` is its private JWK."""

    directory: str
    uri: str
    key_json: str = field(repr=False)
    email: str = ""


@dataclass(frozen=True)
class PendingChallenge:
    """One challenge the CA is about to check, with everything either kind of solver needs."""

    kind: str  # "http-01" | "dns-01"
    name: str  # the name validated (for a wildcard, the name under the "*.")
    token: str
    key_authorization: str  # HTTP-01: the body of GET /.well-known/acme-challenge/<token>
    txt_name: str  # DNS-01: "_acme-challenge.<name>"
    txt_value: str  # DNS-01: the TXT record's value


class SecretStore(Protocol):
    """Named secrets, each write a new numbered version (Vault's KV v2: ``VaultSecrets``)."""

    def put(self, name: str, data: Mapping[str, str]) -> int:
        """Write a new version; its number."""
        ...

    def get(self, name: str, version: int | None = None) -> dict[str, str] | None:
        """That version (default: the newest); None when there is none."""
        ...

    def delete(self, name: str) -> None:
        """Every version; nothing when there is none."""
        ...


class CertificateStore(Protocol):
    """Certificates, their private keys and the ACME account, kept once for every router node.

    Only ``key_pair`` and ``account`` answer secrets; ``get`` and ``all`` never do, and nothing
    here logs one. A Vault implementation keeps ``KeyPair`` and ``AcmeAccount`` in Vault and may
    keep the records where it likes.
    """

    backend: str  # "consul" | "vault"

    def get(self, cert_id: str) -> CertificateRecord | None: ...

    def all(self) -> list[CertificateRecord]:
        """Every certificate's record, by id; no key."""
        ...

    def save(self, record: CertificateRecord, pair: KeyPair | None = None) -> None:
        """Write the record; with ``pair``, the chain and key too, all at once or not at all."""
        ...

    def key_pair(self, cert_id: str) -> KeyPair | None:
        """The chain and private key (for the router); None when none was issued yet."""
        ...

    def delete(self, cert_id: str) -> None: ...

    def account(self) -> AcmeAccount | None: ...

    def save_account(self, account: AcmeAccount) -> None: ...


class ChallengeSolver(Protocol):
    """Proves control of names to the CA, one kind of challenge (``kind``)."""

    kind: str  # "http-01" | "dns-01"

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        """Make every challenge answerable (and, for DNS, visible) before the CA is told to look."""
        ...

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        """Take them down again; never raises (a leftover answer is harmless and short-lived)."""
        ...


class CertificateAuthority(Protocol):
    """An ACME CA: accounts and orders (``billowin.adapters.acme``)."""

    directory_url: str

    def register(self, email: str, *, eab_kid: str = "", eab_hmac_key: str = "") -> AcmeAccount:
        """A new account (with External Account Binding when ``eab_kid`` is given)."""
        ...

    def order(
        self,
        account: AcmeAccount,
        names: Sequence[str],
        key_pem: bytes,
        solvers: Mapping[str, ChallengeSolver],
    ) -> str:
        """Order a certificate for ``names`` and ``key_pem``, solving its challenges with ``solvers``
        (by kind); the issued chain, PEM, leaf first. ``AccountUnknown`` when the CA forgot the account."""
        ...
