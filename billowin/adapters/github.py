"""GitHub's REST API, for commit statuses and deployments (httpx).

``POST /repos/{owner}/{repo}/statuses/{sha}``, ``POST /repos/{owner}/{repo}/deployments``
and ``POST /repos/{owner}/{repo}/deployments/{id}/statuses``, with a token; the base URL is a
setting, so GitHub Enterprise works too. The repository and the SHA become
parts of that URL, sent with the token: anything but ``owner/name`` of safe
characters and 40 hex digits is refused (``InvalidInput``) before any request,
so ``../`` can never steer the token to another endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import httpx
from pydantic import SecretStr

from billowin.errors import InvalidInput, ServiceError, Unreachable

CONTEXT = "billowin/deploy"
# The same rules as the webhook boundary (billowin.pipeline.webhooks), kept here too: an adapter
# does not import the pipeline, and this is the last stop before the URL.
REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/(?!\.{1,2}\Z)[A-Za-z0-9_.-]{1,100}")
SHA = re.compile(r"[0-9a-f]{40}")


class GitHub:
    """Commit statuses (``CommitStatuses``) and deployments (``Deployments``)."""

    def __init__(self, api_url: str, token: SecretStr, *, timeout: float = 10) -> None:
        self._api = api_url.rstrip("/")
        self._client = httpx.Client(
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {token.get_secret_value()}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "billowin",
            },
        )

    def report(self, repository: str, sha: str, state: str, description: str, target_url: str | None) -> None:
        """Set the ``billowin/deploy`` commit status of ``sha`` (pending, success, failure, error)."""
        _check_sha(sha)
        body: dict[str, str] = {"state": state, "description": description[:140], "context": CONTEXT}
        if target_url:
            body["target_url"] = target_url
        self._post(_repo_path(repository, f"statuses/{sha}"), body, f"status for {sha[:12]}", "repo:status")

    def create_deployment(self, repository: str, sha: str, environment: str, description: str) -> int:
        """A deployment of ``sha`` to ``environment`` (a review app: transient, not production);
        its id. No required contexts: the review app is built whatever the checks say."""
        _check_sha(sha)
        body = {
            "ref": sha,
            "environment": environment,
            "description": description[:140],
            "auto_merge": False,
            "required_contexts": [],
            "transient_environment": True,
            "production_environment": False,
        }
        answer = self._post(
            _repo_path(repository, "deployments"), body, f"deployment of {sha[:12]}", "repo_deployment"
        )
        deployment = answer.get("id")
        if isinstance(deployment, bool) or not isinstance(deployment, int):
            raise ServiceError("github", f"the deployment of {sha[:12]} was answered without an id")
        return deployment

    def deployment_status(
        self, repository: str, deployment: int, state: str, description: str, environment_url: str | None
    ) -> None:
        """The state of a deployment (in_progress, success, failure, inactive...), with the URL it serves."""
        if isinstance(deployment, bool) or not isinstance(deployment, int) or deployment <= 0:
            raise InvalidInput(f"{deployment!r:.40} is not a GitHub deployment id")
        body: dict[str, object] = {"state": state, "description": description[:140]}
        if environment_url:
            body["environment_url"] = environment_url
        if state == "success":
            body["auto_inactive"] = True  # the deployment it replaces is marked inactive
        self._post(
            _repo_path(repository, f"deployments/{deployment}/statuses"),
            body,
            f"status of deployment {deployment}",
            "repo_deployment",
        )

    def _post(self, path: str, body: Mapping[str, object], what: str, scope: str) -> dict[str, object]:
        try:
            resp = self._client.post(f"{self._api}/{path}", json=body)
        except httpx.HTTPError as exc:
            raise Unreachable("github", self._api, hint="Check BILLOWIN_GITHUB_API_URL.") from exc
        if resp.status_code not in (200, 201, 202):
            raise ServiceError(
                "github",
                f"{what} refused: HTTP {resp.status_code} {resp.text[:200]}",
                hint=f"Check BILLOWIN_GITHUB_TOKEN: it needs the {scope} scope.",
            )
        try:
            answer = resp.json()
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def close(self) -> None:
        self._client.close()


def _check_sha(sha: str) -> None:
    if not isinstance(sha, str) or not SHA.fullmatch(sha):
        raise InvalidInput(f"{sha!r:.80} is not a full commit SHA (40 lowercase hex digits)")


def _repo_path(repository: str, rest: str) -> str:
    if not isinstance(repository, str) or not REPOSITORY.fullmatch(repository):
        raise InvalidInput(f"{repository!r:.80} is not a GitHub repository (owner/name)")
    owner, _, name = repository.partition("/")
    return f"repos/{owner}/{name}/{rest}"
