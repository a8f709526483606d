"""What every error answer of the API looks like, and the codes the OpenAPI document lists.

One shape for all of them: ``{"error": "NotFound", "message": "...", "hint": "..."}``.
FastAPI's own request-validation errors are answered in that shape too, so a client (the
CLI, a script, the fuzz test) reads one kind of error body whatever went wrong.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from billowin.names import APP_NAME_RULE, DNS_LABEL

# Path parameters, described as strictly as they are checked: a value the schema allows is
# one the API takes (and the fuzz test holds the API to that).
AppName = Annotated[
    str, Path(pattern=DNS_LABEL.pattern, max_length=63, description=f"The app's name: {APP_NAME_RULE}.")
]
JobId = Annotated[str, Path(pattern=r"^[0-9]{8,12}$", description="A deploy job's id, like 00000042.")]
DomainName = Annotated[str, Path(max_length=253, description="A custom domain, like www.example.com.")]
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="A token's id (the part after bw_).")]


class ErrorBody(BaseModel):
    """An error: its kind, a plain message, and what to do about it."""

    model_config = ConfigDict(extra="allow")

    error: str | None = None
    message: str
    hint: str | None = None


def _error(description: str) -> dict[str, Any]:
    # The schema inline, under application/json: with ``model=`` FastAPI would list it under the
    # route's own media type (text/plain for the log routes), which is not what they answer.
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


ERROR_SCHEMA = ErrorBody.model_json_schema()

# Listed on every operation: the answers a caller can get from any of them.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("The request is malformed."),
    401: _error("No valid API token (or webhook signature)."),
    403: _error("The token is valid, but its role or apps do not allow this."),
    404: _error("No such app, release, job or token."),
    409: _error("Someone else changed it first, or it belongs to another app."),
    411: _error("A webhook without Content-Length."),
    413: _error("A webhook body over BILLOWIN_WEBHOOK_MAX_BYTES."),
    415: _error("A JSON route sent something other than application/json."),
    422: _error("A value was refused; the message says which and why."),
    503: _error("A real system (Nomad, Consul…) cannot be reached, or too many streams are open."),
}


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request-validation errors, in the one error shape."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        if loc == ("path", "app"):  # the same words as everywhere else an app name is refused
            problems.append(f"{error.get('input')!r} is not a valid app name: {APP_NAME_RULE}")
            continue
        where = ".".join(str(part) for part in loc if part != "body") or "body"
        problems.append(f"{where}: {error.get('msg')}")
    return JSONResponse(
        status_code=422,
        content={
            "error": "InvalidInput",
            "message": "; ".join(problems) or "the request was refused",
            "hint": "See the API's documentation at /docs for what this call takes.",
        },
    )
