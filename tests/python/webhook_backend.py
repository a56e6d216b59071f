"""A webhook receiver for the webhook tests: a real HTTP server of the standard library
(``ThreadingHTTPServer`` in a thread) on a free loopback port. It checks every POST's
signature as docs/http-api.md tells back ends to (HMAC-SHA256 over
``<timestamp>.<body>``, constant-time compare, a timestamp within five minutes),
records every call (when, from which node, the events, whether the signature held,
what it answered), and answers with the status the test's ``status`` function gives
for the call's number (1, 2, …). Stopped by the test (``close``), its thread joined."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from hook_backend import signature_holds  # webhooks are signed exactly like hooks


@dataclass
class Call:
    at: float  # time.monotonic() when it arrived
    node: str
    headers: dict[str, str]
    body: dict[str, Any]
    signed: bool
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.body["events"]]


class WebhookBackend:
    def __init__(self, secret: str, status: Callable[[int], int] = lambda n: 200) -> None:
        self.secret = secret.encode()
        self.status = status
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                signed = signature_holds(
                    backend.secret,
                    self.headers.get("X-Wsgate-Timestamp", ""),
                    raw,
                    self.headers.get("X-Wsgate-Signature", ""),
                )
                with backend._lock:
                    n = len(backend._calls) + 1
                    status = backend.status(n) if signed else 401
                    backend._calls.append(Call(
                        time.monotonic(), self.headers.get("X-Wsgate-Node", ""),
                        {k.lower(): v for k, v in self.headers.items()}, json.loads(raw), signed, status,
                    ))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def delivered(self) -> dict[str, tuple[dict[str, Any], Call]]:
        """Every event a 2xx answer took, by id (a redelivery keeps the first)."""
        out: dict[str, tuple[dict[str, Any], Call]] = {}
        for c in self.calls():
            if c.ok:
                for e in c.body["events"]:
                    out.setdefault(e["id"], (e, c))
        return out

    def events(self, **match: Any) -> list[dict[str, Any]]:
        """Delivered events (once each) whose fields equal ``match``, oldest first."""
        evs = [e for e, _ in self.delivered().values() if all(e.get(k) == v for k, v in match.items())]
        return sorted(evs, key=lambda e: (e["time_ms"], e["id"]))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
