"""``make test-terraform``: OpenTofu applies terraform/ against the real stack.

These tests need the Terraform providers, which only a filesystem mirror can give here
(``BILLOWIN_TOFU_MIRROR``; README "Terraform"). Without one they fail at once, saying how to
make it: they never skip. The session's fixtures are the integration tests' own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from billowin.settings import Settings
from tests.integration.conftest import (  # noqa: F401 - the shared fixtures
    alert_receiver,
    base_image,
    fake_github,
    nothing_left_mounted,
    stack,
    travis_key,
)

MIRROR_HINT = (
    "Set BILLOWIN_TOFU_MIRROR to a filesystem mirror of the hashicorp/nomad, hashicorp/consul and "
    "hetznercloud/hcloud providers (`tofu providers mirror DIR` on a machine that reaches the "
    'registry, then copy DIR here); README "Terraform" says how.'
)


@pytest.fixture(scope="session")
def mirror() -> Path:
    found = Settings().tofu_mirror
    assert found is not None, f"no provider mirror: {MIRROR_HINT}"
    assert found.is_dir(), f"the provider mirror {found} is not a directory: {MIRROR_HINT}"
    return found
