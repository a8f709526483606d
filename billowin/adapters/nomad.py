"""Nomad, through python-nomad.

Jobs are parsed by Nomad itself (``/v1/jobs/parse``), registered with
check-and-set on the job modify index, and their deployments are followed
with blocking queries. Client nodes are listed, drained (``/v1/node/<id>/drain``
with a drain spec), made eligible again and purged; a node's ``SecretID`` is
dropped here, so it never travels further.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

import nomad
import nomad.api.exceptions as nomad_exc
import requests

from billowin.errors import BillowinError, Conflict, InvalidInput, NotFound, ServiceError, Unreachable
from billowin.names import NODE_ID
from billowin.ports import ComponentHealth, DeployResult
from billowin.settings import Settings

SYSTEM = "nomad"
CONFIG_PREFIX = "billowin/config"  # where billowin.adapters.nomad_vars keeps config versions


def job_policy_name(job_id: str) -> str:
    return f"billowin-job-{job_id}"


TERMINAL_DEPLOYMENT_STATES = {"successful", "failed", "cancelled"}


def _detail(exc: nomad_exc.BaseNomadException) -> str:
    resp = exc.nomad_resp
    if isinstance(resp, requests.Response):
        return resp.text.strip() or f"HTTP {resp.status_code}"
    return str(resp)


def _node_id(node_id: str) -> str:
    """A full node id (python-nomad puts it in the URL path as it is); a name or a prefix is the
    caller's to resolve first (``billowin.nodes``)."""
    if not NODE_ID.fullmatch(node_id):
        raise InvalidInput(f"{node_id[:80]!r} is not a Nomad node id")
    return node_id


def nomad_client(settings: Settings, *, timeout: int = 10) -> nomad.Nomad:
    """A python-nomad client for ``settings.nomad_addr`` (with its token, if any)."""
    token = settings.nomad_token.get_secret_value() if settings.nomad_token else None
    return nomad.Nomad(address=settings.nomad_addr, token=token, timeout=timeout)


def translate_error(exc: nomad_exc.BaseNomadException, what: str, address: str) -> BillowinError:
    """The Billowin error for a python-nomad exception raised while working on ``what``."""
    if isinstance(exc, nomad_exc.URLNotFoundNomadException):
        return NotFound(f"Nomad has no {what}")
    if isinstance(exc, nomad_exc.BadRequestNomadException):
        return InvalidInput(f"Nomad refused the {what}: {_detail(exc)}")
    detail = _detail(exc)
    if isinstance(exc.nomad_resp, requests.RequestException):
        return Unreachable(SYSTEM, address)
    if isinstance(exc, nomad_exc.URLNotAuthorizedNomadException):
        return ServiceError(
            SYSTEM,
            f"{what}: permission denied ({detail})",
            hint="Check BILLOWIN_NOMAD_TOKEN (or NOMAD_TOKEN).",
        )
    if "node not found" in detail.lower():  # Nomad answers 500 for an unknown node id
        return NotFound(f"Nomad has no {what}")
    if "modify index" in detail.lower():
        return Conflict(f"the job changed while this deploy ran: {detail}")
    return ServiceError(SYSTEM, f"{what} failed: {detail}")


class NomadScheduler:
    """The ``Scheduler`` port implemented on a real Nomad agent."""

    def __init__(self, settings: Settings) -> None:
        self._address = settings.nomad_addr
        self._client = nomad_client(settings, timeout=settings.nomad_timeout)
        # With a token, Nomad's ACLs are on (a production box): each job gets a policy of its own.
        self._acls = settings.nomad_token is not None

    # -- error translation -------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except nomad_exc.BaseNomadException as exc:
            raise translate_error(exc, what, self._address) from exc

    # -- Probe ------------------------------------------------------------
    def health(self) -> ComponentHealth:
        try:
            info = self._call("agent", self._client.agent.get_agent)
        except ServiceError as exc:
            return ComponentHealth(SYSTEM, False, address=self._address, error=exc.message)
        version = info.get("config", {}).get("Version", {})
        text = version.get("Version") if isinstance(version, dict) else version
        return ComponentHealth(SYSTEM, True, version=str(text), address=self._address)

    # -- jobs --------------------------------------------------------------
    def parse(self, hcl: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("jobspec", self._client.jobs.parse, hcl)
        return job

    def current(self, job_id: str) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = self._call(f"job {job_id!r}", self._client.job.get_job, job_id)
        except NotFound:
            return None
        return job

    def plan(self, job: dict[str, Any]) -> dict[str, Any]:
        plan: dict[str, Any] = self._call(
            "plan", self._client.job.plan_job, job["ID"], {"Job": job}, diff=True
        )
        return plan

    def submit(self, job: dict[str, Any], *, expect_modify_index: int | None = None) -> str:
        """Register ``job``; with ``expect_modify_index`` only if nobody changed it since.

        Returns the evaluation id.
        """
        self._grant_config_access(job)
        body: dict[str, Any] = {"Job": job}
        if expect_modify_index is not None:
            body |= {"EnforceIndex": True, "JobModifyIndex": expect_modify_index}
        result = self._call("job registration", self._client.job.register_job, job["ID"], body)
        return str(result.get("EvalID", ""))

    def stop(self, job_id: str, *, purge: bool = True) -> None:
        with contextlib.suppress(NotFound):
            self._call(f"job {job_id!r}", self._client.job.deregister_job, job_id, purge=purge)
        if purge and self._acls:
            with contextlib.suppress(NotFound):
                self._call("ACL policy", self._client.acl.delete_policy, job_policy_name(job_id))

    def _grant_config_access(self, job: dict[str, Any]) -> None:
        """Let the job's tasks read their app's config vars, and nothing else.

        With ACLs on, a task's workload identity reads only ``nomad/jobs/<job>`` by itself;
        Billowin keeps config versions under ``billowin/config/<app>/``, read by the web job,
        its release phase and one-off runs alike. So each job gets a policy bound to it.
        """
        meta = job.get("Meta") or {}
        app = meta.get("billowin.config") or meta.get("billowin.app")  # an add-on: its credentials
        if not self._acls or not app:
            return
        name = job_policy_name(job["ID"])
        rules = (
            'namespace "default" {\n  variables {\n'
            f'    path "{CONFIG_PREFIX}/{app}/*" {{ capabilities = ["read"] }}\n  }}\n}}\n'
        )
        policy = {
            "Name": name,
            "Description": f"job {job['ID']} reads the config vars of {app}",
            "Rules": rules,
            "JobACL": {"Namespace": job.get("Namespace") or "default", "JobID": job["ID"]},
        }
        self._call("ACL policy", self._client.acl.create_policy, name, policy)

    def scale(self, job_id: str, group: str, count: int, *, message: str = "") -> None:
        """Set a task group's count through Nomad's scale endpoint (what `nomad job scale` does)."""
        body = {"Count": count, "Target": {"Group": group}, "Message": message or "billowin scale"}
        self._call(f"job {job_id!r}", self._client.job.request, job_id, "scale", method="post", json=body)

    def restart(self, job_id: str, group: str | None = None) -> int:
        """Restart the running instances of a job (or of one group) in place. Returns how many."""
        allocs = [
            a
            for a in self.allocations(job_id)
            if a.get("ClientStatus") == "running" and (group is None or a.get("TaskGroup") == group)
        ]
        for alloc in allocs:
            self._call(
                f"allocation {alloc['ID']}", self._client.client.allocation.restart_allocation, alloc["ID"]
            )
        return len(allocs)

    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self._call("job list", self._client.jobs.get_jobs)
        return jobs

    def all_allocations(self) -> list[dict[str, Any]]:
        allocs: list[dict[str, Any]] = self._call("allocation list", self._client.allocations.get_allocations)
        return allocs

    def live_allocations(self) -> list[dict[str, Any]]:
        """Allocations on any node that are still pending or running."""
        return [a for a in self.all_allocations() if a.get("ClientStatus") in ("pending", "running")]

    def allocation_stats(self, alloc_id: str) -> dict[str, Any]:
        stats: dict[str, Any] = self._call(
            f"stats of allocation {alloc_id}", self._client.client.allocation.read_allocation_stats, alloc_id
        )
        return stats

    def allocations(self, job_id: str) -> list[dict[str, Any]]:
        allocs: list[dict[str, Any]] = self._call(f"job {job_id!r}", self._client.job.get_allocations, job_id)
        return allocs

    def _blocking(self, endpoint: Any, *path: str, index: int, wait: float) -> tuple[int, Any]:
        """One blocking query: returns (new index, body) once it changes or ``wait`` passes."""
        params = {"index": index, "wait": f"{max(1, int(wait))}s"}
        resp = self._call(
            "blocking query", endpoint.request, *path, method="get", params=params, timeout=wait + 10
        )
        new_index = int(resp.headers.get("X-Nomad-Index", "0"))
        # An index that goes backwards means the agent restarted: start over.
        return (new_index if new_index >= index else 0), resp.json()

    def wait_for_deployment(
        self, job_id: str, *, timeout: float, after_version: int | None = None
    ) -> DeployResult:
        """Follow the job's latest deployment until it is successful, failed or cancelled.

        ``after_version``: ignore deployments of job versions before this one.
        """
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return DeployResult(job_id, "timeout", f"still running after {timeout:.0f}s")
            index, dep = self._blocking(
                self._client.job, job_id, "deployment", index=index, wait=min(remaining, 30)
            )
            if not dep:
                continue
            if after_version is not None and dep.get("JobVersion", -1) < after_version:
                continue
            if dep.get("Status") in TERMINAL_DEPLOYMENT_STATES:
                return DeployResult(
                    job_id,
                    dep["Status"],
                    dep.get("StatusDescription", ""),
                    deployment_id=dep.get("ID"),
                    job_version=dep.get("JobVersion"),
                )

    def allocation(self, alloc_id: str) -> dict[str, Any]:
        alloc: dict[str, Any] = self._call(
            f"allocation {alloc_id}", self._client.allocation.get_allocation, alloc_id
        )
        return alloc

    # -- builds on Nomad (billowin/build/on_nomad.py) ------------------------------
    def put_variable(self, path: str, items: Mapping[str, str]) -> None:
        """Write the Nomad Variable ``path`` (its values never go in an error)."""
        body = {"Path": path, "Items": dict(items)}
        self._call(f"variable {path}", self._client.variable.create_variable, path, body)

    def delete_variable(self, path: str) -> None:
        try:
            self._call(f"variable {path}", self._client.variable.delete_variable, path)
        except NotFound:
            return

    def task_output(self, alloc_id: str, task: str, stream: str, offset: int) -> bytes:
        """What ``task`` of the allocation wrote to ``stream`` from byte ``offset`` on, so far
        (Nomad keeps a raw_exec task's output; it answers wherever the allocation runs)."""
        text: str = self._call(
            f"output of allocation {alloc_id}",
            self._client.client.stream_logs.stream,
            alloc_id,
            task,
            stream,
            follow=False,
            offset=offset,
            origin="start",
            plain=True,
        )
        return text.encode("utf-8", "surrogateescape")

    def allocation_file(self, alloc_id: str, path: str) -> str | None:
        """The text of ``path`` in the allocation's directory, ``None`` if there is none."""
        try:
            text: str = self._call(
                f"file {path} of allocation {alloc_id}", self._client.client.cat.read_file, alloc_id, path
            )
        except (NotFound, InvalidInput):
            return None
        return text

    # -- client nodes --------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self._call("node list", self._client.nodes.get_nodes)
        return nodes

    def node(self, node_id: str) -> dict[str, Any]:
        node: dict[str, Any] = self._call(f"node {node_id}", self._client.node.get_node, _node_id(node_id))
        node.pop("SecretID", None)  # the client's own credential: nothing of Billowin's needs it
        return node

    def node_allocations(self, node_id: str) -> list[dict[str, Any]]:
        allocs: list[dict[str, Any]] = self._call(
            f"node {node_id}", self._client.node.get_allocations, _node_id(node_id)
        )
        return allocs

    def drain_node(self, node_id: str, *, deadline: float, meta: Mapping[str, str] | None = None) -> None:
        """What ``nomad node drain -enable -deadline …`` does, system jobs included (they stop
        last), with ``meta`` on the drain (``LastDrain.Meta``: who asked, and why)."""
        body: dict[str, Any] = {
            "NodeID": _node_id(node_id),
            "DrainSpec": {"Deadline": int(deadline * 1e9), "IgnoreSystemJobs": False},
            "Meta": dict(meta or {}),
        }
        # The request itself: python-nomad's ``drain_node_with_spec`` sends no ``Meta``.
        self._call(f"node {node_id}", self._client.node.request, node_id, "drain", method="post", json=body)

    def activate_node(self, node_id: str) -> None:
        """``nomad node drain -disable`` and ``nomad node eligibility -enable`` in one update: with
        no drain spec and ``MarkEligible``, Nomad ends a drain in progress (if any) and marks the
        node eligible, whether it was draining or only ineligible."""
        drain = self._client.node.drain_node_with_spec
        self._call(f"node {node_id}", drain, _node_id(node_id), None, mark_eligible=True)

    def purge_node(self, node_id: str) -> None:
        self._call(f"node {node_id}", self._client.node.purge_node, _node_id(node_id))
