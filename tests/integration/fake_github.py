"""A stand-in for api.github.com, which this machine cannot reach.

It answers only what Billowin calls (commit statuses, deployments and their
statuses) and checks every request
against GitHub's published OpenAPI description (``@octokit/openapi``): the
path and method must be an operation GitHub has, the body must match that
operation's request schema, and a bearer token must be sent. Anything else is
answered 422 and recorded as a violation, which the tests assert never happens.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from billowin.stack.process import free_port
from tests.testdata import testdata_dir


@dataclass
class Call:
    method: str
    path: str
    operation: str
    body: dict[str, Any]
    answer_id: int = 0  # the id a created deployment was given


@dataclass
class FakeGitHub:
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def deployments(self, environment: str) -> list[tuple[int, dict[str, Any]]]:
        """``(id, body)`` of each deployment created for ``environment``."""
        return [
            (c.answer_id, c.body)
            for c in self.calls
            if c.operation == "repos/create-deployment" and c.body.get("environment") == environment
        ]

    def deployment_statuses(self, deployment: int) -> list[dict[str, Any]]:
        return [
            c.body
            for c in self.calls
            if c.operation == "repos/create-deployment-status"
            and c.path.endswith(f"/deployments/{deployment}/statuses")
        ]

    def statuses(self, sha: str) -> list[dict[str, Any]]:
        return [
            c.body for c in self.calls if c.operation == "repos/create-commit-status" and c.path.endswith(sha)
        ]


def _operations(spec: dict[str, Any]) -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    wanted = {  # what Billowin uses
        "/repos/{owner}/{repo}/statuses/{sha}",
        "/repos/{owner}/{repo}/deployments",
        "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
    }
    out = []
    for template, item in spec["paths"].items():
        if template not in wanted:
            continue
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$")
        for method, operation in item.items():
            out.append((pattern, method.upper(), operation))
    return out


def start() -> tuple[FakeGitHub, uvicorn.Server]:
    spec = json.loads((testdata_dir() / "github-openapi.json").read_text())
    operations = _operations(spec)
    fake = FakeGitHub(port=free_port())
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def any_call(path: str, request: Request) -> JSONResponse:
        url_path = "/" + path
        match = [(m, op) for p, m, op in operations if p.match(url_path) and m == request.method]
        if not match:
            fake.violations.append(f"{request.method} {url_path}: not an operation Billowin should call")
            return JSONResponse({"message": "Not Found"}, status_code=404)
        _, operation = match[0]
        if not request.headers.get("authorization", "").startswith(("Bearer ", "token ")):
            fake.violations.append(f"{request.method} {url_path}: no token")
            return JSONResponse({"message": "Requires authentication"}, status_code=401)
        body = await request.json()
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        try:
            jsonschema.validate(body, schema)
        except jsonschema.ValidationError as exc:
            fake.violations.append(f"{request.method} {url_path}: {exc.message}")
            return JSONResponse({"message": "Validation Failed"}, status_code=422)
        status, response = next(iter(operation["responses"].items()))
        example = response["content"]["application/json"].get("examples", {})
        payload = dict(next(iter(example.values()))["value"]) if example else {}
        call = Call(request.method, url_path, operation["operationId"], body)
        if call.operation == "repos/create-deployment":
            call.answer_id = payload["id"] = len(fake.calls) + 1000  # each its own, as GitHub's are
        fake.calls.append(call)
        return JSONResponse(payload, status_code=int(status))

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=fake.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the fake GitHub did not start"
    return fake, server
