"""GitHub's REST API, for commit statuses only (httpx).

``POST /repos/{owner}/{repo}/statuses/{sha}`` with a token; the base URL is a
setting, so GitHub Enterprise works too. The repository and the SHA become
parts of that URL, sent with the token: anything but ``owner/name`` of safe
characters and 40 hex digits is refused (``InvalidInput``) before any request,
so ``../`` can never steer the token to another endpoint.
"""

from __future__ import annotations

import re

import httpx
from pydantic import SecretStr

from billowin.errors import InvalidInput, ServiceError, Unreachable

CONTEXT = "billowin/deploy"
# The same rules as the webhook boundary (billowin.pipeline.webhooks), kept here too: an adapter
# does not import the pipeline, and this is the last stop before the URL.
REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/(?!\.{1,2}\Z)[A-Za-z0-9_.-]{1,100}")
SHA = re.compile(r"[0-9a-f]{40}")


class GitHubStatuses:
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
        if not isinstance(repository, str) or not REPOSITORY.fullmatch(repository):
            raise InvalidInput(f"{repository!r:.80} is not a GitHub repository (owner/name)")
        if not isinstance(sha, str) or not SHA.fullmatch(sha):
            raise InvalidInput(f"{sha!r:.80} is not a full commit SHA (40 lowercase hex digits)")
        owner, _, name = repository.partition("/")
        body: dict[str, str] = {"state": state, "description": description[:140], "context": CONTEXT}
        if target_url:
            body["target_url"] = target_url
        url = f"{self._api}/repos/{owner}/{name}/statuses/{sha}"
        try:
            resp = self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise Unreachable("github", self._api, hint="Check BILLOWIN_GITHUB_API_URL.") from exc
        if resp.status_code != 201:
            raise ServiceError(
                "github",
                f"status for {sha[:12]} refused: HTTP {resp.status_code} {resp.text[:200]}",
                hint="Check BILLOWIN_GITHUB_TOKEN: it needs the repo:status scope.",
            )

    def close(self) -> None:
        self._client.close()
