"""A per-app deploy token is kept (so the builder can send it) but never shown."""

from __future__ import annotations

import json

from pydantic import SecretStr

from billowin.apps.store import App
from billowin.build.source import redact_url


def test_the_repository_token_is_stored_but_never_printed() -> None:
    app = App(name="shop", repository="https://github.com/o/r.git", repository_token=SecretStr("ghs_s3cret"))
    stored = app.model_dump_json()
    assert json.loads(stored)["repository_token"] == "ghs_s3cret"  # what the store keeps
    assert App.model_validate_json(stored).repository_token == SecretStr("ghs_s3cret")
    assert "ghs_s3cret" not in repr(app) and "ghs_s3cret" not in str(app.model_dump())


def test_apps_without_a_token_still_load() -> None:
    old = '{"name": "shop", "repository": "https://github.com/o/r.git"}'
    assert App.model_validate_json(old).repository_token is None


def test_a_repository_is_shown_without_its_credentials() -> None:
    app = App(name="shop", repository="https://x-access-token:ghs_s3cret@github.com/o/r.git")
    assert redact_url(app.repository) == "https://***@github.com/o/r.git"
