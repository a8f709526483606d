"""Published GitHub material the tests check against, fetched once from the npm registry.

- ``@octokit/openapi``: GitHub's REST API OpenAPI description; the fake GitHub
  validates every request Billowin makes against it.
- ``@octokit/webhooks-examples``: GitHub's example webhook payloads; the
  webhook tests send these, with only the repository, ref and SHA changed.

``python -m tests.testdata`` (run by ``make test``) puts them under
``<cache>/testdata/``; it does nothing when they are already there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from billowin.settings import Settings

PACKAGES = {
    "@octokit/openapi@23.0.2": {"package/generated/api.github.com.deref.json": "github-openapi.json"},
    "@octokit/webhooks-examples@7.6.1": {"package/api.github.com/index.json": "github-webhook-examples.json"},
}


def testdata_dir() -> Path:
    return Settings().cache_dir / "testdata"


def fetch() -> None:
    target = testdata_dir()
    target.mkdir(parents=True, exist_ok=True)
    for spec, files in PACKAGES.items():
        if all((target / name).exists() for name in files.values()):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = (
                subprocess.run(
                    ["npm", "pack", spec, "--silent", "--pack-destination", tmp],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            with tarfile.open(Path(tmp) / out) as tar:
                for member, name in files.items():
                    extracted = tar.extractfile(member)
                    assert extracted is not None, f"{spec} has no {member}"
                    (target / name).write_bytes(extracted.read())
        print(f"testdata: {spec} -> {target}", file=sys.stderr)


def webhook_example(event: str, action: str | None = None) -> dict[str, Any]:
    """GitHub's own example payload for ``event`` (and ``action``)."""
    examples = json.loads((testdata_dir() / "github-webhook-examples.json").read_text())
    for group in examples:
        if group["name"] == event:
            for example in group["examples"]:
                if action is None or example.get("action") == action:
                    return dict(example)
    raise LookupError(f"no GitHub example payload for {event} {action or ''}")


if __name__ == "__main__":
    fetch()
