"""A product back end for the hook tests: a real HTTP server of the standard library
(``ThreadingHTTPServer`` in a thread, HTTP/1.1 keep-alive) on a free loopback port.
It checks every call's signature as docs/http-api.md tells back ends to (HMAC-SHA256
over ``<timestamp>.<body>``, a constant-time compare, a fresh timestamp), records every
call (path, body, headers, the TCP port it came from, whether the signature held), and
answers with what the test's ``answer`` function says for that path. Stopped by the
test (``close``), its thread joined; calls that hang are released first."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    port: int
    signed: bool


@dataclass
class Reply:
    """What the back end does with a call: answer ``json`` with ``status``, or hang
    (answer only once the test ends)."""

    json: Any = None
    status: int = 200
    hang: bool = False


def allow(**fields: Any) -> Reply:
    return Reply({"allow": True, **fields})


def refuse(**fields: Any) -> Reply:
    return Reply({"allow": False, **fields})


def signature_holds(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """The check every back end makes: the timestamp within five minutes of now, and
    ``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` compared in constant time."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class HookBackend:
    def __init__(self, secret: str, answer: Callable[[str, dict[str, Any]], Reply]) -> None:
        self.secret = secret.encode()
        self.answer = answer
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
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
                body = json.loads(raw)
                with backend._lock:
                    backend._calls.append(
                        Call(self.path, body, {k.lower(): v for k, v in self.headers.items()},
                             self.client_address[1], signed)
                    )
                reply = backend.answer(self.path, body) if signed else Reply({"error": "bad signature"}, 401)
                if reply.hang:
                    # A back end that takes longer than the gateway waits.
                    backend._release.wait(30)
                    reply = allow()
                data = json.dumps(reply.json).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, hook: str) -> str:
        return f"{self.base}/{hook}"

    def calls(self, hook: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if hook is None or c.path == f"/{hook}"]

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def closed_port_url(hook: str) -> str:
    """A URL nothing listens on (a port bound, then closed): connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/{hook}"
