"""The operator's HTTP endpoint: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).

kopf has its own liveness endpoint option; we serve one port for all three so the chart
needs a single container port and probe configuration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from distillery.controller.metrics import REGISTRY

# The event loop beats every 5 s; a minute without a beat means it is stuck.
STALE_AFTER_SECONDS = 60.0


def make_handler(health: Callable[[], dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                age = health().get("age")
                alive = age is None or age < STALE_AFTER_SECONDS
                self._send(200 if alive else 503, b"ok\n" if alive else b"event loop stalled\n")
            elif path == "/readyz":
                ready = health().get("ready")
                self._send(200 if ready else 503, b"ready\n" if ready else b"starting\n")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes every 15 s would flood the log
            return

    return Handler


def start(port: int, health: Callable[[], dict[str, Any]], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve in a daemon thread; returns the server (its `server_port` is the real port when 0 was asked)."""
    server = ThreadingHTTPServer((host, port), make_handler(health))
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
