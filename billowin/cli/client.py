"""The HTTP client the ``billowin`` CLI uses to talk to a Billowin API.

Where the API is and which token to send come from, in order:
``BILLOWIN_API_URL`` / ``BILLOWIN_API_TOKEN``, then the file ``billowin login``
writes (``$XDG_CONFIG_HOME/billowin/config.toml``, mode 0600), then the local
single-box stack's API.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr

from billowin.errors import BillowinError, Conflict, InvalidInput, NotFound, Unauthorized, Unreachable

# The API answers each error with its class's status code; read it back as that class. (Only the
# classes built from a message and a hint: a 422 is InvalidInput, a 5xx a plain BillowinError.)
ERRORS: dict[int, type[BillowinError]] = {
    error.status_code: error for error in (Unauthorized, NotFound, Conflict, InvalidInput)
}


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "billowin" / "config.toml"


def _from_file() -> dict[str, str]:
    path = config_path()
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return {k: str(v) for k, v in data.items() if k in ("api_url", "api_token")}


class ClientConfig(BaseModel):
    api_url: str = "http://127.0.0.1:8000"
    api_token: SecretStr | None = None
    timeout: float = 30.0

    def save(self) -> Path:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        token = self.api_token.get_secret_value() if self.api_token else ""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"api_url = {json.dumps(self.api_url)}\napi_token = {json.dumps(token)}\n")
        return path


def load_config() -> ClientConfig:
    """The environment wins over the login file, which wins over the defaults."""
    values: dict[str, Any] = _from_file()
    for key in ("api_url", "api_token"):
        env = os.environ.get(f"BILLOWIN_{key.upper()}")
        if env:
            values[key] = env
    if "api_url" not in values and os.environ.get("BILLOWIN_API_PORT"):
        values["api_url"] = f"http://127.0.0.1:{os.environ['BILLOWIN_API_PORT']}"
    return ClientConfig(
        api_url=values.get("api_url", "http://127.0.0.1:8000"),
        api_token=SecretStr(values["api_token"]) if values.get("api_token") else None,
    )


def _raise_for(resp: httpx.Response) -> None:
    if resp.is_success:
        return
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if isinstance(body, dict) and "message" in body:
        message, hint = str(body["message"]), body.get("hint")
    elif isinstance(body, dict) and "detail" in body:  # FastAPI's own validation errors
        detail = body["detail"]
        message = (
            "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
            if isinstance(detail, list)
            else str(detail)
        )
        hint = None
    else:
        message, hint = f"HTTP {resp.status_code}: {resp.text[:200]}", None
    error = ERRORS.get(resp.status_code, BillowinError)
    exc = error(message, hint=hint)
    exc.status_code = resp.status_code
    raise exc


class ApiClient:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        headers = {}
        if config.api_token:
            headers["Authorization"] = f"Bearer {config.api_token.get_secret_value()}"
        self.http = httpx.Client(base_url=config.api_url, headers=headers, timeout=config.timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable("the Billowin API", self.config.api_url) from exc
        _raise_for(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def stream_lines(self, method: str, path: str, **kwargs: Any) -> Iterator[str]:
        """The lines of a streamed (chunked) answer, as they arrive."""
        try:
            with self.http.stream(method, path, timeout=httpx.Timeout(10, read=None), **kwargs) as resp:
                if not resp.is_success:
                    resp.read()
                    _raise_for(resp)
                yield from resp.iter_lines()
        except httpx.TransportError as exc:
            raise Unreachable("the Billowin API", self.config.api_url) from exc
