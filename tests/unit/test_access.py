"""Roles, tokens, dashboard sessions and the audit log, on the in-memory KV (no network)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from billowin.apps.access import POLICY, Access, Action, Caller, Level, allowed
from billowin.apps.audit import AuditEntry, AuditLog
from billowin.apps.sessions import SessionStore, csrf_ok, csrf_token
from billowin.apps.store import App, AppStore
from billowin.apps.tokens import PREFIX, Role, TokenInfo, TokenRecord, TokenState, TokenStore, parse_expiry
from billowin.errors import InvalidInput, NotFound, Unauthorized
from tests.fakes import InMemoryKV

ADMIN = TokenRecord(id="a" * 16, name="root", sha256="")
DEPLOY = TokenRecord(id="d" * 16, name="ci", sha256="", role=Role.DEPLOY, apps=["shop"])
READ = TokenRecord(id="e" * 16, name="viewer", sha256="", role=Role.READ, apps=["shop"])

# The policy table, spelt out: what a read and a deploy token for "shop" may do on "shop".
# (On any other app neither may do anything; an admin may do everything.)
READ_MAY = {
    Action.HOME, Action.HEALTH, Action.LOGIN, Action.ACME_CHALLENGE, Action.DASHBOARD, Action.LOGOUT,
    Action.APPS, Action.ALERTS, Action.AUDIT, Action.APPS_INFO, Action.CONFIG, Action.DOMAINS, Action.PS,
    Action.RELEASES, Action.DEPLOYS, Action.DEPLOY_STATUS, Action.APP_METRICS, Action.CERTS,
    Action.REVIEW_APPS, Action.ADDONS, Action.ADDON_BACKUPS, Action.VOLUMES,
}  # fmt: skip
DEPLOY_MAY = READ_MAY | {
    Action.CONFIG_REVEAL, Action.CONFIG_SET, Action.DOMAINS_ADD, Action.DOMAINS_REMOVE,
    Action.PS_SCALE, Action.PS_RESTART, Action.ROLLBACK, Action.DEPLOY, Action.BUILD_LOG,
    Action.LOGS, Action.RUN, Action.REVIEW_APPS_APPROVE,
    Action.CERTS_ADD, Action.CERTS_REMOVE, Action.CERTS_REDIRECT,
    Action.ADDONS_CREATE, Action.ADDONS_ATTACH, Action.ADDON_BACKUPS_CAPTURE, Action.ADDON_BACKUPS_RESTORE,
    Action.ADDON_SHELL, Action.VOLUMES_ADD, Action.VOLUMES_REMOVE,
}  # fmt: skip
ADMIN_ONLY = {
    Action.HEALTH_DETAIL, Action.APPS_CREATE, Action.APPS_DESTROY, Action.REVIEW_APPS_CONFIGURE,
    Action.ADDONS_DESTROY,
    Action.METRICS,
    Action.TOKENS, Action.TOKENS_CREATE, Action.TOKENS_REVOKE,
    Action.NODES, Action.NODES_DRAIN, Action.NODES_ACTIVATE, Action.NODES_REMOVE,
}  # fmt: skip


def test_every_action_has_a_rule() -> None:
    assert set(POLICY) == set(Action)
    assert set(Action) == DEPLOY_MAY | ADMIN_ONLY
    assert not DEPLOY_MAY & ADMIN_ONLY


@pytest.mark.parametrize("action", list(Action))
def test_the_policy_table(action: Action) -> None:
    assert allowed(ADMIN, action, "shop") and allowed(ADMIN, action, "blog") and allowed(ADMIN, action)
    assert allowed(READ, action, "shop") == (action in READ_MAY)
    assert allowed(DEPLOY, action, "shop") == (action in DEPLOY_MAY)
    other = POLICY[action] == Level.PUBLIC
    assert allowed(READ, action, "blog") == other, "a scoped token may do nothing on another app"
    assert allowed(DEPLOY, action, "blog") == other


def test_lists_are_open_to_any_token_and_filtered() -> None:
    caller = Caller(READ)
    assert caller.may(Action.APPS) and caller.may(Action.ALERTS) and caller.may(Action.AUDIT)
    assert not caller.may(Action.ALERTS, "blog"), "?app= must name one of its apps"
    assert caller.visible(["blog", "shop", "wiki"]) == ["shop"]
    assert caller.sees("shop") and not caller.sees("blog") and not caller.sees(None)
    assert Caller(ADMIN).sees(None) and Caller(ADMIN).visible(["blog", "shop"]) == ["blog", "shop"]


def test_refusals_say_why_and_what_to_do() -> None:
    read = Caller(READ).refusal(Action.CONFIG_SET, "shop")
    assert read.status_code == 403 and "read token 'viewer' may not config:set on shop" in read.message
    assert "deploy" in read.hint
    other = Caller(DEPLOY).refusal(Action.DEPLOY, "blog")
    assert "for shop only" in other.hint
    admin = Caller(DEPLOY).refusal(Action.TOKENS_CREATE, None)
    assert "only an admin" in admin.message


# -- tokens ----------------------------------------------------------------------------------
@pytest.fixture
def kv() -> InMemoryKV:
    return InMemoryKV(max_wait=0.1)


def test_a_token_is_checked_by_its_hash_and_keeps_its_scope(kv: InMemoryKV) -> None:
    store = TokenStore(kv)
    record, token = store.issue("ci", role=Role.DEPLOY, apps=["shop", "blog", "shop"])
    assert token.startswith(f"bw_{record.id}_")
    assert token.split("_", 2)[2] not in json.dumps(kv.kv_list(PREFIX)[0][1].decode())
    found = store.check(token)
    assert (found.name, found.role, found.apps) == ("ci", Role.DEPLOY, ["blog", "shop"])
    assert store.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    with pytest.raises(Unauthorized, match="not valid"):
        store.check("bw_nonsense")


def test_create_still_makes_an_admin_token(kv: InMemoryKV) -> None:
    store = TokenStore(kv)
    record = store.check(store.create("old style"))
    assert record.role == Role.ADMIN and record.apps == [] and record.expires_at is None


def test_a_record_written_before_roles_is_an_admin(kv: InMemoryKV) -> None:
    store = TokenStore(kv)
    token = store.create("x")
    token_id = token.split("_")[1]
    _, raw = kv.kv_get(f"{PREFIX}/{token_id}")
    assert raw is not None
    old = {k: v for k, v in json.loads(raw).items() if k in ("id", "name", "sha256", "created_at")}
    kv.kv_put(f"{PREFIX}/{token_id}", json.dumps(old).encode())
    assert store.check(token).role == Role.ADMIN


@pytest.mark.parametrize(
    ("role", "apps", "message"),
    [
        (Role.DEPLOY, [], "needs the apps"),
        (Role.READ, [], "needs the apps"),
        (Role.ADMIN, ["shop"], "cannot be limited"),
        (Role.READ, ["Not An App"], "not an app name"),
    ],
)
def test_a_token_scope_must_make_sense(kv: InMemoryKV, role: Role, apps: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        TokenStore(kv).issue("x", role=role, apps=apps)


def test_expired_and_revoked_tokens_are_refused_with_a_reason(kv: InMemoryKV) -> None:
    store = TokenStore(kv)
    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = store.create("old", expires_at=past)
    with pytest.raises(Unauthorized, match="expired") as info:
        store.check(expired)
    assert "tokens:create" in info.value.hint
    record, token = store.issue("gone")
    store.revoke(record.id)
    with pytest.raises(Unauthorized, match="revoked"):
        store.check(token)
    assert store.revoke(record.id).revoked_at is not None, "revoking twice is fine"
    states = {r.name: r.state() for r in store.all()}
    assert states == {"old": TokenState.EXPIRED, "gone": TokenState.REVOKED}
    with pytest.raises(NotFound):
        store.revoke("0" * 16)
    with pytest.raises(InvalidInput):
        store.revoke("../apps")


def test_listing_shows_no_secret_nor_hash(kv: InMemoryKV) -> None:
    store = TokenStore(kv)
    record, token = store.issue("ci", role=Role.READ, apps=["shop"])
    shown = TokenInfo.of(record).model_dump_json()
    assert record.sha256 not in shown and token not in shown and token.split("_", 2)[2] not in shown
    assert json.loads(shown)["state"] == "active"


def test_expiry_spans_dates_and_times() -> None:
    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2026-12-31", now) == datetime(2026, 12, 31, tzinfo=UTC)
    assert parse_expiry("2026-02-01T10:00:00+01:00", now) == datetime(2026, 2, 1, 9, tzinfo=UTC)
    for bad in ("soon", "0d", "-1d", "2025-12-31", "2026-01-10T11:00:00"):
        with pytest.raises(InvalidInput):
            parse_expiry(bad, now)


# -- sessions and Access ------------------------------------------------------------------------
@pytest.fixture
def access(kv: InMemoryKV) -> Access:
    apps = AppStore(kv)
    apps.create(App(name="shop", repository="https://github.com/acme/shop"))
    return Access(TokenStore(kv), SessionStore(kv, ttl=3600), apps)


def test_a_session_stands_for_its_token_until_logout(access: Access, kv: InMemoryKV) -> None:
    _, token = access.issue("ci", role=Role.DEPLOY, apps=["shop"])
    sid, caller = access.login(token)
    assert caller.via == "dashboard" and caller.token.name == "ci"
    assert sid not in json.dumps([k for k, _ in kv.kv_list("billowin/sessions/")]), "KV keeps only a hash"
    again = access.session(sid)
    assert again is not None and again.may(Action.ROLLBACK, "shop")
    assert access.session("x" * 43) is None and access.session("not a session id") is None
    access.logout(sid)
    assert access.session(sid) is None


def test_revoking_a_token_ends_its_sessions(access: Access, kv: InMemoryKV) -> None:
    record, token = access.issue("ci", role=Role.READ, apps=["shop"])
    sid, _ = access.login(token)
    other_sid, _ = access.login(access.tokens.create("root"))
    access.revoke(record.id)
    assert access.session(sid) is None
    assert access.session(other_sid) is not None
    assert len(kv.kv_list("billowin/sessions/")) == 1


def test_a_session_ends_with_its_tokens_expiry_and_its_own(access: Access, kv: InMemoryKV) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    _, token = access.issue("ci", role=Role.READ, apps=["shop"], expires_at=soon)
    sid, _ = access.login(token)
    key, raw = kv.kv_list("billowin/tokens/")[0]
    expired = json.loads(raw) | {"expires_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
    kv.kv_put(key, json.dumps(expired).encode())
    assert access.session(sid) is None, "the token expired, so did its session"

    short = SessionStore(kv, ttl=3600)
    sid = short.start(access.tokens.issue("x")[0].id)
    key, raw = kv.kv_list("billowin/sessions/")[0]
    kv.kv_put(key, json.dumps(json.loads(raw) | {"expires_at": "2000-01-01T00:00:00Z"}).encode())
    assert short.get(sid) is None
    assert kv.kv_list("billowin/sessions/") == [], "an expired session is deleted when met"


def test_tokens_are_only_issued_for_apps_that_exist(access: Access) -> None:
    with pytest.raises(NotFound):
        access.issue("ci", role=Role.DEPLOY, apps=["shopp"])
    with pytest.raises(Unauthorized):
        access.login("bw_0123456789abcdef_" + "A" * 43)


def test_a_destroyed_app_is_in_no_tokens_scope_any_more(access: Access) -> None:
    """Re-creating an app under the old name gives nobody's old token rights on it."""
    access.apps.create(App(name="blog", repository="https://github.com/acme/blog"))
    only_shop, _ = access.issue("ci", role=Role.DEPLOY, apps=["shop"])
    both, _ = access.issue("ops", role=Role.READ, apps=["shop", "blog"])
    admin, _ = access.issue("root")
    assert access.forget_app("shop") == [only_shop.id]
    assert access.tokens.get(only_shop.id).state() == TokenState.REVOKED
    assert access.tokens.get(both.id).apps == ["blog"]
    assert access.tokens.get(admin.id).state() == TokenState.ACTIVE


def test_the_csrf_token_is_tied_to_its_session() -> None:
    a, b = "a" * 43, "b" * 43
    assert csrf_ok(a, csrf_token(a))
    assert not csrf_ok(a, csrf_token(b)) and not csrf_ok(a, "") and not csrf_ok(a, csrf_token(a)[:-1])
    assert a not in csrf_token(a)


# -- the audit log -------------------------------------------------------------------------------
def entry(n: int, app: str | None = "shop", status: int = 202) -> AuditEntry:
    return AuditEntry(
        actor=f"token{n}",
        action="config:set",
        method="PATCH",
        route="/apps/{app}/config",
        path=f"/apps/{app}/config",
        app=app,
        status=status,
    )


def test_the_audit_log_appends_and_reads_newest_last(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    assert log.read() == []
    for n in range(5):
        log.append(entry(n, app="shop" if n % 2 == 0 else "blog"))
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600
    assert [e.actor for e in log.read()] == [f"token{n}" for n in range(5)]
    assert [e.actor for e in log.read(limit=2)] == ["token3", "token4"]
    assert [e.actor for e in log.read(app="shop")] == ["token0", "token2", "token4"]
    assert [e.actor for e in log.read(visible=lambda e: e.app == "blog", limit=1)] == ["token3"]
    # Another process (an API restart) reads the same history.
    assert len(AuditLog(log.path).read(limit=100)) == 5


def test_the_audit_log_reads_backwards_across_blocks_and_skips_torn_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for n in range(2000):  # well over one 64 KiB block
        log.append(entry(n))
    with log.path.open("ab") as fh:
        fh.write(b'{"actor": "torn", "act')  # a crash mid-write
    assert [e.actor for e in log.read(limit=3)] == ["token1997", "token1998", "token1999"]
    every = log.read(limit=5000)
    assert [e.actor for e in every] == [f"token{n}" for n in range(2000)]
