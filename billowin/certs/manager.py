"""Which certificates Billowin wants, and ordering what is missing or due: ``CertificateManager``.

A thread in the API process (like the monitoring collector and the backup schedule) runs
``run_once`` every ``interval`` seconds, and at once when woken (``apps:create``,
``domains:add``). ``wanted`` is:

- ``<app>.<domain>`` for each app, unless a wildcard ``*.<domain>`` certificate that has not
  expired is stored (it covers every app's name, with no issuance per app);
- each custom domain of each app;
- the API's own name (``billowin.<domain>``) on a production box.

For each, ``needs_attempt`` (``billowin/certs/service.py``) decides: nothing is ordered while a
stored certificate is valid and not due for renewal, nor while a failure's back-off holds, and
an uploaded certificate (``certs:add``) is never ordered. So an API restart orders nothing
that is stored. Before ordering, the manager takes the certificate's lock
(``billowin/cert-locks/<id>``, held by a Consul session like the pipeline's per-app lock) and
reads the record again: two API processes never order the same certificate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from billowin.apps.store import App, AppStore
from billowin.certs.service import Certificates, needs_attempt, utcnow
from billowin.errors import BillowinError
from billowin.names import WILDCARD_PREFIX, certificate_id
from billowin.pipeline.lock import AppLock
from billowin.ports import CertificateRecord, CertificateStore, Coordinator
from billowin.rounds import Rounds

log = logging.getLogger(__name__)

LOCKS = "billowin/cert-locks"


class CertificateLock(AppLock):
    """One holder per certificate id across every API process."""

    @staticmethod
    def key(app: str) -> str:
        return f"{LOCKS}/{app}"


class CertificateManager:
    def __init__(
        self,
        certificates: Certificates,
        apps: AppStore,
        kv: Coordinator,
        *,
        domain: str,
        api_hostname: str = "",
        interval: float = 3600,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.certificates = certificates
        self.apps = apps
        self.lock = CertificateLock(kv)
        self.domain = domain
        self.api_hostname = api_hostname
        self.clock = clock
        self.rounds = Rounds("billowin-certificates", self.run_once, interval)

    def wanted(self) -> list[tuple[str, ...]]:
        """The names of each certificate Billowin should hold, one tuple per certificate."""
        now = self.clock()
        wildcard = self.certificates.get(certificate_id([f"{WILDCARD_PREFIX}{self.domain}"]))
        covered = wildcard is not None and wildcard.not_after is not None and wildcard.not_after > now
        out: list[tuple[str, ...]] = []
        for app in self.apps.all():
            if not covered:
                out.append((f"{app.name}.{self.domain}",))
            out.extend((d,) for d in app.domains)
        if self.api_hostname:
            out.append((self.api_hostname,))
        return list(dict.fromkeys(out))

    def run_once(self) -> list[CertificateRecord]:
        """Order every wanted certificate that is missing or due; the records of what was tried."""
        tried = []
        for names in self.wanted():
            try:
                record = self._maybe_issue(names)
            except BillowinError as exc:  # Consul or a name: this one waits for the next round
                log.warning("certificate for %s not tried: %s", ", ".join(names), exc.message)
                continue
            except Exception:  # a bug: logged, and the others still get their turn
                log.exception("certificate for %s failed unexpectedly", ", ".join(names))
                continue
            if record is not None:
                tried.append(record)
        return tried

    def _due(self, names: tuple[str, ...]) -> bool:
        record = self.certificates.get(certificate_id(names))
        if record is None:
            return True
        if record.names != names:
            return record.source == "acme"
        return needs_attempt(record, self.clock())

    def _maybe_issue(self, names: tuple[str, ...]) -> CertificateRecord | None:
        if not self._due(names):
            return None
        with self.lock.hold(certificate_id(names)) as held:
            if not held or not self._due(names):  # another process orders it, or just did
                return None
            return self.certificates.issue(list(names))

    # -- the thread ------------------------------------------------------------------------------
    def wake(self) -> None:
        """Look again now (a new app or domain)."""
        self.rounds.wake()

    def start(self) -> None:
        self.rounds.start()

    def stop(self, timeout: float = 5) -> None:
        self.rounds.stop(timeout)


@dataclass(frozen=True)
class NameCertificate:
    """What ``certs APP`` shows for one of the app's names."""

    name: str
    certificate: str = ""  # the id of the certificate that covers it; "" when none does
    status: str = "none"  # none | pending | valid | failed | expired
    source: str = ""
    issuer: str = ""
    not_after: datetime | None = None
    last_error: str = ""
    hint: str = ""
    next_attempt: datetime | None = None
    failing_since: datetime | None = None  # failing to be ordered since then (Billowin's own only)


def certificates_of(
    lookup: Callable[[str], CertificateRecord | None], app: App, domain: str, now: datetime | None = None
) -> list[NameCertificate]:
    """Each name of ``app`` (``<app>.<domain>``, then its custom domains) with its certificate;
    ``lookup`` is the store's ``get`` (or a dict's, over one listing of the store)."""
    now = now or utcnow()
    out = []
    wildcard = lookup(certificate_id([f"{WILDCARD_PREFIX}{domain}"]))
    for name in (f"{app.name}.{domain}", *app.domains):
        record = lookup(certificate_id([name]))
        if (record is None or record.not_after is None) and name == f"{app.name}.{domain}" and wildcard:
            record = wildcard
        if record is None:
            out.append(NameCertificate(name))
            continue
        status = record.status
        if record.not_after is not None and record.not_after <= now:
            status = "expired"
        out.append(
            NameCertificate(
                name,
                record.id,
                status,
                record.source,
                record.issuer,
                record.not_after,
                record.last_error,
                record.hint,
                record.next_attempt,
                record.failing_since if record.source == "acme" else None,
            )
        )
    return out


@dataclass(frozen=True)
class FailingName:
    """One of an app's names whose certificate Billowin keeps failing to issue or renew."""

    name: str
    since: float  # unix seconds of the first failure in the current run
    last_error: str


def failing_certificates(
    store: CertificateStore, apps: AppStore, domain: str
) -> dict[str, list[FailingName]]:
    """For every app, the names whose certificate is failing (for the monitoring's alert rule);
    one listing of the store, whatever the number of apps."""
    records = {r.id: r for r in store.all()}
    out: dict[str, list[FailingName]] = {}
    for app in apps.all():
        out[app.name] = [
            FailingName(row.name, row.failing_since.timestamp(), row.last_error)
            for row in certificates_of(records.get, app, domain)
            if row.status == "failed" and row.failing_since is not None
        ]
    return out
