"""The names users give things (apps, domains, process types, cluster nodes), and the KV keys made of them.

Each name becomes part of a URL, a Consul key, a Nomad job id or a file path,
so every check lives here, once. The ``check_*`` functions raise
``InvalidInput`` with a message a user can act on; ``is_*`` answer yes or no
(for pydantic validators, which raise their own ``ValueError``).
"""

from __future__ import annotations

import re

from billowin.errors import InvalidInput

# Every check uses fullmatch: with match, ``$`` also matches before a final newline, so
# "shop\n" would pass. The patterns keep their anchors for pydantic's ``pattern=``.
# A DNS label: the app answers at <app>.<domain>, and its Nomad job and Consul service share the name.
DNS_LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
# A custom domain: lowercase labels, a final label of letters, 253 characters at most.
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# A Procfile process type: it names a Nomad task group.
PROCESS = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")

# <name>.<domain> is taken by Billowin itself (the API, on a production box).
RESERVED_APP_NAMES = frozenset({"billowin"})
# Add-ons' Nomad jobs, Consul services and credentials go by addon-<name> (billowin/addons/).
ADDON_PREFIX = "addon-"
APP_NAME_RULE = "lowercase letters, digits and '-', starting with a letter, at most 63 characters"


def is_app_name(value: object) -> bool:
    return isinstance(value, str) and DNS_LABEL.fullmatch(value) is not None


def is_domain(value: object) -> bool:
    return isinstance(value, str) and DOMAIN.fullmatch(value) is not None


def is_process_name(value: object) -> bool:
    return isinstance(value, str) and PROCESS.fullmatch(value) is not None


def check_app_name(value: object) -> str:
    """``value`` if it is a valid app name, else ``InvalidInput``."""
    if not is_app_name(value):
        raise InvalidInput(f"{value!r} is not a valid app name: {APP_NAME_RULE}")
    assert isinstance(value, str)
    return value


def normalize_domain(value: str) -> str:
    """A domain as users type it (``WWW.Example.com.``) in the form Billowin stores."""
    return value.strip().lower().rstrip(".")


def check_domain(value: object) -> str:
    """``value`` if it is a valid custom domain, else ``InvalidInput``."""
    if not is_domain(value):
        raise InvalidInput(f"{value!r} is not a valid domain name", hint="Use a name like www.example.com.")
    assert isinstance(value, str)
    return value


# -- Cluster nodes ------------------------------------------------------------------------------
# How a user names a Nomad client node (``nodes:drain NODE``): its name, or a prefix of its id.
# Node names are host names (Nomad's and Consul's default) or what the agent's config says; the
# pattern is what Billowin accepts of them: no '/', '?', '%' or space, so one never changes a URL
# path (``/v1/node/<id>``, ``/v1/agent/force-leave/<name>``).
NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
NODE_RULE = "a node's name, or at least the first 8 characters of its id (as `billowin nodes` shows)"
# A node id (a UUID); a prefix of one names a node only from this length on (``nodes`` shows
# this many), so a typo or a stray digit never picks some node by chance.
NODE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NODE_ID_PREFIX = re.compile(r"^[0-9a-f]{8}[0-9a-f-]{0,28}$")
SHORT_NODE_ID = 8


def is_node_ref(value: object) -> bool:
    return isinstance(value, str) and NODE.fullmatch(value) is not None


def check_node_ref(value: object) -> str:
    """``value`` if it may name a node (its name or an id prefix), else ``InvalidInput``."""
    if not is_node_ref(value):
        raise InvalidInput(f"{value!r} cannot name a node: use {NODE_RULE}")
    assert isinstance(value, str)
    return value


def is_node_id_prefix(value: str) -> bool:
    """Whether ``value`` is long enough, and of the right characters, to pick a node by its id."""
    return NODE_ID_PREFIX.fullmatch(value) is not None


# -- Certificate names --------------------------------------------------------------------------
# A name a certificate covers: a host name (at least one dot, or a bare name of letters such as
# ``localhost``, the development stack's domain), optionally behind ``*.`` for a wildcard.
HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
)
WILDCARD_PREFIX = "*."
# What a wildcard's ``*`` becomes in the certificate's id (a KV key part): no host name starts so.
WILDCARD_ID = "_wildcard."


def is_certificate_name(value: object) -> bool:
    if not isinstance(value, str):
        return False
    return HOST_NAME.fullmatch(value.removeprefix(WILDCARD_PREFIX)) is not None


def check_certificate_name(value: object) -> str:
    """``value`` (lowercased, without a final dot) if a certificate may cover it, else ``InvalidInput``."""
    name = normalize_domain(value) if isinstance(value, str) else value
    if not is_certificate_name(name):
        raise InvalidInput(
            f"{value!r} is not a name a certificate can cover",
            hint="Use a host name like shop.example.com, or *.example.com for a wildcard.",
        )
    assert isinstance(name, str)
    return name


def certificate_id(names: list[str] | tuple[str, ...]) -> str:
    """The id a certificate is stored under: its first name, a wildcard's ``*.`` as ``_wildcard.``."""
    first = check_certificate_name(names[0])
    return WILDCARD_ID + first.removeprefix(WILDCARD_PREFIX) if first.startswith(WILDCARD_PREFIX) else first


# -- KV keys ------------------------------------------------------------------------------------
# A key is made of app names, numbers, token ids, UUIDs and domains; the Consul adapter checks
# every key with this before it becomes part of a URL (and the tests' in-memory KV does too).
MAX_KEY = 512
KEY_PART = re.compile(r"[A-Za-z0-9_.-]{1,255}")
KEY_RULE = "'/'-separated parts of letters, digits, '-', '_' and '.', none empty, '.' or '..'"


def check_key(key: object, *, prefix: bool = False, root: bool = False) -> str:
    """``key`` if it is a KV key Billowin may send to Consul, else ``InvalidInput``.

    A ``prefix`` may end in one ``/``; with ``root`` it may also be empty (the whole
    store, for reads). Never a leading ``/``, an empty part, ``.``, ``..`` or any
    character outside the safe set: each would change the URL py-consul builds.
    """
    if not isinstance(key, str):
        raise InvalidInput(f"a KV key must be a string, not {type(key).__name__}")
    if key == "" and prefix and root:
        return key
    path = key[:-1] if prefix and key.endswith("/") else key
    parts = path.split("/")
    if len(key) > MAX_KEY or not all(KEY_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise InvalidInput(f"{key[:80]!r} is not a valid KV key: {KEY_RULE}")
    return key
