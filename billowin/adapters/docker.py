"""Docker Engine (through the docker SDK) and the image registry it pushes to."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import requests

from billowin.errors import Conflict, NotFound, ServiceError, Unreachable
from billowin.ports import ComponentHealth
from billowin.settings import Settings

SYSTEM = "docker"


class ImageInUse(Conflict):
    """Docker refused to remove an image because a container (running or stopped) uses it."""

    default_hint = "Remove the container first, or leave the image: the next clean-up tries again."


class DockerEngine:
    """Images: build, tag, push, and report the pushed digest."""

    def __init__(self, settings: Settings, *, timeout: int = 600) -> None:
        self._address = settings.docker_host
        self._registry = settings.registry
        self._auth = registry_auth(settings)
        self._timeout = timeout
        self._client_obj: docker.DockerClient | None = None
        self._streams_obj: docker.DockerClient | None = None

    @property
    def _client(self) -> docker.DockerClient:
        if self._client_obj is None:
            try:
                self._client_obj = docker.DockerClient(base_url=self._address, timeout=self._timeout)
            except docker.errors.DockerException as exc:
                raise Unreachable(SYSTEM, self._address) from exc
        return self._client_obj

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise NotFound(f"no image {what}") from exc
        except docker.errors.NotFound as exc:
            raise NotFound(f"no {what}") from exc
        except requests.ConnectionError as exc:
            raise Unreachable(SYSTEM, self._address) from exc
        except docker.errors.DockerException as exc:
            raise ServiceError(SYSTEM, f"{what} failed: {exc}") from exc

    def health(self) -> ComponentHealth:
        try:
            info = self._call("version", lambda: self._client.version())
        except ServiceError as exc:
            return ComponentHealth(SYSTEM, False, address=self._address, error=exc.message)
        return ComponentHealth(SYSTEM, True, version=info.get("Version"), address=self._address)

    def image_exists(self, ref: str) -> bool:
        try:
            self._call(ref, self._client.images.get, ref)
        except NotFound:
            return False
        return True

    def build(self, context: Path, tag: str, *, buildargs: dict[str, str] | None = None) -> str:
        """Build ``context`` (which holds a Dockerfile) as ``tag``; returns the image id."""
        image, _logs = self._call(
            f"build of {tag}",
            self._client.images.build,
            path=str(context),
            tag=tag,
            buildargs=buildargs or {},
            rm=True,
            pull=False,
        )
        return str(image.id)

    def running_containers(self, *, label: str) -> int:
        """How many containers with ``label`` (``key=value``) are running."""
        # sparse: no per-container inspect, which races with containers going away
        found = self._call(
            "container list", self._client.containers.list, sparse=True, filters={"label": label}
        )
        return len(found)

    def remove_containers(self, *, label: str) -> int:
        containers = self._call(
            "container list", self._client.containers.list, all=True, filters={"label": label}
        )
        for container in containers:
            self._call(f"removal of {container.short_id}", container.remove, force=True)
        return len(containers)

    def remove_exited(self, *, label: str, finished_before: float) -> int:
        """Remove the exited containers with ``label`` that stopped before ``finished_before``
        (a Unix time); returns how many. Nomad leaves them (``gc { container = false }``) so
        that what a stopped instance printed stays readable until then.

        One list call; only containers created before the cutoff (which alone can have stopped
        before it) are inspected for the time they stopped."""
        api = self._client.api
        found = self._call(
            "container list", api.containers, all=True, filters={"label": label, "status": "exited"}
        )
        removed = 0
        for summary in found:
            if int(summary.get("Created", 0)) >= finished_before:
                continue
            what = f"container {summary['Id'][:12]}"
            with contextlib.suppress(NotFound):  # gone meanwhile: another clean-up got there first
                state = self._call(what, api.inspect_container, summary["Id"]).get("State", {})
                finished = _docker_time(state.get("FinishedAt", ""))
                if finished is not None and finished < finished_before:
                    self._call(what, api.remove_container, summary["Id"], force=True)
                    removed += 1
        return removed

    def logs(
        self, name: str, stream: str, *, tail: int | None, since: float | None, follow: bool
    ) -> LogStream:
        """What container ``name`` wrote to ``stream`` (``stdout`` or ``stderr``), one entry per
        line as ``(unix time, bytes)``: the last ``tail`` lines (``None``: all) written after
        ``since``, then (``follow``) new ones until the container stops or the stream is closed.

        Docker keeps them with the container (the ``local`` log driver), running or exited.
        ``NotFound`` when there is no such container.
        """
        container = self._call(f"container {name}", self._streams.containers.get, name)
        raw = self._call(
            f"logs of container {name}",
            container.logs,
            stdout=stream == "stdout",
            stderr=stream == "stderr",
            stream=True,
            follow=follow,
            timestamps=True,
            tail="all" if tail is None else tail,
            since=since,
        )
        return LogStream(raw, self._address)

    @property
    def _streams(self) -> docker.DockerClient:
        """A client with no read timeout, for followed logs (a quiet app sends nothing for hours);
        its streams end when the container stops or the reader closes them."""
        if self._streams_obj is None:
            try:
                self._streams_obj = docker.DockerClient(base_url=self._address, timeout=None)
            except docker.errors.DockerException as exc:
                raise Unreachable(SYSTEM, self._address) from exc
        return self._streams_obj

    def remove_image(self, ref: str) -> None:
        """Remove ``ref`` (nothing if it is gone); ``ImageInUse`` if a container uses it."""
        try:
            self._call(ref, self._client.images.remove, ref, noprune=False)
        except NotFound:
            return
        except ServiceError as exc:
            cause = exc.__cause__
            if isinstance(cause, docker.errors.APIError) and cause.status_code == 409:
                raise ImageInUse(f"{ref} is in use by a container ({cause.explanation})") from cause
            raise

    def volume_exists(self, name: str) -> bool:
        try:
            self._call(f"volume {name}", self._client.volumes.get, name)
        except NotFound:
            return False
        return True

    def remove_volume(self, name: str) -> bool:
        """Remove the volume ``name`` and its data; False if there was none. A volume a
        container still uses is a ``Conflict`` (Docker refuses it)."""
        try:
            volume = self._call(f"volume {name}", self._client.volumes.get, name)
            self._call(f"volume {name}", volume.remove)
        except NotFound:
            return False
        except ServiceError as exc:
            cause = exc.__cause__
            if isinstance(cause, docker.errors.APIError) and cause.status_code == 409:
                raise Conflict(f"the volume {name} is still in use ({cause.explanation})") from cause
            raise
        return True

    def remove_volumes(self, *, label: str) -> list[str]:
        """Remove every volume with ``label`` (``key=value``); the names removed."""
        found = self._call(f"volumes {label}", self._client.volumes.list, filters={"label": label})
        removed = []
        for volume in found:
            if self.remove_volume(volume.name):
                removed.append(volume.name)
        return removed

    def _auth_for(self, repository: str) -> dict[str, str] | None:
        """The registry's credentials, for pushes to that registry only."""
        return self._auth if self._auth and repository.startswith(f"{self._registry}/") else None

    def push(self, ref: str) -> str:
        """Push ``ref`` to its registry and return the pushed ``sha256:`` digest."""
        repository, _, tag = ref.rpartition(":")
        digest = ""
        stream = self._call(
            f"push of {ref}",
            self._client.images.push,
            repository,
            tag=tag,
            stream=True,
            decode=True,
            auth_config=self._auth_for(repository),
        )
        for line in stream:
            if "error" in line:
                raise ServiceError(SYSTEM, f"push of {ref} failed: {line['error']}")
            digest = line.get("aux", {}).get("Digest", digest)
        if not digest:
            raise ServiceError(SYSTEM, f"push of {ref} reported no digest")
        return digest


def _docker_time(text: str) -> float | None:
    """Docker's RFC 3339 times (nanoseconds, ``Z``) as Unix time; ``None`` for its zero time."""
    if not text or text.startswith("0001-"):
        return None
    head, _, fraction = text.rstrip("Z").partition(".")
    try:
        whole = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return whole + float(f"0.{fraction}") if fraction.isdigit() else whole


class LogStream:
    """A container's log lines as ``(unix time, line without its newline)``; ``close()`` ends it
    from another thread. Errors while reading end the stream as ``Unreachable``/``ServiceError``."""

    def __init__(self, raw: Any, address: str) -> None:
        self._raw = raw
        self._address = address

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        try:
            for frame in self._raw:
                stamp, _, text = frame.partition(b" ")
                at = _docker_time(stamp.decode("ascii", "replace"))
                yield (at if at is not None else 0.0), text.removesuffix(b"\n")
        except (requests.ConnectionError, OSError, AttributeError, ValueError) as exc:
            # AttributeError/ValueError: the socket was closed under the reader by close()
            raise Unreachable(SYSTEM, self._address) from exc
        except docker.errors.DockerException as exc:
            raise ServiceError(SYSTEM, f"reading logs failed: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a finished stream is fine
            self._raw.close()


def registry_auth(settings: Settings) -> dict[str, str] | None:
    """The registry's basic-auth credentials as the Engine API takes them, if it has any."""
    if not settings.registry_username or settings.registry_password is None:
        return None
    return {"username": settings.registry_username, "password": settings.registry_password.get_secret_value()}


class Registry:
    """The Docker registry images are pushed to, so any Nomad client can pull them: plain HTTP on
    one box's loopback, or HTTPS with its own CA and basic auth for a cluster."""

    def __init__(self, settings: Settings) -> None:
        self._address = settings.registry
        self._ca_file = settings.registry_ca_file
        auth = registry_auth(settings)
        self._auth = (auth["username"], auth["password"]) if auth else None
        self._base = f"{'https' if self._ca_file else 'http'}://{self._address}"

    def _request(self, method: str, path: str, timeout: float) -> httpx.Response:
        """One request, on a connection of its own (closed after it: nothing is left open)."""
        verify = ssl.create_default_context(cafile=str(self._ca_file)) if self._ca_file else True
        return httpx.request(method, f"{self._base}{path}", auth=self._auth, verify=verify, timeout=timeout)

    def health(self) -> ComponentHealth:
        try:
            resp = self._request("GET", "/v2/", timeout=3)
        except httpx.HTTPError as exc:
            return ComponentHealth("registry", False, address=self._address, error=str(exc))
        version = resp.headers.get("Docker-Distribution-Api-Version")
        return ComponentHealth("registry", resp.status_code == 200, version=version, address=self._address)

    def delete(self, repository: str, digest: str) -> None:
        """Delete a manifest (by digest) so the registry's garbage collector can free it."""
        try:
            resp = self._request("DELETE", f"/v2/{repository}/manifests/{digest}", timeout=10)
        except httpx.HTTPError as exc:
            raise Unreachable("registry", self._address) from exc
        if resp.status_code not in (202, 404):
            raise ServiceError("registry", f"delete of {repository}@{digest}: HTTP {resp.status_code}")

    def tags(self, repository: str) -> list[str]:
        try:
            resp = self._request("GET", f"/v2/{repository}/tags/list", timeout=5)
        except httpx.HTTPError as exc:
            raise Unreachable("registry", self._address) from exc
        if resp.status_code == 404:
            return []
        resp.raise_for_status()
        return list(resp.json().get("tags") or [])
