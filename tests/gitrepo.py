"""Make throwaway git repositories of the sample apps, for tests and benchmarks."""

from __future__ import annotations

import subprocess
from pathlib import Path

ENV = {
    "GIT_AUTHOR_NAME": "billowin-tests",
    "GIT_AUTHOR_EMAIL": "tests@billowin.invalid",
    "GIT_COMMITTER_NAME": "billowin-tests",
    "GIT_COMMITTER_EMAIL": "tests@billowin.invalid",
    "PATH": "/usr/bin:/bin",
}


def commit(repo: Path, message: str = "deploy") -> str:
    """Commit everything in ``repo`` (making it a repository first) and return the SHA."""
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=ENV)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=ENV)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message], check=True, env=ENV)
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, env=ENV, capture_output=True, text=True
    )
    return out.stdout.strip()
