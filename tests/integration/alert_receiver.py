"""A real HTTP endpoint for Billowin's alert webhook: it records every delivery.

It stands where a Slack incoming webhook or an on-call tool would be; the
session's API is configured (``BILLOWIN_ALERT_WEBHOOK_URL``) to post to it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class AlertReceiver:
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def for_app(self, app: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for d in self.deliveries if d.get("app") == app]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def start() -> AlertReceiver:
    receiver = AlertReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                delivery = json.loads(body)
            except ValueError:
                self.send_response(400)
                self.end_headers()
                return
            with receiver._lock:
                receiver.deliveries.append(delivery)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    receiver._server = server
    threading.Thread(target=server.serve_forever, name="alert-receiver", daemon=True).start()
    return receiver
