"""Helpers for the end-to-end tests of the back-end features of wsgate: the HTTP
API (``/api/publish``, ``/api/notifications``), Server-Sent Events (``/events``,
read with httpx) and a throw-away ``redis-server`` for cluster mode.

The rules of ``harness.py`` hold here too: every wait has a deadline, nothing is
synchronised with a fixed sleep, and every process started is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness import WAIT, Client, Gateway

#: The API key the tests configure with ``--api-key``.
API_KEY = "test-api-key-0123456789"

#: One room's part of an SSE cursor: ``room=ID@EPOCH`` (the server always names the epoch).
CURSOR_PART_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}=[0-9]+-[0-9]+@[A-Za-z0-9_.:-]{1,128}$")


def key_flags(key: str = API_KEY) -> tuple[str, ...]:
    return ("--api-key", key)


def _client() -> httpx.AsyncClient:
    # No proxy or netrc from the environment: the gateway is on loopback.
    return httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(WAIT))


# --- the back-end HTTP API ------------------------------------------------


@dataclass
class Answer:
    """One HTTP answer: status, headers (case-insensitive), body parsed as JSON."""

    status: int
    headers: httpx.Headers
    body: Any


async def api(
    gw: Gateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = API_KEY,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> Answer:
    """One request to the gateway's API. ``body`` is sent as JSON; ``content`` as
    raw bytes; ``key`` as ``Authorization: Bearer`` (None: no key)."""
    h = dict(headers or {})
    if key is not None:
        h.setdefault("Authorization", f"Bearer {key}")
    if body is not None:
        content = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    async with _client() as c:
        res = await c.request(method, f"http://{gw.addr}{path}", headers=h, content=content)
    text = res.content
    parsed = json.loads(text) if text else None
    return Answer(res.status_code, res.headers, parsed)


async def api_error(gw: Gateway, method: str, path: str, body: Any = None, *, status: int, code: str, **kw: Any) -> Answer:
    """A request that must be refused with ``status`` and the contract's error body."""
    a = await api(gw, method, path, body, **kw)
    assert a.status == status, (a.status, a.body)
    assert a.headers["content-type"] == "application/json", a.headers
    assert set(a.body) == {"error"}, a.body
    assert set(a.body["error"]) == {"code", "message"}, a.body
    assert a.body["error"]["code"] == code, a.body
    assert isinstance(a.body["error"]["message"], str) and a.body["error"]["message"], a.body
    return a


async def raw_request(gw: Gateway, request: bytes) -> tuple[int, Any]:
    """Writes ``request`` (a whole HTTP/1.1 request, as bytes) in one go on a new
    connection and reads the answer until the server closes: status and JSON body.
    For what httpx will not send in one piece (a chunked body over the limit: httpx
    writes chunk by chunk and cannot read an early answer)."""
    host, port = gw.addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", head)
        assert length, head
        body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), WAIT)
        return status, json.loads(body)
    finally:
        writer.close()


def chunked_post(path: str, body: bytes, pieces: int = 4, key: str = API_KEY) -> bytes:
    """A ``POST`` with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    step = -(-len(body) // pieces)
    out = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    for i in range(0, len(body), step):
        part = body[i:i + step]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


async def publish_room(gw: Gateway, room: str, data: Any, key: str = API_KEY) -> str:
    """``POST /api/publish {room, data}``; the id."""
    a = await api(gw, "POST", "/api/publish", {"room": room, "data": data}, key=key)
    assert a.status == 200, (a.status, a.body)
    assert set(a.body) == {"id"}, a.body
    return a.body["id"]


async def publish_user(gw: Gateway, user: str, data: Any) -> None:
    a = await api(gw, "POST", "/api/publish", {"user_id": user, "data": data})
    assert (a.status, a.body) == (200, {}), (a.status, a.body)


async def publish_broadcast(gw: Gateway, data: Any) -> None:
    a = await api(gw, "POST", "/api/publish", {"broadcast": True, "data": data})
    assert (a.status, a.body) == (200, {}), (a.status, a.body)


async def notify(gw: Gateway, body: dict[str, Any]) -> list[str]:
    """``POST /api/notifications``; the ids."""
    a = await api(gw, "POST", "/api/notifications", body)
    assert a.status == 200, (a.status, a.body)
    assert set(a.body) == {"ids"}, a.body
    return a.body["ids"]


async def list_notifications(gw: Gateway, user: str, query: str = "") -> dict[str, Any]:
    a = await api(gw, "GET", f"/api/users/{user}/notifications" + (f"?{query}" if query else ""))
    assert a.status == 200, (a.status, a.body)
    assert set(a.body) == {"items", "unread", "more"}, a.body
    return a.body


async def say(c: Client, room: str, content: str, ref: Any) -> dict[str, Any]:
    """Sends a chat message with a ref; the sender gets exactly its ``ack`` and
    its own copy of the message, in either order. Returns the message frame."""
    await c.send({"type": "message", "room": room, "content": content, "ref": ref})
    frames = await c.recv_n(2)
    by_type = {f["type"]: f for f in frames}
    assert set(by_type) == {"ack", "message"}, frames
    assert by_type["ack"] == {"type": "ack", "ref": ref, "room": room, "id": by_type["message"]["id"]}
    return by_type["message"]


# --- Server-Sent Events ---------------------------------------------------


@dataclass
class Block:
    """One blank-line-terminated block of an event stream: its fields as the SSE
    specification reads them (``data`` lines joined with a newline), and its
    comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def event(self) -> str | None:
        return self.fields.get("event")

    @property
    def id(self) -> str | None:
        return self.fields.get("id")

    @property
    def ids(self) -> str | None:
        """The cursor without its epochs (``a=ID;b=ID``), checked well formed."""
        c = self.fields.get("id")
        return None if c is None else ";".join(f"{r}={i}" for r, i in parse_cursor(c).items())

    @property
    def data(self) -> Any:
        """The ``data`` as JSON."""
        return json.loads(self.fields["data"])


def parse_cursor(cursor: str) -> dict[str, str]:
    """``a=ID@E;b=ID@E`` → ``{"a": ID, "b": ID}`` (every part must be well formed)."""
    return {room: pos[0] for room, pos in parse_cursor_epochs(cursor).items()}


def parse_cursor_epochs(cursor: str) -> dict[str, tuple[str, str]]:
    """``a=ID@E;b=ID@E`` → ``{"a": (ID, E), "b": (ID, E)}``."""
    parts = cursor.split(";")
    assert all(CURSOR_PART_RE.match(p) for p in parts), cursor
    out = {}
    for p in parts:
        room, pos = p.split("=", 1)
        msg_id, epoch = pos.split("@", 1)
        out[room] = (msg_id, epoch)
    assert len(out) == len(parts), cursor
    return out


class SseStream:
    """One ``GET /events`` response, read block by block with httpx."""

    def __init__(self, client: httpx.AsyncClient, res: httpx.Response) -> None:
        self._client = client
        self.res = res
        self.status = res.status_code
        self.headers = res.headers
        self._lines = res.aiter_lines()

    @classmethod
    async def open(cls, gw: Gateway, query: str, headers: dict[str, str] | None = None) -> "SseStream":
        client = _client()
        try:
            req = client.build_request("GET", f"http://{gw.addr}/events?{query}", headers=headers or {})
            res = await client.send(req, stream=True)
        except BaseException:
            await client.aclose()
            raise
        stream = cls(client, res)
        _open_streams.append(stream)
        return stream

    async def refused(self) -> dict[str, Any]:
        """The JSON error body of a refused request (then closes)."""
        body = await self.res.aread()
        await self.close()
        return json.loads(body)

    async def next_block(self, timeout: float = WAIT) -> Block:
        """The next block (comment-only blocks included)."""
        deadline = time.monotonic() + timeout
        block = Block()
        seen_any = False
        while True:
            left = max(deadline - time.monotonic(), 0.001)
            line = await asyncio.wait_for(self._lines.__anext__(), left)
            if line == "":
                if seen_any:
                    return block
                continue
            seen_any = True
            if line.startswith(":"):
                block.comments.append(line[1:].lstrip(" "))
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data" and "data" in block.fields:
                block.fields["data"] += "\n" + value
            else:
                assert name not in block.fields, f"field {name} twice in one block: {block}"
                block.fields[name] = value

    async def next_event(self, timeout: float = WAIT) -> Block:
        """The next block that carries data, skipping keep-alive comments; it must
        have exactly the fields ``event``, ``id`` and ``data``."""
        deadline = time.monotonic() + timeout
        while True:
            b = await self.next_block(max(deadline - time.monotonic(), 0.001))
            if not b.fields and b.comments:
                continue
            assert set(b.fields) == {"event", "id", "data"}, b
            assert b.data["type"] == b.event, b
            return b

    async def events(self, n: int, timeout: float = WAIT) -> list[Block]:
        deadline = time.monotonic() + timeout
        return [await self.next_event(max(deadline - time.monotonic(), 0.001)) for _ in range(n)]

    async def start(self) -> dict[str, str]:
        """Checks the stream's opening (status, headers, ``retry: 3000``, the
        data-less ``id:`` block) and returns its cursor, parsed."""
        assert self.status == 200, (self.status, await self.res.aread())
        assert self.headers["content-type"] == "text/event-stream", self.headers
        assert self.headers["cache-control"] == "no-cache", self.headers
        assert self.headers["x-accel-buffering"] == "no", self.headers
        first = await self.next_block()
        assert first == Block({"retry": "3000"}), first
        second = await self.next_block()
        assert set(second.fields) == {"id"} and not second.comments, second
        self.cursor = second.id
        return parse_cursor(second.id)

    async def close(self) -> None:
        if self in _open_streams:
            _open_streams.remove(self)
        try:
            await asyncio.wait_for(self.res.aclose(), 3)
        except Exception:
            pass
        try:
            await asyncio.wait_for(self._client.aclose(), 3)
        except Exception:
            pass


_open_streams: list[SseStream] = []


async def open_sse(gw: Gateway, query: str, headers: dict[str, str] | None = None) -> tuple[SseStream, dict[str, str]]:
    """A stream that must open; the stream and its starting cursor."""
    s = await SseStream.open(gw, query, headers)
    return s, await s.start()


async def sse_refused(gw: Gateway, query: str, status: int, code: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    s = await SseStream.open(gw, query, headers)
    assert s.status == status, (s.status, s.headers)
    body = await s.refused()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body


async def check_resume_under_traffic(sse_gw: Gateway, pub_gw: Gateway, before: int = 20, during: int = 20) -> None:
    """An SSE stream of rooms a and b reads one event and goes away; ``before``
    publishes happen while it is away, and ``during`` more while a new stream
    resumes with ``Last-Event-ID`` (concurrently with its set-up). The new stream
    must get, per room, exactly every id after the cursor, in order, once; then
    live events."""
    query = "rooms=a,b&user_id=resumer"
    sse, _ = await open_sse(sse_gw, query)
    first = await publish_room(pub_gw, "a", "first")
    [e] = await sse.events(1)
    assert e.data["id"] == first
    last = e.id
    await sse.close()
    ids: dict[str, list[str]] = {"a": [], "b": []}

    async def publish_many(n: int, tag: str) -> None:
        for i in range(n):
            room = "ab"[i % 2]
            ids[room].append(await publish_room(pub_gw, room, f"{tag}{i}"))

    await publish_many(before, "x")
    (back, resumed), _ = await asyncio.gather(
        open_sse(sse_gw, query, {"Last-Event-ID": last}),
        publish_many(during, "y"),
    )
    assert resumed == {"a": first, "b": "0-0"}, resumed
    got = await back.events(before + during)
    per_room: dict[str, list[str]] = {"a": [], "b": []}
    for ev in got:
        per_room[ev.data["room"]].append(ev.data["id"])
    assert per_room == ids
    # Nothing more: the next events are the ones published now.
    tail = [await publish_room(pub_gw, r, "tail") for r in ("a", "b")]
    assert [ev.data["id"] for ev in await back.events(2)] == tail


async def close_streams() -> None:
    streams = list(_open_streams)
    await asyncio.gather(*(s.close() for s in streams))


def run_backend(body: Any, timeout: float | None = None) -> Any:
    """``harness.run`` that also closes every SSE stream the body opened."""
    from harness import run

    async def wrapped() -> Any:
        try:
            return await body()
        finally:
            await close_streams()

    return run(wrapped) if timeout is None else run(wrapped, timeout)


# --- a throw-away redis-server ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on a free loopback port; stopped by PID. No persistence unless
    ``persist`` is set before a (re)start: then an append-only file, synced on every
    write, in a directory of its own, so a restart keeps every stored message."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.persist = False
        self.dir = tempfile.TemporaryDirectory(prefix="wsgate-redis-")
        self.log = tempfile.NamedTemporaryFile(prefix="wsgate-redis-", suffix=".log", delete=False)
        last = None
        for _ in range(5):
            self.port = free_port()
            try:
                self.start()
                return
            except RuntimeError as e:  # e.g. the port was taken meanwhile
                last = e
                self.stop()
        raise RuntimeError(f"redis-server would not start: {last}")

    def start(self) -> None:
        """Starts (or starts again, empty) on ``self.port`` and waits for PING."""
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--dir", self.dir.name, *durability],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._await_ping()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _await_ping(self) -> None:
        deadline = time.monotonic() + WAIT
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING in time")

    def cmd(self, *args: str) -> str:
        """One command through ``redis-cli``; its reply as text."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=WAIT, check=True,
        )
        return out.stdout.strip()

    def log_tail(self) -> str:
        try:
            with open(self.log.name, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        self.stop()
        self.dir.cleanup()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def kill(gw: Gateway) -> None:
    """SIGKILL to a gateway (by its PID), and reaps it."""
    os.kill(gw.pid, signal.SIGKILL)
    gw.proc.wait(timeout=WAIT)
