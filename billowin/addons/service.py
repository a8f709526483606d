"""Add-ons: create, attach, detach, destroy; the thread that provisions them and backs them up.

``addons:create`` only records the add-on (state ``provisioning``) and wakes the worker, so
the answer is quick and an API that dies half-way loses nothing: the worker (a thread in every
API, one add-on at a time under its Consul lock ``billowin/addon-locks/<name>``) takes every
add-on that is not ready yet from wherever it got to. Each step is idempotent:

1. the image: in the registry already, or built with Packer and pushed (``images.py``);
2. the credentials: a random password, written once to the config store (``addon-<name>``);
3. the Nomad job (``jobspecs/addon.nomad.hcl``), registered, then followed until Consul says
   its check passes; the node it landed on is recorded, and every later version of the job is
   constrained to it (the volume is there);
4. each attachment: the app's ``DATABASE_URL`` / ``REDIS_URL`` is set through
   ``Platform.change_config``, which rolls out a new release like any ``config:set``.

The same thread captures the scheduled backups (``backups.py``).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from billowin.addons.backups import Backup, Backups, RestoreResult
from billowin.addons.images import AddonImages, check_version
from billowin.addons.model import (
    KINDS,
    MAX_NAME,
    Addon,
    AddonView,
    Attachment,
    Kind,
    State,
    check_addon_name,
    check_attach_var,
    kind_version,
    new_password,
    parse_kind,
    view,
)
from billowin.addons.store import AddonStore
from billowin.errors import BillowinError, Conflict, InvalidInput, NotFound, ServiceError
from billowin.pipeline.jobs import Job
from billowin.pipeline.lock import AppLock
from billowin.ports import ConfigStore, ContainerEngine, Scheduler, ServiceRegistry
from billowin.release.jobspec import ContainerLogs, render
from billowin.release.shell import Shell
from billowin.rounds import Rounds
from billowin.settings import Settings

if TYPE_CHECKING:
    from billowin.platform import Platform

log = logging.getLogger(__name__)
TEMPLATE = "addon.nomad.hcl"
LOCKS = "billowin/addon-locks"
KILL_SIGNAL = {Kind.POSTGRES: "SIGINT", Kind.REDIS: "SIGTERM"}  # Postgres: a fast shutdown


class AddonJob(ContainerLogs):
    """The variables of ``jobspecs/addon.nomad.hcl``."""

    job_id: str = Field(pattern=r"^addon-[a-z][a-z0-9-]{0,62}$")
    name: str
    kind: str
    version: str = Field(pattern=r"^[0-9]{1,3}$")
    image: str = Field(pattern=r"^[A-Za-z0-9._:/@-]{1,255}$")
    port: int = Field(ge=1024, le=65535)
    container_port: int
    host_network: str = Field(pattern=r"^[A-Za-z0-9_-]{1,63}$")
    network_mode: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    volume: str
    data: str
    user: str
    database: str
    kill_signal: str
    node: str | None = Field(None, pattern=r"^[0-9a-f-]{36}$")
    script: str
    delimiter: str = Field(default_factory=lambda: f"billowin-{secrets.token_hex(8)}")
    config_template: str | None = None
    vault_policies: list[str] = Field(default_factory=list)
    cpu: int = 200
    memory: int = 256
    healthy_deadline: str = "5m"
    progress_deadline: str = "10m"


class CreateResult(BaseModel):
    addon: AddonView
    message: str


class AddonLock(AppLock):
    """One worker at a time per add-on, across every API process."""

    @staticmethod
    def key(app: str) -> str:
        return f"{LOCKS}/{app}"


def start_script(kind: Kind) -> str:
    return resources.files("billowin.addons").joinpath(f"scripts/{kind.value}.sh").read_text()


class Addons:
    def __init__(
        self,
        settings: Settings,
        *,
        platform: Platform,
        nomad: Scheduler,
        catalog: ServiceRegistry,
        config: ConfigStore,
        docker: ContainerEngine,
        images: AddonImages,
        backups: Backups,
        interval: float = 30,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.store = AddonStore(platform.kv)
        self.nomad = nomad
        self.catalog = catalog
        self.config = config
        self.docker = docker
        self.images = images
        self.backups = backups
        self.lock = AddonLock(platform.kv)
        self.rounds = Rounds("billowin-addons", self.run_once, interval)

    # -- what users ask for ---------------------------------------------------------------
    def create(
        self,
        app: str,
        kind_name: str,
        *,
        name: str | None = None,
        version: str | None = None,
        as_: str | None = None,
    ) -> CreateResult:
        self.platform.apps.get(app)
        kind = parse_kind(kind_name)
        version = version or kind_version(kind_name)
        chosen = check_version(self.settings, kind, version)
        if (retried := self._retry_failed(app, kind, name)) is not None:
            return retried
        var = check_attach_var(as_ or KINDS[kind].var)
        self._check_var_free(app, var)
        addon_name = check_addon_name(name) if name else self._free_name(f"{app}-{kind.value}")
        addon = Addon(
            name=addon_name,
            kind=kind,
            version=chosen,
            app=app,
            port=self._free_port(),
            attachments=[Attachment(app=app, var=var)],
        )
        self.store.create(addon)
        self.wake()
        return CreateResult(
            addon=view(addon),
            message=f"Creating {addon_name} ({kind.value} {chosen}) for {app}; {var} is set once it is up.",
        )

    def _retry_failed(self, app: str, kind: Kind, name: str | None) -> CreateResult | None:
        """``addons:create`` for an add-on of the app that failed: provision it again."""
        failed = [
            a
            for a in self.store.of_app(app)
            if a.app == app and a.kind == kind and a.state == State.FAILED and name in (None, a.name)
        ]
        if not failed:
            return None
        addon = failed[0]

        def again(record: Addon) -> None:
            record.state, record.reason = State.PROVISIONING, ""

        addon = self.store.update(addon.name, again)
        self.wake()
        return CreateResult(addon=view(addon), message=f"Trying {addon.name} again (it failed before).")

    def listing(self, app: str | None = None) -> list[AddonView]:
        if app is not None:
            self.platform.apps.get(app)
        found = self.store.of_app(app) if app else self.store.all()
        return [self.info_of(a) for a in found]

    def info(self, name: str) -> AddonView:
        return self.info_of(self.store.get(check_addon_name(name)))

    def info_of(self, addon: Addon) -> AddonView:
        return view(addon, self._status(addon), self.backups.of(addon))

    def attach(self, name: str, app: str, as_: str | None = None) -> Job | None:
        addon = self.store.get(check_addon_name(name))
        self.platform.apps.get(app)
        var = check_attach_var(as_ or addon.spec.var)
        if addon.attached(app):
            raise Conflict(f"{name} is already attached to {app}", hint=f"`billowin addons {app}` lists it.")
        self._check_var_free(app, var)

        def add(record: Addon) -> None:
            record.attachments.append(Attachment(app=app, var=var))

        addon = self.store.update(name, add)
        if addon.state != State.READY:
            self.wake()  # linked once it is ready
            return None
        return self._link(addon, app)

    def detach(self, name: str, app: str) -> Job | None:
        addon = self.store.get(check_addon_name(name))
        attachment = addon.attached(app)
        if attachment is None:
            raise NotFound(f"{name} is not attached to {app}")
        if app == addon.app:
            raise Conflict(
                f"{app} created {name}: it cannot be detached from it",
                hint=f"Destroy it instead: `billowin addons:destroy {name} --confirm {name}`.",
            )

        def drop(record: Addon) -> None:
            record.attachments = [a for a in record.attachments if a.app != app]

        self.store.update(name, drop)
        return self.platform.change_config(app, {}, [attachment.var]) if attachment.linked else None

    def destroy(self, name: str, *, confirm: str, leaving: str | None = None) -> list[Job]:
        """Stop the add-on's job, unset its config var on every app (but ``leaving``, an app
        being destroyed), remove its volume, credentials and backups. ``confirm`` must be the
        add-on's name."""
        addon = self.store.get(check_addon_name(name))
        if confirm != name:
            raise InvalidInput(
                f"destroying {name} deletes its data and its backups for good",
                hint=f"Run it again with `--confirm {name}`.",
            )
        with self.lock.hold(name, wait=self.settings.deploy_timeout) as held:
            if not held:
                raise Conflict(f"{name} is being provisioned or backed up", hint="Try again in a minute.")
            jobs = [
                self.platform.change_config(a.app, {}, [a.var])
                for a in addon.attachments
                if a.linked and a.app != leaving
            ]
            self.nomad.stop(addon.job, purge=True)
            self._remove_volume(addon)
            self.config.delete(addon.job)
            self.backups.forget(addon)
            self.store.delete(addon)
        return [job for job in jobs if job is not None]

    def app_destroyed(self, app: str) -> None:
        """``apps:destroy``: the add-ons ``app`` created go with it (their other apps lose the
        config var); the ones it was only attached to just lose the attachment."""
        for addon in self.store.of_app(app):
            if addon.app == app:
                self.destroy(addon.name, confirm=addon.name, leaving=app)
                continue

            def drop(record: Addon) -> None:
                record.attachments = [a for a in record.attachments if a.app != app]

            self.store.update(addon.name, drop)

    def shell(self, app: str, name: str | None, *, tty: bool, timeout: float = 3600) -> Shell:
        """``pg:psql`` / ``redis:cli``: the client in a one-off run of the add-on's image with the
        app's config vars, connected with the URL the app has."""
        addon = self._ready(self.of_app(app, name))
        attachment = addon.attached(app)
        assert attachment is not None
        client = "psql" if addon.kind == Kind.POSTGRES else "redis-cli --no-auth-warning -u"
        command = f'exec {client} "${attachment.var}"'
        spec = self.platform.run_spec(app, command, image=addon.image)
        if self.platform.shells is None:
            raise InvalidInput("this API runs no interactive commands")
        return self.platform.shells.open(spec, ["sh", "-c", command], tty=tty, timeout=timeout)

    def restart(self, name: str) -> int:
        addon = self.store.get(check_addon_name(name))
        return self.nomad.restart(addon.job)

    def of_app(self, app: str, name: str | None, kind: Kind | None = None) -> Addon:
        """The add-on ``name`` attached to ``app``; without a name, the app's only one (of ``kind``)."""
        self.platform.apps.get(app)
        if name is not None:
            addon = self.store.get(check_addon_name(name))
            if addon.attached(app) is None:
                raise NotFound(
                    f"{name} is not attached to {app}", hint=f"`billowin addons {app}` lists its add-ons."
                )
            return addon
        found = [a for a in self.store.of_app(app) if a.attached(app) and (kind is None or a.kind == kind)]
        what = f"{kind.value} add-on" if kind else "add-on"
        if not found:
            raise NotFound(
                f"{app} has no {what}",
                hint=f"Create one: `billowin addons:create {app} {(kind or 'postgres')}`.",
            )
        if len(found) > 1:
            names = ", ".join(a.name for a in found)
            raise Conflict(f"{app} has several: {names}", hint="Name the add-on you mean.")
        return found[0]

    def _ready(self, addon: Addon) -> Addon:
        if addon.state != State.READY:
            raise Conflict(
                f"{addon.name} is {addon.state.value}" + (f": {addon.reason}" if addon.reason else ""),
                hint=f"`billowin addons:info {addon.app} {addon.name}` shows how it is going.",
            )
        return addon

    def capture(self, app: str, name: str | None) -> Backup:
        addon = self._ready(self.of_app(app, name))
        with self.lock.hold(addon.name, wait=self.settings.deploy_timeout) as held:
            if not held:
                raise Conflict(f"{addon.name} is busy (being provisioned or backed up)", hint="Try again.")
            backup = self.backups.capture(addon, trigger="manual")
            self.backups.prune(addon)
            return backup

    def restore(
        self, app: str, name: str | None, backup_id: str | None, *, into: str | None = None
    ) -> RestoreResult:
        """Restore a backup of the app's add-on into it, or into another add-on of the app."""
        source = self.of_app(app, name)
        backup = self.backups.get(source, backup_id)
        target = self._ready(self.of_app(app, into) if into else source)
        with self.lock.hold(target.name, wait=self.settings.deploy_timeout) as held:
            if not held:
                raise Conflict(f"{target.name} is busy (being provisioned or backed up)", hint="Try again.")
            return self.backups.restore(source, backup, target)

    def credentials(self, addon: Addon) -> dict[str, str]:
        _, values = self.config.latest(addon.job)
        return values

    # -- checks --------------------------------------------------------------------------
    def _check_var_free(self, app: str, var: str) -> None:
        _, values = self.config.latest(app)
        if var in values:
            raise Conflict(
                f"{app} already has a config var {var}",
                hint=f"Unset it first (`billowin config:unset {app} {var}`), or give another with --as.",
            )
        for other in self.store.of_app(app):
            if (att := other.attached(app)) is not None and att.var == var:
                raise Conflict(
                    f"{other.name} already sets {var} on {app}", hint="Give another config var with --as."
                )

    def _free_name(self, stem: str) -> str:
        stem = stem[: MAX_NAME - 3].rstrip("-")  # room for "-NN"; a name never ends in "-"
        taken = {a.name for a in self.store.all()}
        for n in range(1, 100):
            candidate = stem if n == 1 else f"{stem}-{n}"
            if candidate not in taken:
                return check_addon_name(candidate)
        raise Conflict(f"too many add-ons named {stem}-…", hint="Give a name with --name.")

    def _free_port(self) -> int:
        low, high = self.settings.addon_port_range
        taken = self.store.taken_ports()
        for port in range(low, high + 1):
            if port not in taken:
                return port
        raise Conflict(
            f"every add-on port from {low} to {high} is taken",
            hint="Destroy an add-on you no longer use, or widen BILLOWIN_ADDON_PORTS.",
        )

    def _status(self, addon: Addon) -> str:
        if addon.state != State.READY:
            return addon.state.value
        try:
            return "up" if self.catalog.healthy_instances(addon.job) else "down"
        except BillowinError:
            return "unknown"

    # -- provisioning ----------------------------------------------------------------------
    def provision(self, name: str, log_line: Callable[[str], None] = log.info) -> Addon:
        """Take the add-on from wherever it got to up to ready and linked (see the module doc)."""
        addon = self.store.get(name)
        try:
            if not addon.image:
                image = self.images.ensure(addon.kind, addon.version, log_line)
                addon = self.store.update(name, lambda a: setattr(a, "image", image))
            password = self._ensure_credentials(addon)
            if addon.state != State.READY:
                self.submit(addon)
                addon = self._wait_ready(addon)
            for attachment in addon.attachments:
                if not attachment.linked:
                    self._link(addon, attachment.app, password)
            return self.store.get(name)
        except BillowinError as exc:
            reason = exc.message
            log.warning("add-on %s: %s", name, reason)
            if self.store.get(name).state == State.READY:
                raise  # it runs: linking it is tried again on the worker's next round

            def failed(record: Addon) -> None:
                record.state, record.reason = State.FAILED, reason

            with contextlib.suppress(BillowinError):
                self.store.update(name, failed)
            raise

    def _ensure_credentials(self, addon: Addon) -> str:
        values = self.credentials(addon)
        if "PASSWORD" not in values:
            if self.docker.volume_exists(addon.volume):
                # Data no record of Billowin's knows of: never hand it to an app as a new database.
                raise Conflict(
                    f"a Docker volume {addon.volume} is already there, from an add-on that was not destroyed",
                    hint=f"Look at it; remove it (`docker volume rm {addon.volume}`) or keep it and "
                    f"destroy this add-on, then create one with another --name.",
                )
            password = new_password()
            values = {"PASSWORD": password}
            if addon.kind == Kind.REDIS:
                values["REDISCLI_AUTH"] = password  # what redis-cli reads (backups, redis:cli)
            self.config.write(addon.job, values)
        return values["PASSWORD"]

    def job_spec(self, addon: Addon) -> AddonJob:
        version, _ = self.config.latest(addon.job)
        config_template = self.config.template(addon.job, version)
        spec = addon.spec
        return AddonJob(
            job_id=addon.job,
            name=addon.name,
            kind=addon.kind.value,
            version=addon.version,
            image=addon.image,
            port=addon.port,
            container_port=spec.port,
            host_network=self.settings.addon_host_network,
            network_mode=self.settings.app_network,
            volume=addon.volume,
            data=spec.data,
            user=spec.user,
            database=addon.database(),
            kill_signal=KILL_SIGNAL[addon.kind],
            node=addon.node,
            script=start_script(addon.kind),
            config_template=config_template,
            vault_policies=self.config.job_vault_policies(addon.job),
            memory=self.settings.addon_memory_mb,
        )

    def submit(self, addon: Addon) -> None:
        job = self.nomad.parse(render(self.settings.jobspecs_dir, TEMPLATE, self.job_spec(addon)))
        self.nomad.submit(job)

    def _wait_ready(self, addon: Addon) -> Addon:
        timeout = self.settings.addon_ready_timeout
        try:
            instances = self.catalog.wait_for_healthy(addon.job, count=1, timeout=timeout)
        except ServiceError as exc:
            raise ServiceError(
                "nomad",
                f"{addon.name} did not start within {timeout:.0f}s: {exc.message}",
                hint=f"Its output: `nomad alloc logs -job {addon.job}`; then "
                f"`billowin addons:create {addon.app} {addon.kind.value}` again.",
            ) from exc
        node = next(
            (
                a.get("NodeID")
                for a in self.nomad.allocations(addon.job)
                if a.get("ClientStatus") == "running"
            ),
            None,
        )
        address = instances[0].address

        def ready(record: Addon) -> None:
            record.state, record.reason, record.address = State.READY, "", address
            record.node = record.node or node

        return self.store.update(addon.name, ready)

    def follow_address(self, addon: Addon) -> list[Job]:
        """If the add-on now answers at another address (the apps' Docker network was made
        anew, as on a restored box), record it and give every attached app the new URL."""
        instances = self.catalog.healthy_instances(addon.job)
        if not instances or instances[0].address == addon.address:
            return []
        address = instances[0].address
        log.warning(
            "add-on %s moved from %s to %s; its apps get the new URL", addon.name, addon.address, address
        )
        addon = self.store.update(addon.name, lambda r: setattr(r, "address", address))
        return [job for a in addon.attachments if a.linked and (job := self._link(addon, a.app)) is not None]

    def _link(self, addon: Addon, app: str, password: str | None = None) -> Job | None:
        password = password or self.credentials(addon)["PASSWORD"]
        attachment = addon.attached(app)
        assert attachment is not None
        job = self.platform.change_config(app, {attachment.var: addon.url(password)}, [])

        def linked(record: Addon) -> None:
            for att in record.attachments:
                if att.app == app:
                    att.linked, att.job = True, job.id if job else ""

        self.store.update(addon.name, linked)
        return job

    def _remove_volume(self, addon: Addon) -> None:
        """The volume goes once Docker has let go of the stopped container."""
        deadline = time.monotonic() + self.settings.deploy_timeout
        label = f"billowin.addon={addon.name}"
        while self.docker.running_containers(label=label) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.docker.remove_containers(label=label)
        self.docker.remove_volume(addon.volume)

    # -- the worker -------------------------------------------------------------------------
    def start(self) -> None:
        self.rounds.start()

    def stop(self) -> None:
        self.rounds.stop()

    def wake(self) -> None:
        self.rounds.wake()

    def run_once(self) -> None:
        for addon in self.store.all():
            if self.rounds.stopping:
                return
            unlinked = any(not a.linked for a in addon.attachments)
            pending = addon.state == State.PROVISIONING or (addon.state == State.READY and unlinked)
            if addon.state == State.READY and not pending:
                with contextlib.suppress(BillowinError):
                    self.follow_address(addon)
            due = addon.state == State.READY and self.backups.due(addon)
            if not (pending or due):
                continue
            with self.lock.hold(addon.name, wait=0) as held:
                if not held:
                    continue
                try:
                    if pending:
                        self.provision(addon.name)
                    elif due:
                        self.backups.capture(addon, trigger="scheduled")
                        self.backups.prune(addon)
                except BillowinError:
                    continue  # recorded on the add-on (provision) or logged (backups)
