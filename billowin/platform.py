"""What users do to their apps, Heroku-style: the one service the HTTP API calls.

Anything that changes what runs (a deploy, config vars, domains, a rollback)
becomes a job of the deploy pipeline (``billowin.pipeline``), so every
rollout goes through the same per-app lock, release records and statuses.
Scale and restart act on Nomad directly, as on Heroku they are not releases.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime

from pydantic import BaseModel

from billowin.apps.store import App, AppStore, AppVolume
from billowin.build.builder import Builder
from billowin.build.source import redact_url
from billowin.certs.service import check_upload
from billowin.config.vars import validate_key
from billowin.errors import Conflict, InvalidInput, NotFound
from billowin.names import ADDON_PREFIX, RESERVED_APP_NAMES, certificate_id, check_domain, normalize_domain
from billowin.pipeline.jobs import Job, JobKind, JobStore
from billowin.pipeline.lock import AppLock
from billowin.pipeline.reporting import JobOutput
from billowin.ports import CertificateRecord, CertificateStore, ConfigStore, Coordinator, Scheduler
from billowin.release.deploy import Deployer
from billowin.release.logs import AppLogs, LogLine, instance_name
from billowin.release.oneoff import RunEvent, RunJob, Runner
from billowin.release.shell import Shell, Shells
from billowin.release.store import Release, ReleaseStatus, ReleaseStore, newest_live
from billowin.router.certs import NO_REDIRECT_PREFIX
from billowin.settings import Settings

SHA = re.compile(r"^[0-9a-f]{40}$")
IMAGE = re.compile(r"^[A-Za-z0-9._:/@-]{1,255}$")
MAX_SCALE = 100
ONE_OFF = re.compile(r"(run|release)-[0-9a-f]{8}")  # after "<app>-": a one-off run's job id


class InstanceStatus(BaseModel):
    """One instance (a Nomad allocation), like a line of ``heroku ps``."""

    name: str  # web.1
    process: str  # web
    alloc: str
    state: str  # pending | running | complete | failed | lost
    release: str | None
    restarts: int
    started_at: datetime | None
    age_seconds: int | None
    node: str | None = None  # the Nomad node it runs on (its name; its id's start when it has none)
    pinned_by: list[str] = []  # its volumes (volumes:add): it runs on that node only


class ProcessSummary(BaseModel):
    process: str
    desired: int
    running: int


class AppInfo(BaseModel):
    name: str
    url: str
    repository: str
    github_repo: str | None
    branch: str
    deploy_on: str
    domains: list[str]
    release: Release | None
    processes: list[ProcessSummary]


class ConfigVars(BaseModel):
    app: str
    version: int
    values: dict[str, str | None]  # None unless the caller asked to see values


def _spec_versions(history: list[Release]) -> Iterator[tuple[int, str]]:
    """(Nomad job version, the release whose spec it runs) for every version a release made."""
    live: Release | None = None
    for release in history:
        if release.job_version is not None:
            yield release.job_version, release.name
        if release.reverted_to_version is not None and live is not None:
            yield release.reverted_to_version, live.name
        if release.status == ReleaseStatus.LIVE:
            live = release


def _seconds_since(nanos: int | None) -> tuple[datetime | None, int | None]:
    if not nanos:
        return None, None
    started = datetime.fromtimestamp(nanos / 1e9, UTC)
    return started, int((datetime.now(UTC) - started).total_seconds())


class Platform:
    def __init__(
        self,
        settings: Settings,
        *,
        nomad: Scheduler,
        kv: Coordinator,
        apps: AppStore,
        jobs: JobStore,
        releases: ReleaseStore,
        deployer: Deployer,
        config: ConfigStore,
        runner: Runner,
        logs: AppLogs,
        builder: Builder | None,
        output: JobOutput | None = None,
        names_changed: Callable[[], None] = lambda: None,
        certs: CertificateStore | None = None,
        taking_apart: Callable[[str], None] = lambda _app: None,
        shells: Shells | None = None,
    ) -> None:
        self.settings = settings
        self.shells = shells
        self.taking_apart = taking_apart  # the app's add-ons go with it (billowin/addons/)
        self.names_changed = names_changed  # a name may need a certificate
        self.certs = certs
        self.nomad = nomad
        self.kv = kv
        self.apps = apps
        self.jobs = jobs
        self.history = releases
        self.deployer = deployer
        self.config = config
        self.runner = runner
        self.logs = logs
        self.builder = builder
        self.lock = AppLock(kv)
        self.output = output or JobOutput(None)

    # -- apps ----------------------------------------------------------------
    def url(self, app: str) -> str:
        port = self.settings.router_port
        return f"http://{app}.{self.settings.domain}" + ("" if port == 80 else f":{port}")

    def create(self, app: App) -> App:
        """Create the app, claiming its custom domains (none may belong to another app)."""
        if app.name in RESERVED_APP_NAMES:
            raise InvalidInput(
                f"{app.name!r} is reserved: {app.name}.<domain> is Billowin's own API",
                hint="Pick another name.",
            )
        if app.name.startswith(ADDON_PREFIX):
            raise InvalidInput(
                f"{app.name!r} starts with {ADDON_PREFIX!r}: add-ons' Nomad jobs and services go by that",
                hint="Pick another name.",
            )
        claimed: list[str] = []
        try:
            for domain in app.domains:
                self._claim(app.name, domain)
                claimed.append(domain)
            created = self.apps.create(app)
        except BaseException:
            for domain in claimed:
                self.apps.release_domain(domain, app.name)
            raise
        self.names_changed()
        return created

    def info(self, name: str) -> AppInfo:
        app = self.apps.get(name)
        history = self.history.list(name)
        release = newest_live(history)
        job = self.nomad.current(name) or {}
        desired = {g["Name"]: g["Count"] for g in job.get("TaskGroups") or []}
        running: dict[str, int] = {}
        for inst in self._instances(name, history):
            if inst.state == "running":
                running[inst.process] = running.get(inst.process, 0) + 1
        return AppInfo(
            name=app.name,
            url=self.url(app.name),
            repository=redact_url(app.repository),
            github_repo=app.github_repo,
            branch=app.branch,
            deploy_on=app.deploy_on.value,
            domains=app.domains,
            release=release,
            processes=[
                ProcessSummary(process=p, desired=n, running=running.get(p, 0)) for p, n in desired.items()
            ],
        )

    def destroy(self, name: str) -> None:
        """Stop the app and remove its routes, images, config, releases, jobs and domains.

        It takes the app's pipeline lock first, so a deploy that is running ends before the
        app is taken apart and nothing it registers outlives the app.
        """
        self.apps.get(name)
        with self.lock.hold(name, wait=self.settings.deploy_timeout) as held:
            if not held:
                raise Conflict(
                    f"a deploy of {name} is still running",
                    hint=f"Follow it with `billowin builds {name}`, then destroy the app again.",
                )
            self._take_apart(name)

    def _nomad_jobs_of(self, name: str) -> list[str]:
        """The app's service job and its one-off runs (``<app>-run-<hex>`` whose meta names the app)."""
        found = []
        for job in self.nomad.jobs():
            job_id = job["ID"]
            if job_id == name:
                found.append(job_id)
            elif ONE_OFF.fullmatch(job_id.removeprefix(f"{name}-")) and job_id.startswith(f"{name}-"):
                spec = self.nomad.current(job_id) or {}
                if (spec.get("Meta") or {}).get("billowin.app") == name:
                    found.append(job_id)
        return found

    def _take_apart(self, name: str) -> None:
        app = self.apps.get(name)
        self.taking_apart(name)
        for job_id in self._nomad_jobs_of(name):
            self.nomad.stop(job_id, purge=True)
        self.config.delete(name)
        if self.builder is not None:
            # Nomad stops the instances gracefully (deregister, drain, SIGTERM); images go after.
            deadline = time.monotonic() + self.settings.deploy_timeout
            label = f"billowin.app={name}"
            while self.builder.docker.running_containers(label=label) and time.monotonic() < deadline:
                time.sleep(0.5)
            self.builder.forget(name)
            # Its volumes (volumes:add, those taken off since too) go once no container has them.
            self.builder.docker.remove_containers(label=label)
            self.builder.docker.remove_volumes(label=f"billowin_app={name}")
        self.history.delete(name)
        self.apps.delete(name)  # from here on, nothing can be queued for it
        self.jobs.delete(name)
        self.output.forget(name)
        for domain in app.domains:
            self.apps.release_domain(domain, name)
        self._forget_certificates([self.hostname(name), *app.domains])
        self.kv.kv_delete_tree(f"{NO_REDIRECT_PREFIX}/{name}")

    # -- config vars -----------------------------------------------------------
    def config_vars(self, name: str, *, reveal: bool = False) -> ConfigVars:
        self.apps.get(name)
        version, values = self.config.latest(name)
        return ConfigVars(
            app=name,
            version=version,
            values={k: (v if reveal else None) for k, v in sorted(values.items())},
        )

    def change_config(self, name: str, set_: Mapping[str, str], unset: list[str]) -> Job | None:
        """Write a new config version and roll it out as a new release. None if nothing changed."""
        self.apps.get(name)
        for key in [*set_, *unset]:
            validate_key(key)
        _, values = self.config.latest(name)
        new = {**values, **set_}
        for key in unset:
            new.pop(key, None)
        if new == values:
            return None
        self.config.write(name, new)
        what = [f"set {', '.join(sorted(set_))}"] if set_ else []
        what += [f"unset {', '.join(sorted(unset))}"] if unset else []
        return self.jobs.create(name, kind=JobKind.CONFIG, note=f"config: {'; '.join(what)}", source="api")

    # -- volumes -----------------------------------------------------------------
    def volumes(self, name: str) -> list[AppVolume]:
        return self.apps.get(name).volumes

    def add_volume(self, name: str, volume: AppVolume) -> Job:
        """Mount a persistent volume into a process type (a new release); its process type is
        then pinned to the node that holds it, and deployed stop-first."""

        def add(app: App) -> None:
            if any(v.name == volume.name for v in app.volumes):
                raise Conflict(f"{name} already has a volume {volume.name}", hint="Give it another name.")
            if any(v.process == volume.process and v.path == volume.path for v in app.volumes):
                raise Conflict(f"{volume.process} already has a volume at {volume.path}")
            pinned = {v.node for v in app.volumes if v.process == volume.process and v.node}
            app.volumes = [*app.volumes, volume.model_copy(update={"node": next(iter(pinned), None)})]

        self.apps.update(name, add)
        note = f"volumes: add {volume.name} at {volume.path} ({volume.process})"
        return self.jobs.create(name, kind=JobKind.VOLUMES, note=note, source="api")

    def remove_volume(self, name: str, volume: str) -> Job:
        """Unmount a volume (a new release). Its data stays in its Docker volume until the app
        is destroyed: taking a volume off never deletes files."""
        if not any(v.name == volume for v in self.apps.get(name).volumes):
            raise NotFound(f"{name} has no volume {volume!r}", hint=f"`billowin volumes {name}` lists them.")

        def remove(app: App) -> None:
            app.volumes = [v for v in app.volumes if v.name != volume]

        self.apps.update(name, remove)
        return self.jobs.create(name, kind=JobKind.VOLUMES, note=f"volumes: remove {volume}", source="api")

    # -- domains -----------------------------------------------------------------
    def _claim(self, name: str, domain: str) -> str:
        """Make ``name`` the owner of ``domain``, or say who has it. Returns the normalized domain."""
        domain = check_domain(normalize_domain(domain))
        own = self.settings.domain.lower().rstrip(".")
        if domain == own or domain.endswith(f".{own}"):
            raise InvalidInput(
                f"{domain} is under Billowin's own domain {own}: names there are the apps' own",
                hint=f"Every app already answers at <app>.{own}; add a domain of your own instead.",
            )
        for other in self.apps.all():  # records from before domains were claimed
            if other.name != name and domain in other.domains:
                raise Conflict(f"{domain} already belongs to {other.name}")
        owner = self.apps.claim_domain(domain, name)
        if owner != name:
            raise Conflict(f"{domain} already belongs to {owner}")
        return domain

    def add_domain(self, name: str, domain: str) -> Job:
        self.apps.get(name)
        domain = self._claim(name, domain)

        def add(app: App) -> None:
            if domain not in app.domains:
                app.domains = [*app.domains, domain]

        self.apps.update(name, add)
        self.names_changed()
        return self.jobs.create(name, kind=JobKind.DOMAINS, note=f"domains: add {domain}", source="api")

    def remove_domain(self, name: str, domain: str) -> Job:
        domain = normalize_domain(domain)
        if domain not in self.apps.get(name).domains:
            raise NotFound(
                f"{name} has no domain {domain}", hint=f"List them with `billowin domains {name}`."
            )

        def remove(app: App) -> None:
            app.domains = [d for d in app.domains if d != domain]

        self.apps.update(name, remove)
        self.apps.release_domain(domain, name)
        self._forget_certificates([domain])
        return self.jobs.create(name, kind=JobKind.DOMAINS, note=f"domains: remove {domain}", source="api")

    # -- certificates ------------------------------------------------------------
    def hostname(self, name: str) -> str:
        return f"{name}.{self.settings.domain}"

    def _cert_store(self) -> CertificateStore:
        if self.certs is None:
            raise InvalidInput("this Billowin keeps no certificates")
        return self.certs

    def _forget_certificates(self, names: list[str]) -> None:
        """Delete the certificates of these names (their own, never a shared wildcard)."""
        if self.certs is not None:
            for host in names:
                self.certs.delete(certificate_id([host]))

    def add_certificate(self, name: str, chain_pem: str, key_pem: str) -> list[CertificateRecord]:
        """``certs:add``: the user's own certificate for each of the app's names it covers. It
        replaces what Billowin ordered for those names, and Billowin never renews it."""
        store = self._cert_store()
        app = self.apps.get(name)
        records, pair = check_upload(
            chain_pem, key_pem, [self.hostname(name), *app.domains], datetime.now(UTC)
        )
        for record in records:
            store.save(record, pair)
        return records

    def remove_certificate(self, name: str, host: str) -> None:
        """``certs:remove``: drop the certificate of one of the app's names. With automatic
        certificates on, Billowin orders a new one for it."""
        store = self._cert_store()
        host = normalize_domain(host)
        app = self.apps.get(name)
        if host not in (self.hostname(name), *app.domains):
            raise NotFound(f"{host} is not a name of {name}", hint=f"List them with `billowin certs {name}`.")
        cert_id = certificate_id([host])
        if store.get(cert_id) is None:
            raise NotFound(
                f"{host} has no certificate of its own",
                hint="A wildcard certificate for the whole domain is the administrator's to change."
                if host == self.hostname(name)
                else f"See `billowin certs {name}`.",
            )
        store.delete(cert_id)
        self.names_changed()

    def set_https_redirect(self, name: str, enabled: bool) -> None:
        """Whether the router answers the app's plain HTTP with a redirect once HTTPS works."""
        self.apps.get(name)
        if enabled:
            self.kv.kv_delete_tree(f"{NO_REDIRECT_PREFIX}/{name}")
        else:
            self.kv.kv_put(f"{NO_REDIRECT_PREFIX}/{name}", b"off")

    def https_redirect(self, name: str) -> bool:
        self.apps.get(name)
        _, value = self.kv.kv_get(f"{NO_REDIRECT_PREFIX}/{name}")
        return value is None

    # -- processes -------------------------------------------------------------
    def ps(self, name: str) -> list[InstanceStatus]:
        volumes = self.apps.get(name).volumes
        found = self._instances(name, self.history.list(name))
        for inst in found:  # an instance with volumes runs only on the node that holds them
            inst.pinned_by = [v.name for v in volumes if v.process == inst.process]
        return found

    def _instances(self, name: str, history: list[Release]) -> list[InstanceStatus]:
        # Scaling makes new job versions too: an instance runs the newest release at or before its
        # version. A failed release that Nomad reverted made a new version running the release before it.
        versions = sorted(_spec_versions(history))

        def release_of(version: int) -> str | None:
            names = [n for v, n in versions if v <= version]
            return names[-1] if names else None

        out = []
        for alloc in self.nomad.allocations(name):
            if alloc.get("DesiredStatus") != "run" and alloc.get("ClientStatus") not in (
                "running",
                "pending",
            ):
                continue
            task = (alloc.get("TaskStates") or {}).get(alloc.get("TaskGroup", ""), {}) or {}
            started, age = _seconds_since(alloc.get("CreateTime"))
            out.append(
                InstanceStatus(
                    name=instance_name(alloc),
                    process=alloc.get("TaskGroup", ""),
                    alloc=alloc["ID"][:8],
                    state=alloc.get("ClientStatus", "unknown"),
                    release=release_of(int(alloc.get("JobVersion") or 0)),
                    restarts=int(task.get("Restarts") or 0),
                    started_at=started,
                    age_seconds=age,
                    node=alloc.get("NodeName") or (alloc.get("NodeID") or "")[:8] or None,
                )
            )
        return sorted(out, key=lambda i: (i.process, i.name))

    def scale(self, name: str, counts: Mapping[str, int]) -> dict[str, int]:
        self.apps.get(name)
        job = self.nomad.current(name)
        if job is None:
            raise InvalidInput(f"{name} is not deployed yet", hint="Deploy it first: `billowin deploy`.")
        groups = {g["Name"] for g in job.get("TaskGroups") or []}
        for process, count in counts.items():
            if process not in groups:
                raise NotFound(
                    f"{name} has no process type {process!r}",
                    hint=f"Its process types: {', '.join(sorted(groups))}.",
                )
            if not 0 <= count <= MAX_SCALE:
                raise InvalidInput(f"a process type runs 0 to {MAX_SCALE} instances, not {count}")
        for process, count in counts.items():
            self.nomad.scale(name, process, count, message=f"billowin ps:scale {process}={count}")
        return dict(counts)

    def restart(self, name: str, process: str | None = None) -> int:
        self.apps.get(name)
        return self.nomad.restart(name, process)

    # -- releases, deploys ---------------------------------------------------------
    def releases(self, name: str) -> list[Release]:
        self.apps.get(name)
        return self.history.list(name)

    def rollback(self, name: str, number: int | None) -> Job:
        self.apps.get(name)
        if number is not None:
            self.history.get(name, number)  # NotFound before anything is queued
        return self.jobs.create(name, kind=JobKind.ROLLBACK, rollback_to=number, source="api")

    def deploy(self, name: str, *, sha: str | None = None, image: str | None = None) -> Job:
        app = self.apps.get(name)
        if (sha is None) == (image is None):
            raise InvalidInput("give either a commit SHA or an image to deploy")
        if sha is not None:
            if not SHA.fullmatch(sha):
                raise InvalidInput(f"{sha!r} is not a full 40-character commit SHA")
            return self.jobs.create(name, sha, kind=JobKind.BUILD, source="api", branch=app.branch)
        assert image is not None
        if not IMAGE.fullmatch(image):
            raise InvalidInput(f"{image!r} is not an image reference")
        return self.jobs.create(name, kind=JobKind.IMAGE, image=image, source="api", note=f"deploy {image}")

    def job(self, name: str, job_id: str, *, steps_seen: int = -1, wait: float = 0) -> Job:
        found = (
            self.jobs.wait(name, job_id, steps_seen=steps_seen, timeout=wait)
            if wait > 0
            else self.jobs.get(name, job_id)
        )
        if found is None:
            raise NotFound(f"{name} has no deploy {job_id}")
        return found

    # -- one-off runs, logs ------------------------------------------------------------
    def run_spec(self, name: str, command: str, *, image: str | None = None) -> RunJob:
        """A one-off run of ``command`` with the app's current release's config vars, in that
        release's image (or in ``image``: an add-on's, for ``pg:psql``)."""
        self.apps.get(name)
        release = self.history.current(name)
        if release is None:
            raise InvalidInput(f"{name} has no live release to run a command in", hint="Deploy it first.")
        config_template, policies = self.deployer.config_template(name, release.config_version)
        return self.runner.spec(
            name,
            release.name,
            image or release.image,
            command,
            kind="run",
            config_template=config_template,
            vault_policies=policies,
        )

    def run(self, name: str, command: str, *, timeout: float = 600) -> Iterator[RunEvent]:
        spec = self.run_spec(name, command)
        self.runner.start(spec)
        return self.runner.follow(spec.job_id, timeout=timeout)

    def shell(self, name: str, command: str, *, tty: bool, timeout: float = 3600) -> Shell:
        """``run -i``: ``command`` with its stdin (and a terminal when ``tty``) attached."""
        if self.shells is None:
            raise InvalidInput("this API runs no interactive commands")
        spec = self.run_spec(name, command)
        return self.shells.open(spec, ["sh", "-c", spec.script], tty=tty, timeout=timeout)

    def log_lines(
        self,
        name: str,
        *,
        lines: int = 100,
        follow: bool = False,
        process: str | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[LogLine]:
        self.apps.get(name)
        return self.logs.stream(name, lines=lines, follow=follow, process=process, stop=stop)

    def build_log(self, name: str, job_id: str) -> str:
        job = self.job(name, job_id)
        steps = "\n".join(f"{s.at:%H:%M:%S} {s.state.value:<10} {s.message}" for s in job.steps)
        path = self.builder.log_path(name, job.sha) if self.builder and job.sha else None
        build_log = path.read_text() if path and path.exists() else "(no build log yet)"
        text = f"{steps}\n\n--- build log ---\n{build_log}"
        release_output = self.output.read(name, job_id)
        return text if release_output is None else f"{text}\n\n--- release phase ---\n{release_output}"
