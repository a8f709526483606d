"""Apps' config vars (``config:set``): which store keeps them, and what a valid one is.

Config vars are stored as immutable numbered versions in a ``ConfigStore``:
Nomad Variables by default (nothing more to run), or Vault's KV v2 when
``BILLOWIN_CONFIG_BACKEND=vault``. Both adapters check keys, values and app
names here, so the two back ends accept exactly the same input.

Error messages name keys, never values: values are secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from billowin.errors import InvalidInput
from billowin.names import check_app_name

# An environment variable name, as a POSIX shell accepts it.
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_KEY_LENGTH = 256
# Keys Billowin keeps for itself inside a stored version (e.g. the empty-config marker).
RESERVED_PREFIX = "__billowin"


def validate_key(key: object) -> str:
    """``key`` if it is a config var name Billowin accepts, else ``InvalidInput`` saying why."""
    if not isinstance(key, str):
        raise InvalidInput(f"a config var name must be a string, not {type(key).__name__}")
    if not key:
        raise InvalidInput("a config var name cannot be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"config var name {key[:40]!r}… is longer than {MAX_KEY_LENGTH} characters")
    if not KEY.fullmatch(key):
        raise InvalidInput(
            f"{key!r} is not a valid config var name: use letters, digits and '_', "
            "not starting with a digit (like DATABASE_URL)"
        )
    if key.lower().startswith(RESERVED_PREFIX):
        raise InvalidInput(f"config var names starting with {RESERVED_PREFIX!r} are reserved for Billowin")
    return key


def validate_values(values: Mapping[str, str]) -> dict[str, str]:
    """A plain copy of ``values`` once every key and value is acceptable (messages never show values)."""
    if not isinstance(values, Mapping):
        raise InvalidInput("config vars must be a mapping of names to strings")
    out: dict[str, str] = {}
    for key, value in values.items():
        validate_key(key)
        if not isinstance(value, str):
            raise InvalidInput(f"the value of {key} must be a string, not {type(value).__name__}")
        if "\x00" in value:
            raise InvalidInput(f"the value of {key} contains a NUL character, which no environment can hold")
        out[key] = value
    return out


def validate_app(app: str) -> str:
    """``app`` if it is a valid app name (it becomes part of a storage path)."""
    return check_app_name(app)


def parse_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """``["KEY=value", ...]`` (as ``config:set`` takes them) as a dict; later ones win.

    A value may itself contain '=' and may be empty (``KEY=``).
    """
    out: dict[str, str] = {}
    for position, item in enumerate(assignments, start=1):
        if not isinstance(item, str):
            raise InvalidInput(f"assignment {position} must be a string like KEY=value")
        key, sep, value = item.partition("=")
        if not sep:
            # The argument is not echoed: it may be a value typed without its key.
            raise InvalidInput(f"assignment {position} has no '=': write it as KEY=value")
        out[validate_key(key)] = value
    return validate_values(out)


def env_line_template(key: str, value: str) -> str:
    """One Nomad template line ``KEY="value"``: go-envparse reads JSON string escapes in quotes."""
    return "{{ " + key + " }}={{ " + value + " | toJSON }}\n"
