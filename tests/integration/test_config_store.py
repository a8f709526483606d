"""The ``ConfigStore`` contract, run against both real back ends.

Every contract test runs twice: on the stack's real Nomad (Nomad Variables)
and on a real ``vault server -dev`` (KV v2). The template test deploys a real
batch job whose task reads its config vars from a Nomad ``template`` block, to
check the exact template syntax and that awkward values reach the task intact.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import hvac
import pytest
from pydantic import SecretStr

from billowin.adapters.docker import DockerEngine
from billowin.adapters.nomad import NomadScheduler, nomad_client
from billowin.adapters.vault import VaultKV, policy_name
from billowin.errors import InvalidInput, NotFound, ServiceError, Unreachable
from billowin.ports import ConfigStore
from billowin.settings import Settings
from billowin.stack.process import free_port
from billowin.stack.single_box import SingleBox, VaultDev
from billowin.stack.tools import load_versions
from billowin.system import System

from .conftest import wait_for

# Values that break naive quoting, escaping or parsing somewhere on their way.
TRICKY = {
    "QUOTES": """she said "hi" and 'bye'""",
    "SPACES": "  leading, inner\tand trailing  ",
    "DOLLARS": "cost $5, $HOME, $(id), `id`, $$",
    "NEWLINES": "line one\nline two\r\nline three\n",
    "UNICODE": "grüße 日本語 🚀 \u2028 end",
    "EQUALS": "a=b==c=",
    "BACKSLASHES": "C:\\path\\to\\n and \\\\ and \\u0041",
    "HTML": "<b>&amp;</b> > <",
    "HASH": "# not a comment",
    "EMPTY": "",
    "JSON": '{"k": ["v", 1, null]}',
}


def vault_settings(stack: SingleBox, dev: VaultDev, **changes: object) -> Settings:
    update: dict[str, object] = {
        "config_backend": "vault",
        "vault_addr": dev.addr,
        "vault_token": SecretStr(dev.root_token),
    }
    return stack.settings.model_copy(update=update | changes)


@pytest.fixture(params=["nomad", "vault"])
def store(request: pytest.FixtureRequest, stack: SingleBox) -> ConfigStore:
    if request.param == "nomad":
        return _config_store(stack.settings)
    return _config_store(vault_settings(stack, request.getfixturevalue("vault")))


def unreachable_store(store: ConfigStore, stack: SingleBox) -> ConfigStore:
    nowhere = f"http://127.0.0.1:{free_port()}"
    if store.backend == "nomad":
        return _config_store(stack.settings.model_copy(update={"nomad_addr": nowhere}))
    return _config_store(
        stack.settings.model_copy(
            update={"config_backend": "vault", "vault_addr": nowhere, "vault_token": SecretStr("x")}
        )
    )


def chain_text(exc: BaseException) -> str:
    """The messages of an exception and of every exception it was raised from."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# -- the contract --------------------------------------------------------------
def test_the_backend_is_the_one_asked_for_and_healthy(store: ConfigStore) -> None:
    health = store.health()
    assert health.ok, health
    assert health.version
    if store.backend == "vault":
        assert isinstance(store, VaultKV)
        assert health.version == load_versions(Settings().versions_file)["vault"]["version"]
        assert store.job_vault_policies("shop") == [policy_name("shop")]
    else:
        assert store.job_vault_policies("shop") == []


def test_versions_start_at_one_increase_and_old_ones_read_back_exactly(
    store: ConfigStore, app_name: str
) -> None:
    assert store.latest(app_name) == (0, {})
    written = [{"A": "1"}, {"A": "2", "B": "two"}, {"B": "three"}]
    versions = [store.write(app_name, values) for values in written]
    assert versions == [1, 2, 3]
    for version, values in zip(versions, written, strict=True):
        assert store.read(app_name, version) == values
    assert store.latest(app_name) == (3, {"B": "three"})


def test_old_versions_are_kept_after_many_writes(store: ConfigStore, app_name: str) -> None:
    for i in range(1, 13):  # more than KV v2 keeps by default (10)
        assert store.write(app_name, {"N": str(i)}) == i
    assert store.read(app_name, 1) == {"N": "1"}
    assert store.latest(app_name) == (12, {"N": "12"})


def test_tricky_values_round_trip_unchanged(store: ConfigStore, app_name: str) -> None:
    version = store.write(app_name, TRICKY)
    assert store.read(app_name, version) == TRICKY
    assert store.latest(app_name) == (version, TRICKY)


def test_an_empty_config_round_trips_as_empty(store: ConfigStore, app_name: str) -> None:
    assert store.write(app_name, {}) == 1
    assert store.read(app_name, 1) == {}
    assert store.latest(app_name) == (1, {})
    assert store.write(app_name, {"A": "a"}) == 2
    assert store.write(app_name, {}) == 3
    assert store.latest(app_name) == (3, {})
    assert store.read(app_name, 2) == {"A": "a"}


def test_unknown_apps_and_versions_are_not_found(store: ConfigStore, app_name: str) -> None:
    for version in (1, 0, -1):
        with pytest.raises(NotFound):
            store.read(app_name, version)
    store.write(app_name, {"A": "a"})
    for version in (0, 2, 99):
        with pytest.raises(NotFound) as info:
            store.read(app_name, version)
        assert app_name in info.value.message


@pytest.mark.parametrize(
    "key", ["1ABC", "A-B", "A B", "", "A=B", "ÄPFEL", "__billowin_empty", "__BILLOWIN_X", "x" * 300]
)
def test_invalid_keys_are_refused_and_nothing_is_stored(store: ConfigStore, app_name: str, key: str) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    with pytest.raises(InvalidInput) as info:
        store.write(app_name, {"GOOD": "fine", key: secret})
    assert secret not in chain_text(info.value)
    assert store.latest(app_name) == (0, {})


def test_non_string_and_nul_values_are_refused_without_showing_them(
    store: ConfigStore, app_name: str
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    with pytest.raises(InvalidInput, match="NUL"):
        store.write(app_name, {"A": f"{secret}\x00"})
    with pytest.raises(InvalidInput, match="string"):
        store.write(app_name, {"A": 12345})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match="app name"):
        store.write("Not_An_App", {"A": secret})
    assert store.latest(app_name) == (0, {})


def test_delete_removes_every_version(store: ConfigStore, app_name: str) -> None:
    for i in range(3):
        store.write(app_name, {"N": str(i)})
    other = f"{app_name}x"  # an app whose name starts with this one's keeps its config
    store.write(other, {"KEEP": "me"})
    store.delete(app_name)
    assert store.latest(app_name) == (0, {})
    for version in (1, 2, 3):
        with pytest.raises(NotFound):
            store.read(app_name, version)
    assert store.latest(other) == (1, {"KEEP": "me"})
    store.delete(app_name)  # deleting again is a no-op
    assert store.write(app_name, {"N": "again"}) == 1
    store.delete(other)


def test_concurrent_writers_never_get_the_same_version(store: ConfigStore, app_name: str) -> None:
    writers, each = 4, 5
    start = threading.Barrier(writers)
    results: dict[int, dict[str, str]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def write(writer: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(each):
                values = {"WRITER": str(writer), "N": str(i)}
                version = store.write(app_name, values)
                with lock:
                    assert version not in results, f"version {version} handed out twice"
                    results[version] = values
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(results) == list(range(1, writers * each + 1))
    for version, values in results.items():
        assert store.read(app_name, version) == values
    latest, values = store.latest(app_name)
    assert latest == writers * each and values == results[latest]


def test_values_never_appear_in_error_messages(store: ConfigStore, stack: SingleBox, app_name: str) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    down = unreachable_store(store, stack)
    with pytest.raises(Unreachable) as info:
        down.write(app_name, {"PASSWORD": secret})
    assert secret not in chain_text(info.value)
    assert "127.0.0.1" in info.value.message

    with pytest.raises(InvalidInput) as invalid:
        store.write(app_name, {"PASSWORD": secret, "bad key": secret})
    assert secret not in chain_text(invalid.value)


# -- Vault specifics -------------------------------------------------------------
def test_a_bad_vault_token_is_a_service_error_that_names_the_variable(
    stack: SingleBox, vault: VaultDev, app_name: str
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    store = _config_store(vault_settings(stack, vault, vault_token=SecretStr("not-a-token")))
    with pytest.raises(ServiceError) as info:
        store.write(app_name, {"PASSWORD": secret})
    assert not isinstance(info.value, Unreachable)
    assert "VAULT_TOKEN" in info.value.hint
    assert secret not in chain_text(info.value)


def test_vault_deleted_and_destroyed_versions_are_not_found(
    stack: SingleBox, vault: VaultDev, app_name: str
) -> None:
    store = VaultKV(vault_settings(stack, vault))
    for i in range(3):
        store.write(app_name, {"N": str(i)})
    client = hvac.Client(url=vault.addr, token=vault.root_token)
    kv = client.secrets.kv.v2
    kv.delete_secret_versions(path=store.path(app_name), versions=[1], mount_point=store.mount)
    kv.destroy_secret_versions(path=store.path(app_name), versions=[2], mount_point=store.mount)
    for version in (1, 2):
        with pytest.raises(NotFound):
            store.read(app_name, version)
    assert store.read(app_name, 3) == {"N": "2"}
    kv.delete_latest_version_of_secret(path=store.path(app_name), mount_point=store.mount)
    with pytest.raises(NotFound, match="deleted"):
        store.latest(app_name)
    store.delete(app_name)


def test_vault_policy_lets_a_job_token_read_its_own_apps_config_and_nothing_else(
    stack: SingleBox, vault: VaultDev, app_name: str
) -> None:
    store = VaultKV(vault_settings(stack, vault))
    other = f"{app_name}-other"
    version = store.write(app_name, {"A": "b"})
    other_version = store.write(other, {"SECRET": "of the other app"})
    store.ensure_policy(app_name)  # idempotent: write already made it
    root = hvac.Client(url=vault.addr, token=vault.root_token)
    policies = store.job_vault_policies(app_name)
    job_token = root.auth.token.create(policies=policies, ttl="5m")["auth"]["client_token"]
    as_job = VaultKV(vault_settings(stack, vault, vault_token=SecretStr(job_token)))
    assert as_job.read(app_name, version) == {"A": "b"}
    with pytest.raises(ServiceError, match="permission denied"):
        as_job.read(other, other_version)  # app A's job token cannot read app B's config
    with pytest.raises(ServiceError, match="permission denied"):
        as_job.write(app_name, {"A": "c"})
    store.delete(other)
    assert policy_name(other) not in root.sys.list_policies()["data"]["policies"]
    store.delete(app_name)


# -- the template, rendered by a real Nomad for a real task ------------------------------
# The task prints each variable it sees as KEY=<hex of the value> ("KEY!" when unset),
# so nothing on the way back (logs, HTTP, text decoding) can blur a byte.
# No "${" here: Nomad would try to interpolate it.
SHOW_ENV = """
out="$NOMAD_ALLOC_DIR/seen"
for k in $KEYS; do
  if printenv "$k" >/dev/null; then
    printf '%s=' "$k" >> "$out.tmp"
    printenv "$k" | od -An -v -tx1 | tr -d ' \\n' >> "$out.tmp"
    echo >> "$out.tmp"
  else
    echo "$k!" >> "$out.tmp"
  fi
done
mv "$out.tmp" "$out"
"""


@pytest.fixture(scope="module")
def busybox_image(stack: SingleBox, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    context: Path = tmp_path_factory.mktemp("config-image")
    (context / "Dockerfile").write_text(f"FROM {base_image}\n")
    ref = f"{stack.settings.registry}/config-env-check:v1"
    docker = DockerEngine(stack.settings)
    docker.build(context, ref)
    docker.push(ref)
    return ref


def test_the_nomad_template_gives_the_task_every_value_intact(
    stack: SingleBox, busybox_image: str, app_name: str, cleanup_apps: list[str]
) -> None:
    store = _config_store(stack.settings)
    version = store.write(app_name, TRICKY)
    empty_app = f"{app_name}e"
    empty_version = store.write(empty_app, {})
    keys = [*TRICKY, "__billowin_empty", "NOT_SET"]
    job_id = f"cfg-{app_name}"
    cleanup_apps.append(job_id)
    job = {
        "ID": job_id,
        "Name": job_id,
        "Type": "batch",
        "Datacenters": ["*"],
        "TaskGroups": [
            {
                "Name": "check",
                "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "Tasks": [
                    {
                        "Name": "env",
                        "Driver": "docker",
                        "Config": {"image": busybox_image, "command": "sh", "args": ["-c", SHOW_ENV]},
                        "Env": {"KEYS": " ".join(keys)},
                        "Templates": [
                            {
                                "DestPath": "secrets/config.env",
                                "EmbeddedTmpl": store.template(app_name, version),
                                "Envvars": True,
                            },
                            {
                                "DestPath": "secrets/empty.env",
                                "EmbeddedTmpl": store.template(empty_app, empty_version),
                                "Envvars": True,
                            },
                        ],
                        "Resources": {"CPU": 50, "MemoryMB": 32},
                    }
                ],
            }
        ],
    }
    nomad = NomadScheduler(stack.settings)
    nomad.submit(job)

    def finished() -> dict[str, object] | None:
        allocs = nomad.allocations(job_id)
        done = [a for a in allocs if a.get("ClientStatus") in ("complete", "failed", "lost")]
        return done[0] if done else None

    alloc = wait_for(finished, 120, "the config check task to finish")
    client = nomad_client(stack.settings)
    assert alloc["ClientStatus"] == "complete", nomad.allocation(str(alloc["ID"]))["TaskStates"]
    seen: dict[str, str | None] = {}
    for line in client.client.cat.read_file(alloc["ID"], "alloc/seen").splitlines():
        if line.endswith("!"):
            seen[line[:-1]] = None
        else:
            key, _, hexed = line.partition("=")
            raw = bytes.fromhex(hexed)
            assert raw.endswith(b"\n")  # printenv's own newline
            seen[key] = raw[:-1].decode("utf-8")
    for key, value in TRICKY.items():
        assert seen.get(key) == value, f"{key}: the task saw {seen.get(key)!r}"
    assert seen["__billowin_empty"] is None, "the empty-config marker leaked into the environment"
    assert seen["NOT_SET"] is None
    store.delete(app_name)
    store.delete(empty_app)


def _config_store(settings: Settings) -> ConfigStore:
    """The store ``BILLOWIN_CONFIG_BACKEND`` picks, built by the composition root as the API does."""
    return System(settings).config
