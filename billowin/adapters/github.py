"""GitHub's REST API, for commit statuses only (httpx).

``POST /repos/{owner}/{repo}/statuses/{sha}`` with a token; the base URL is a
setting, so GitHub Enterprise works too.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from billowin.errors import ServiceError, Unreachable

CONTEXT = "billowin/deploy"


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
