"""The HTTP API against its own OpenAPI description, fuzzed with schemathesis.

Authenticated as an admin, every operation is called with generated inputs (a bounded
number per operation, the same ones every run). No answer may be a 5xx, and every answer
must match what the schema says: status code, content type, headers and body. Streaming operations (log
tails, one-off runs) are left out: they are covered by their own tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.schemas import OpenApiSchema

from billowin.stack.single_box import SingleBox
from billowin.system import System

# What an answer must satisfy. Inputs the schema allows but the API refuses with a documented
# 422 (say, a date that does not exist) are not held against it: the answers are.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
EXAMPLES = 12  # per operation: enough to find the easy 5xx, small enough for every run
STREAMING = ("/apps/{app}/logs", "/apps/{app}/runs")


@pytest.fixture(scope="module")
def admin(stack: SingleBox) -> str:
    return System(stack.settings).tokens.create("schemathesis")


@pytest.fixture(scope="module")
def api_schema(stack: SingleBox, admin: str) -> OpenApiSchema:
    url = f"http://127.0.0.1:{stack.ports.api}"
    document = httpx.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {admin}"}).json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=url, headers={"Authorization": f"Bearer {admin}"})
    return schema.exclude(path=list(STREAMING))


@pytest.fixture(scope="module", autouse=True)
def leave_no_apps(stack: SingleBox, admin: str) -> Iterator[None]:
    """Apps the fuzzer manages to create are destroyed afterwards."""
    apps = System(stack.settings).apps
    before = {a.name for a in apps.all()}
    yield
    platform = System(stack.settings).platform
    for app in {a.name for a in apps.all()} - before:
        platform.destroy(app)


def test_every_answer_matches_the_schema_and_none_is_a_server_error(api_schema: OpenApiSchema) -> None:
    failures: dict[str, str] = {}
    calls = 0
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same inputs every run: a failure here is never a fluke
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(timeout=30, checks=CHECKS)

        try:
            check()
        except (Exception, FailureGroup) as exc:  # one operation's finding must not hide another's
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:2000]
    assert calls >= 3 * len(operations), calls  # it really called them
    summary = "\n\n".join(f"== {label}\n{why}" for label, why in failures.items())
    assert not failures, f"{len(failures)} of {len(operations)} operations:\n{summary}"
