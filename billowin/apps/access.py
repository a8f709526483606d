"""Who may do what: the roles, the policy table, and ``Access``, which issues and checks credentials.

Every API route and dashboard page names one ``Action`` (``billowin.api.deps``
turns it into a FastAPI dependency); ``POLICY`` says what each action needs:

- ``PUBLIC``: nobody needs a token (``/health``'s summary, the login form);
- ``ANY``: any valid token; what it lists is filtered to the apps it may read
  (``GET /apps``, ``/alerts``, ``/audit``), and an ``?app=`` it names must be one of them;
- ``READ``: a ``read``, ``deploy`` or ``admin`` token, for that ``{app}``;
- ``DEPLOY``: a ``deploy`` or ``admin`` token, for that ``{app}``;
- ``ADMIN``: an ``admin`` token only (apps:create, apps:destroy, tokens, ``/metrics``, and the
  cluster's nodes: listing them too, since they are every app's, and show the cluster's addresses).

``read`` sees an app's records (info, config var *names*, domains, ps, releases,
deploys and their steps, metrics); config values, app logs, one-off runs and
build logs (which carry app output: the release phase's, the build's) need
``deploy``, because apps print secrets.

``Access`` checks a bearer token or a dashboard session and answers a
``Caller``; it also issues tokens (their apps must exist) and revokes them,
ending their dashboard sessions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum, StrEnum

from billowin.apps.sessions import SessionStore
from billowin.apps.store import AppStore
from billowin.apps.tokens import Role, TokenRecord, TokenState, TokenStore, check_scope
from billowin.errors import Forbidden, NotFound


class Level(IntEnum):
    PUBLIC = 0
    ANY = 1
    READ = 2
    DEPLOY = 3
    ADMIN = 4


class Action(StrEnum):
    """What a call does; also its name in the audit log (mostly the CLI verb that makes it)."""

    HOME = "home"
    HEALTH = "health"
    HEALTH_DETAIL = "health:detail"
    ACME_CHALLENGE = "acme:challenge"  # the CA fetching an HTTP-01 answer
    LOGIN = "dashboard:login"
    LOGOUT = "dashboard:logout"
    DASHBOARD = "dashboard"
    APPS = "apps"
    APPS_CREATE = "apps:create"
    APPS_INFO = "apps:info"
    APPS_DESTROY = "apps:destroy"
    CONFIG = "config"
    CONFIG_REVEAL = "config:reveal"
    CONFIG_SET = "config:set"  # PATCH /apps/{app}/config: sets and unsets
    DOMAINS = "domains"
    DOMAINS_ADD = "domains:add"
    DOMAINS_REMOVE = "domains:remove"
    CERTS = "certs"
    CERTS_ADD = "certs:add"
    CERTS_REMOVE = "certs:remove"
    CERTS_REDIRECT = "certs:redirect"
    PS = "ps"
    PS_SCALE = "ps:scale"
    PS_RESTART = "ps:restart"
    RELEASES = "releases"
    ROLLBACK = "rollback"
    DEPLOY = "deploy"
    DEPLOYS = "builds"
    DEPLOY_STATUS = "deploy:status"
    BUILD_LOG = "builds:output"
    LOGS = "logs"
    RUN = "run"
    APP_METRICS = "app:metrics"
    ALERTS = "alerts"
    METRICS = "metrics"
    TOKENS = "tokens"
    TOKENS_CREATE = "tokens:create"
    TOKENS_REVOKE = "tokens:revoke"
    AUDIT = "audit"
    NODES = "nodes"
    NODES_DRAIN = "nodes:drain"
    NODES_ACTIVATE = "nodes:activate"
    NODES_REMOVE = "nodes:remove"
    REVIEW_APPS = "review-apps"
    REVIEW_APPS_CONFIGURE = "apps:review-apps"
    REVIEW_APPS_APPROVE = "review-apps:approve"
    ADDONS = "addons"
    ADDONS_CREATE = "addons:create"
    ADDONS_ATTACH = "addons:attach"  # and addons:detach
    ADDONS_DESTROY = "addons:destroy"
    ADDON_BACKUPS = "pg:backups"
    ADDON_BACKUPS_CAPTURE = "pg:backups:capture"
    ADDON_BACKUPS_RESTORE = "pg:backups:restore"
    ADDON_SHELL = "pg:psql"  # and redis:cli
    VOLUMES = "volumes"
    VOLUMES_ADD = "volumes:add"
    VOLUMES_REMOVE = "volumes:remove"


POLICY: dict[Action, Level] = {
    # No token needed.
    Action.HOME: Level.PUBLIC,
    Action.HEALTH: Level.PUBLIC,  # {"status": "ok"} only; the detail is HEALTH_DETAIL
    Action.LOGIN: Level.PUBLIC,
    Action.ACME_CHALLENGE: Level.PUBLIC,  # answers only pending HTTP-01 tokens
    # Any valid token; lists are filtered to the apps it may read.
    Action.DASHBOARD: Level.ANY,
    Action.LOGOUT: Level.ANY,
    Action.APPS: Level.ANY,
    Action.ALERTS: Level.ANY,
    Action.AUDIT: Level.ANY,
    # Looking at one app.
    Action.APPS_INFO: Level.READ,
    Action.CONFIG: Level.READ,  # names only
    Action.DOMAINS: Level.READ,
    Action.CERTS: Level.READ,  # names, dates, reasons: never a key
    Action.PS: Level.READ,
    Action.RELEASES: Level.READ,
    Action.DEPLOYS: Level.READ,
    Action.DEPLOY_STATUS: Level.READ,
    Action.APP_METRICS: Level.READ,
    Action.REVIEW_APPS: Level.READ,
    Action.ADDONS: Level.READ,  # never a credential
    Action.ADDON_BACKUPS: Level.READ,
    Action.VOLUMES: Level.READ,
    # Changing or operating one app, and everything that shows what an app prints.
    Action.CONFIG_REVEAL: Level.DEPLOY,
    Action.CONFIG_SET: Level.DEPLOY,
    Action.DOMAINS_ADD: Level.DEPLOY,
    Action.DOMAINS_REMOVE: Level.DEPLOY,
    Action.CERTS_ADD: Level.DEPLOY,
    Action.CERTS_REMOVE: Level.DEPLOY,
    Action.CERTS_REDIRECT: Level.DEPLOY,
    Action.PS_SCALE: Level.DEPLOY,
    Action.PS_RESTART: Level.DEPLOY,
    Action.ROLLBACK: Level.DEPLOY,
    Action.DEPLOY: Level.DEPLOY,
    Action.BUILD_LOG: Level.DEPLOY,
    Action.LOGS: Level.DEPLOY,
    Action.RUN: Level.DEPLOY,
    Action.REVIEW_APPS_APPROVE: Level.DEPLOY,  # a fork's code may then build and run on the box
    Action.ADDONS_CREATE: Level.DEPLOY,
    Action.ADDONS_ATTACH: Level.DEPLOY,  # on the app, and on the add-on's own app (routes/addons.py)
    Action.ADDON_BACKUPS_CAPTURE: Level.DEPLOY,
    Action.ADDON_BACKUPS_RESTORE: Level.DEPLOY,
    Action.ADDON_SHELL: Level.DEPLOY,  # reads and writes every row
    Action.VOLUMES_ADD: Level.DEPLOY,
    Action.VOLUMES_REMOVE: Level.DEPLOY,  # the data stays (only apps:destroy deletes it)
    # The platform itself.
    Action.HEALTH_DETAIL: Level.ADMIN,
    Action.APPS_CREATE: Level.ADMIN,
    Action.APPS_DESTROY: Level.ADMIN,
    Action.ADDONS_DESTROY: Level.ADMIN,  # its data and backups, for good, as apps:destroy
    # Copies another app's config vars into every review app, and spends the box on them.
    Action.REVIEW_APPS_CONFIGURE: Level.ADMIN,
    Action.METRICS: Level.ADMIN,  # BILLOWIN_METRICS_TOKEN opens it too
    Action.TOKENS: Level.ADMIN,
    Action.TOKENS_CREATE: Level.ADMIN,
    Action.TOKENS_REVOKE: Level.ADMIN,
    Action.NODES: Level.ADMIN,  # every app's machines; READ is per app, and a node is no app's
    Action.NODES_DRAIN: Level.ADMIN,
    Action.NODES_ACTIVATE: Level.ADMIN,
    Action.NODES_REMOVE: Level.ADMIN,
}

# Recorded in the audit log although they change nothing: they reveal secrets.
AUDITED_READS = frozenset({Action.CONFIG_REVEAL})


def allowed(token: TokenRecord, action: Action, app: str | None = None) -> bool:
    """Whether ``token`` may do ``action`` (on ``app``, for the actions about one app)."""
    level = POLICY[action]
    if level == Level.PUBLIC or token.role == Role.ADMIN:
        return True
    if level == Level.ADMIN:
        return False
    if level == Level.ANY:
        return app is None or app in token.apps
    if app is None or app not in token.apps:
        return False
    if level == Level.READ:
        return token.role in (Role.READ, Role.DEPLOY)
    return token.role == Role.DEPLOY


@dataclass(frozen=True)
class Caller:
    """Whoever made a request: a checked token, over the API (bearer) or the dashboard (a session)."""

    token: TokenRecord
    via: str = "api"  # or "dashboard"

    def may(self, action: Action, app: str | None = None) -> bool:
        return allowed(self.token, action, app)

    def visible(self, apps: Iterable[str]) -> list[str]:
        """The apps of ``apps`` this caller may read, in their order."""
        return [a for a in apps if self.may(Action.APPS_INFO, a)]

    def sees(self, app: str | None) -> bool:
        """Whether a record about ``app`` (None: about no app, e.g. a token) is for this caller's eyes."""
        return self.token.role == Role.ADMIN or (app is not None and self.may(Action.APPS_INFO, app))

    def refusal(self, action: Action, app: str | None) -> Forbidden:
        """The plain answer to a call this caller may not make."""
        token = self.token
        who = f"the {token.role.value} token {token.name!r}"
        level = POLICY[action]
        if level == Level.ADMIN:
            return Forbidden(
                f"{who} may not {action.value}: only an admin token may",
                hint="Ask an admin to do it, or for an admin token.",
            )
        if app is not None and app not in token.apps:
            return Forbidden(
                f"{who} may not {action.value} on {app}",
                hint=f"It is for {', '.join(token.apps)} only; ask an admin for a token for {app}.",
            )
        return Forbidden(
            f"{who} may not {action.value}" + (f" on {app}" if app else ""),
            hint=f"A read token only looks (no config values, logs or runs); ask an admin for a deploy "
            f"token: `billowin tokens:create NAME --role deploy --app {app or 'APP'}`.",
        )


class Access:
    """Issues, checks and revokes credentials: bearer tokens and the dashboard's sessions."""

    def __init__(self, tokens: TokenStore, sessions: SessionStore, apps: AppStore) -> None:
        self.tokens = tokens
        self.sessions = sessions
        self.apps = apps

    def issue(
        self,
        name: str,
        *,
        role: Role = Role.ADMIN,
        apps: Iterable[str] = (),
        expires_at: datetime | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token for apps that exist (a typo would make a token for nothing)."""
        scope = sorted(set(apps))
        check_scope(name, role, scope)
        for app in scope:
            self.apps.get(app)  # NotFound (or InvalidInput) with its own hint
        return self.tokens.issue(name, role=role, apps=scope, expires_at=expires_at)

    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke the token and end its dashboard sessions; both take effect on the next request."""
        record = self.tokens.revoke(token_id)
        self.sessions.end_for_token(token_id)
        return record

    def forget_app(self, app: str) -> list[str]:
        """After ``apps:destroy``, no token keeps ``app`` in its scope, so an app made later
        under the same name is not theirs: tokens for it alone are revoked, the others lose
        it. Returns the ids revoked."""
        revoked = []
        for record in self.tokens.all():
            if record.role == Role.ADMIN or app not in record.apps:
                continue
            if record.apps == [app]:
                if record.revoked_at is None:
                    self.revoke(record.id)
                    revoked.append(record.id)
            else:
                self.tokens.drop_app(record.id, app)
        return revoked

    def bearer(self, token: str) -> Caller:
        """The caller an ``Authorization: Bearer`` token stands for; ``Unauthorized`` saying why not."""
        return Caller(self.tokens.check(token), via="api")

    def login(self, token: str) -> tuple[str, Caller]:
        """Start a dashboard session for a valid token: ``(session id for the cookie, caller)``."""
        record = self.tokens.check(token)
        return self.sessions.start(record.id), Caller(record, via="dashboard")

    def session(self, session_id: str) -> Caller | None:
        """The caller of a live dashboard session whose token is still valid; None otherwise."""
        found = self.sessions.get(session_id)
        if found is None:
            return None
        try:
            record = self.tokens.get(found.token_id)
        except NotFound:
            record = None
        if record is None or record.state() != TokenState.ACTIVE:
            self.sessions.end(session_id)
            return None
        return Caller(record, via="dashboard")

    def logout(self, session_id: str) -> None:
        self.sessions.end(session_id)
