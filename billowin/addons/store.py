"""Add-on records in Consul KV (``model.py`` says where), always changed with check-and-set."""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import ValidationError

from billowin.addons.model import PORT_PREFIX, PREFIX, Addon
from billowin.errors import Conflict, NotFound
from billowin.ports import KeyValueStore, KVWrite

log = logging.getLogger(__name__)
ATTEMPTS = 20


def key(name: str) -> str:
    return f"{PREFIX}/{name}/record"


def port_key(port: int) -> str:
    return f"{PORT_PREFIX}/{port}/claim"


class AddonStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    def find(self, name: str) -> tuple[int, Addon | None]:
        index, raw = self.kv.kv_get(key(name))
        return index, self._parse(raw)

    def get(self, name: str) -> Addon:
        _, addon = self.find(name)
        if addon is None:
            raise NotFound(f"no add-on {name!r}", hint="`billowin addons` lists them.")
        return addon

    def all(self) -> list[Addon]:
        entries = self.kv.kv_entries(f"{PREFIX}/")
        found = [self._parse(entry.value) for entry in entries if entry.key.endswith("/record")]
        return sorted((a for a in found if a is not None), key=lambda a: a.name)

    def of_app(self, app: str) -> list[Addon]:
        """The add-ons ``app`` created or is attached to."""
        return [a for a in self.all() if a.app == app or a.attached(app)]

    def create(self, addon: Addon) -> None:
        """Record a new add-on and claim its port, in one transaction: neither is taken twice."""
        created = self.kv.kv_txn(
            [
                KVWrite(key(addon.name), addon.model_dump_json().encode(), cas=0),
                KVWrite(port_key(addon.port), addon.name.encode(), cas=0),
            ]
        )
        if not created:
            _, existing = self.find(addon.name)
            if existing is not None:
                raise Conflict(
                    f"there is already an add-on {addon.name!r} (of {existing.app})",
                    hint="Give another name with --name.",
                )
            raise Conflict(f"port {addon.port} was just taken by another add-on", hint="Try again.")

    def taken_ports(self) -> set[int]:
        ports = set()
        for name in self.kv.kv_keys(f"{PORT_PREFIX}/"):
            tail = name.removeprefix(f"{PORT_PREFIX}/").split("/", 1)[0]
            if tail.isdigit():
                ports.add(int(tail))
        return ports

    def update(self, name: str, change: Callable[[Addon], None]) -> Addon:
        """Apply ``change`` to the newest record, with check-and-set, retrying on a race."""
        for _ in range(ATTEMPTS):
            index, addon = self.find(name)
            if addon is None:
                raise NotFound(f"no add-on {name!r}", hint="`billowin addons` lists them.")
            change(addon)
            if self.kv.kv_put(key(name), addon.model_dump_json().encode(), cas=index):
                return addon
        raise Conflict(f"the add-on {name} is being changed by someone else", hint="Try again.")

    def delete(self, addon: Addon) -> None:
        self.kv.kv_delete_tree(f"{PORT_PREFIX}/{addon.port}/")
        self.kv.kv_delete_tree(f"{PREFIX}/{addon.name}/")

    @staticmethod
    def _parse(raw: bytes | None) -> Addon | None:
        if raw is None:
            return None
        try:
            return Addon.model_validate_json(raw)
        except ValidationError:
            log.warning("an add-on record does not parse; it is left alone")
            return None
