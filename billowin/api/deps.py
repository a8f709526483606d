"""FastAPI dependencies: the settings, the ``System`` (``billowin.system``), and who may call what.

Every route names its ``Action`` (``billowin.apps.access``) through exactly one
of these dependencies, and the policy is applied there, never in a handler:

- ``require(action)``: the JSON API. Only ``Authorization: Bearer <token>``
  counts (the dashboard's cookie does not); 401 without a valid token, 403 when
  its role or apps do not allow the action on the path's ``{app}`` (or the
  ``?app=`` it names); 415 when a route that takes a JSON body gets another
  content type.
- ``page(action)``, ``data(action)``, ``form(action)``: the dashboard, on its
  session cookie. ``page`` sends a browser without a session to the login
  form; ``form`` (every dashboard POST) also wants a same-origin request and
  the session's CSRF token.
- ``public(action)``: no credential needed; ``health_detail`` tells whether the
  caller may see ``/health``'s detail; ``scrape`` opens ``/metrics`` to an admin
  token or ``BILLOWIN_METRICS_TOKEN``.

``create_app`` refuses to start if a route has none of them (``access_rule``),
and each notes its action and caller for the audit log (``billowin.api.audit``).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Form, Request, params
from fastapi.routing import APIRoute

from billowin.apps.access import Action, Caller
from billowin.apps.sessions import csrf_ok, csrf_token
from billowin.errors import Forbidden, Unauthorized, UnsupportedMediaType
from billowin.settings import Settings
from billowin.system import System


async def get_settings(request: Request) -> Settings:  # async: no thread hop for an attribute
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_system(request: Request) -> System:
    system: System = request.app.state.system
    return system


SystemDep = Annotated[System, Depends(get_system)]


COOKIE = "billowin_session"  # the dashboard's session id: HttpOnly, SameSite=Strict, Path=/dashboard
OLD_COOKIE = "billowin_token"  # what earlier versions kept (the token itself); cleared at login
ACCESS = "billowin_access"  # the attribute that marks an access dependency, for ``access_rule``
NOTE = "billowin_audit"  # the key of the request's ``AuditNote`` in ``scope["state"]``


class LoginRequired(Unauthorized):
    """No dashboard session: a page answers with a redirect to the login form."""


@dataclass
class AuditNote:
    """What the access dependencies learnt about a request, for the audit log."""

    action: Action | None = None
    caller: Caller | None = None
    actor: str | None = None  # who, when no token says it (the metrics token)
    route: str | None = None  # the route's template, e.g. /apps/{app}/config
    app: str | None = None  # the app the path (or ?app=) names; a handler may name it (apps:create)


def audit_note(request: Request) -> AuditNote:
    """The request's note (the audit middleware puts one in each request's scope)."""
    state = request.scope.setdefault("state", {})
    note = state.get(NOTE)
    if not isinstance(note, AuditNote):
        note = state[NOTE] = AuditNote()
    return note


def _noted(request: Request, action: Action) -> AuditNote:
    """The request's note, with its action, route and app."""
    note = audit_note(request)
    note.action = action
    route = request.scope.get("route")
    note.route = getattr(route, "path", None)
    note.app = _app_of(request)
    return note


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer …``; None without the header, "" with another scheme."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _app_of(request: Request) -> str | None:
    """The app a request is about: the path's ``{app}``, else an ``?app=`` the route takes."""
    app = request.path_params.get("app")
    if app is None:
        route = request.scope.get("route")
        takes_app = isinstance(route, APIRoute) and any(q.name == "app" for q in route.dependant.query_params)
        app = request.query_params.get("app") if takes_app else None
    return str(app) if app else None


def takes_json(route: APIRoute) -> bool:
    """Whether the route reads a JSON body (not a form, not the raw bytes)."""
    return route.body_field is not None and not isinstance(route.body_field.field_info, params.Form)


def _check_json(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not takes_json(route):
        return
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"{request.method} {route.path} takes a JSON body, not {media or 'a body without a Content-Type'}"
    )


async def authenticate(request: Request, system: System) -> Caller:
    """The caller of an API request: its bearer token checked (401 saying why when it is not valid)."""
    token = bearer_token(request)
    if not token:
        cookie = COOKIE in request.cookies or OLD_COOKIE in request.cookies
        raise Unauthorized(
            "a valid API token is required",
            hint=(
                "The dashboard's login works on /dashboard pages only; the API needs "
                "`Authorization: Bearer <token>`."
                if cookie
                else "Send `Authorization: Bearer <token>`; an admin makes one: "
                "`billowin tokens:create NAME`."
            ),
        )
    caller: Caller = await asyncio.to_thread(system.access.bearer, token)
    return caller


Chooser = Callable[..., Coroutine[Any, Any, Action]]


def _fixed(action: Action) -> Chooser:
    async def choose() -> Action:
        return action

    return choose


def _marked(dependency: Callable[..., Any], rule: Action | Chooser) -> Any:
    setattr(dependency, ACCESS, rule)
    return Depends(dependency)


_required: dict[Action | Chooser, Any] = {}


def require(action: Action | Chooser) -> Any:
    """The API's access dependency for ``action`` (or for the action a chooser dependency picks).

    Answers the ``Caller``; use it as a route dependency or an ``Annotated`` parameter.
    """
    if action in _required:  # one dependency per action: FastAPI then runs it once per request
        return _required[action]
    choose = _fixed(action) if isinstance(action, Action) else action

    # (a default, not ``Annotated``: postponed annotations cannot name the local ``choose``)
    async def access(request: Request, system: SystemDep, chosen: Action = Depends(choose)) -> Caller:  # noqa: B008
        note = _noted(request, chosen)
        caller = await authenticate(request, system)
        note.caller = caller
        app = _app_of(request)
        if not caller.may(chosen, app):
            raise caller.refusal(chosen, app)
        _check_json(request)
        return caller

    _required[action] = _marked(access, action)
    return _required[action]


def public(action: Action, *, form: bool = False) -> Any:
    """No credential needed; the action is still noted (for the audit log).

    ``form=True`` (the login form) still wants the post to come from the dashboard's own origin.
    """

    async def access(request: Request, settings: SettingsDep) -> None:
        _noted(request, action)
        if form and not same_origin(request, settings):
            raise Forbidden("this form was posted from another site", hint="Use the dashboard's own pages.")

    return _marked(access, action)


async def _health_detail(request: Request, system: SystemDep) -> bool:
    _noted(request, Action.HEALTH)
    token = bearer_token(request)
    if not token:
        return False
    try:
        caller = await asyncio.to_thread(system.access.bearer, token)
    except Unauthorized:
        return False
    return caller.may(Action.HEALTH_DETAIL)


health_detail = _marked(_health_detail, Action.HEALTH)


async def _scrape(request: Request, settings: SettingsDep, system: SystemDep) -> None:
    """An admin token, or ``BILLOWIN_METRICS_TOKEN`` when it is set."""
    note = _noted(request, Action.METRICS)
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    sent = (bearer_token(request) or "").encode()
    if expected and hmac.compare_digest(sent, expected.encode()):
        note.actor = "metrics-token"
        return
    caller = await authenticate(request, system)
    note.caller = caller
    if not caller.may(Action.METRICS):
        raise caller.refusal(Action.METRICS, None)


scrape = _marked(_scrape, Action.METRICS)


# -- the dashboard ---------------------------------------------------------------------------
def session_id(request: Request) -> str:
    return request.cookies.get(COOKIE, "")


async def dashboard_caller(request: Request, system: System) -> Caller | None:
    sid = session_id(request)
    if not sid:
        return None
    caller: Caller | None = await asyncio.to_thread(system.access.session, sid)
    return caller


def same_origin(request: Request, settings: Settings) -> bool:
    """Whether a browser says the request comes from the dashboard itself (true when it says nothing).

    ``Sec-Fetch-Site`` must be ``same-origin`` (an app at ``<app>.<domain>`` is ``same-site``: refused),
    and ``Origin`` this server's origin or ``BILLOWIN_PUBLIC_URL``'s.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    ours = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    if settings.public_url:
        public = urlsplit(settings.public_url)
        ours.add(f"{public.scheme}://{public.netloc}".lower())
    return origin.lower() in ours


def _dashboard(action: Action, *, kind: str) -> Any:
    async def check(request: Request, system: System) -> Caller:
        note = _noted(request, action)
        caller = await dashboard_caller(request, system)
        if caller is None:
            if kind == "page":
                raise LoginRequired("log in to the dashboard first")
            raise Unauthorized("log in to the dashboard first", hint="Reload the page and log in again.")
        note.caller = caller
        return caller

    def allow(request: Request, caller: Caller) -> Caller:
        app = _app_of(request)
        if not caller.may(action, app):
            raise caller.refusal(action, app)
        return caller

    if kind == "form":

        async def form_access(
            request: Request,
            settings: SettingsDep,
            system: SystemDep,
            csrf: Annotated[str, Form(description="The session's CSRF token.")] = "",
        ) -> Caller:
            caller = await check(request, system)
            if not same_origin(request, settings):
                raise Forbidden(
                    "this form was posted from another site",
                    hint="Use the dashboard's own pages; reload it and try again.",
                )
            if not csrf or not csrf_ok(session_id(request), csrf):
                raise Forbidden(
                    "the form's CSRF token is missing or wrong",
                    hint="Reload the dashboard page and submit the form again.",
                )
            return allow(request, caller)

        return _marked(form_access, action)

    async def access(request: Request, system: SystemDep) -> Caller:
        return allow(request, await check(request, system))

    return _marked(access, action)


def page(action: Action) -> Any:
    """A dashboard page: its caller; a browser without a session goes to the login form."""
    return _dashboard(action, kind="page")


def data(action: Action) -> Any:
    """What a dashboard page's script fetches (charts, live logs): 401 without a session."""
    return _dashboard(action, kind="data")


def form(action: Action) -> Any:
    """A dashboard form post: same origin, a session, and its CSRF token, checked in constant time."""
    return _dashboard(action, kind="form")


def csrf_for(request: Request) -> str:
    """The CSRF token to put in the forms of a page rendered for this request's session."""
    sid = session_id(request)
    return csrf_token(sid) if sid else ""


def access_rule(route: APIRoute) -> Action | Chooser | None:
    """The action (or action chooser) a route's access dependency names; None when it has none."""
    stack = list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        rule = getattr(dependant.call, ACCESS, None)
        if rule is not None:
            return rule  # type: ignore[no-any-return]
        stack.extend(dependant.dependencies)
    return None
