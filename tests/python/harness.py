"""Harness for the Python end-to-end tests of wsgate.

Starts the real ``wsgate`` binary on a free loopback port, talks to it with the
``websockets`` asyncio client, and stops it by PID when the test is over.

Rules the tests follow (the machine may be a loaded 2-core box):

- every wait has a generous deadline (``WAIT``), and nothing is synchronised with
  a fixed sleep: a test waits for the frame it expects, or polls with a deadline;
- "nothing else arrived" is proven with a *barrier*, not a pause: the gateway
  fans every room/user event out through one ordered dispatcher, so a frame that
  was published after an event can only be received after it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[2]

#: Generous wait for anything that should happen "now".
WAIT = 10.0
#: How long the gateway may take to print its address line.
START_TIMEOUT = 30.0
#: Upper bound of one test's async body, so that a hang fails instead of stalling.
TEST_TIMEOUT = 60.0

ID_RE = re.compile(r"^[0-9]+-[0-9]+$")
#: A random epoch (16 hex digits), or the epoch of a room without history: the store's
#: epoch and the number of the history-TTL period (``<16 hex>-<n>``).
EPOCH_RE = re.compile(r"^[0-9a-f]{16}(-[0-9]+)?$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")

T = TypeVar("T")


def binary() -> Path:
    """The gateway binary: ``$WSGATE_BIN`` or ``<repo>/target/debug/wsgate``."""
    env = os.environ.get("WSGATE_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "wsgate"
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing: build it with `cargo build -p wsgate-gateway` "
            "or point WSGATE_BIN at a wsgate binary"
        )
    return path


class Gateway:
    """One running ``wsgate`` process."""

    def __init__(self, flags: Iterable[str] = ()) -> None:
        self.flags = list(flags)
        # The gateway reads its options from WSGATE_* variables too: keep whatever
        # the caller's environment holds out of the test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
        env["WSGATE_LOG"] = os.environ.get("WSGATE_TEST_LOG_LEVEL", "info")
        # Presence leaves at once unless a test sets a grace (a flag wins over this).
        env["WSGATE_PRESENCE_GRACE_MS"] = "0"
        self.logs: list[str] = []
        self.proc = subprocess.Popen(
            [str(binary()), "--listen", "127.0.0.1:0", *self.flags],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.pid = self.proc.pid
        lines: queue.Queue[str | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._drain_stdout, args=(lines,), daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.addr = self._await_address(lines)

    def _drain_stdout(self, lines: "queue.Queue[str | None]") -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        lines.put(None)

    def _drain_stderr(self) -> None:
        # Read until EOF whatever happens, so that the pipe never fills up and
        # blocks the gateway.
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.logs.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def _await_address(self, lines: "queue.Queue[str | None]") -> str:
        deadline = time.monotonic() + START_TIMEOUT
        prefix = "wsgate listening on "
        while True:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.0))
            except queue.Empty:
                self.stop()
                raise RuntimeError(
                    f"wsgate {self.flags} printed no address within {START_TIMEOUT} s; "
                    f"stderr: {self.log_tail()}"
                ) from None
            if line is None:
                code = self.stop()
                raise RuntimeError(
                    f"wsgate {self.flags} exited ({code}) before listening; "
                    f"stderr: {self.log_tail()}"
                )
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    # --- process control -------------------------------------------------

    def terminate(self) -> None:
        """Sends SIGTERM to the process (by its PID)."""
        os.kill(self.pid, signal.SIGTERM)

    def wait_exit(self, timeout: float = WAIT) -> int:
        """The exit code, waiting at most ``timeout`` (TimeoutExpired otherwise)."""
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int | None:
        """Ends the process whatever its state: terminate, wait, then kill."""
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for t in self._threads:
            t.join(timeout=5)
        return self.proc.returncode

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(ANSI_RE.sub("", line) for line in self.logs[-n:])

    # --- plain HTTP ------------------------------------------------------

    def http(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request (blocking; use ``asyncio.to_thread`` from a test body):
        status, headers (lower-case names), body."""
        host, port = self.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
        try:
            conn.request(method, path, headers=headers or {})
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()

    async def stats(self) -> dict[str, Any]:
        status, _, body = await asyncio.to_thread(self.http, "GET", "/api/stats")
        assert status == 200, body
        return json.loads(body)

    async def wait_active(self, n: int) -> None:
        """Waits until the node counts exactly ``n`` open connections (a session is
        counted until its clean-up is over)."""

        async def check():
            return True if (await self.stats())["active_connections"] == n else None

        await poll(check)

    # --- connecting ------------------------------------------------------

    def url(self, query: str = "") -> str:
        return f"ws://{self.addr}/ws" + (f"?{query}" if query else "")

    async def open(self, query: str = "", **kwargs: Any) -> "Client":
        """Opens a WebSocket and reads the ``welcome`` frame."""
        client = await Client.open(self.url(query), **kwargs)
        client.welcome = await client.expect("welcome")
        return client

    async def connect(self, user_id: str, username: str | None = None, **kwargs: Any) -> "Client":
        """A development-mode session of ``user_id`` named ``username``
        (``<user_id>-name`` unless given)."""
        name = f"{user_id}-name" if username is None else username
        return await self.open(f"user_id={user_id}&username={name}", **kwargs)


class Client:
    """A thin JSON layer over one ``websockets`` client connection."""

    _open: list["Client"] = []

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        Client._open.append(self)

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> "Client":
        return cls(await raw_connect(url, **kwargs))

    @property
    def user(self) -> dict[str, str]:
        return {"user_id": self.welcome["user_id"], "username": self.welcome["username"]}

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, data: str | bytes, text: bool | None = None) -> None:
        await self.ws.send(data, text=text)

    async def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame; fails on a timeout, a close, or a non-text frame."""
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), f"server sent a binary frame: {raw!r}"
        frame = json.loads(raw)
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), raw
        return frame

    async def expect(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame, which must be of type ``kind``."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, f"expected {kind}, got {frame}"
        return frame

    async def recv_until(self, kind: str, timeout: float = WAIT) -> tuple[list[dict], dict]:
        """Frames before the first one of type ``kind``, and that frame."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            frame = await self.recv(max(deadline - time.monotonic(), 0.001))
            if frame["type"] == kind:
                return before, frame
            before.append(frame)

    async def recv_n(self, n: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        """Exactly the next ``n`` frames."""
        deadline = time.monotonic() + timeout
        return [await self.recv(max(deadline - time.monotonic(), 0.001)) for _ in range(n)]

    async def request(self, frame: dict[str, Any], kind: str) -> dict[str, Any]:
        """Sends ``frame``; its answer must be the very next frame, of type ``kind``."""
        await self.send(frame)
        return await self.expect(kind)

    async def join_first(self, room: str, **fields: Any) -> dict[str, Any]:
        """Joins ``room`` as the user's first session there: ``joined`` then the
        session's own presence ``join``, exactly."""
        joined = await self.request({"type": "join", "room": room, **fields}, "joined")
        presence = await self.expect("presence")
        assert presence == {"type": "presence", "room": room, "event": "join", "user": self.user,
                            "count": joined["members_count"]}
        return joined

    async def error(self, frame: dict[str, Any], code: str) -> dict[str, Any]:
        """Sends ``frame``; the next frame must be ``error`` ``code`` with a message,
        echoing the frame's ``ref`` exactly when it had a usable one."""
        err = await self.request(frame, "error")
        assert err["code"] == code, f"for {frame}: {err}"
        assert isinstance(err["message"], str) and err["message"], err
        expected_keys = {"type", "code", "message"}
        ref = frame.get("ref")
        if isinstance(ref, (str, int, float)) and not isinstance(ref, bool):
            expected_keys.add("ref")
            assert err["ref"] == frame["ref"], err
        assert set(err) == expected_keys, err
        return err

    async def ping(self, ref: Any = "barrier") -> None:
        """A round trip whose answer must be the very next frame. Answers of this
        session's own earlier frames come before it; fan-out from the room or user
        channels is not ordered with it (use a published frame as the barrier)."""
        await self.send({"type": "ping", "ref": ref})
        frame = await self.recv()
        assert frame == {"type": "pong", "ref": ref}, frame

    async def closed(self, timeout: float = WAIT) -> int | None:
        """Reads (and drops) frames until the server closes; its close code."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"not closed within {timeout} s")
                await asyncio.wait_for(self.ws.recv(), left)
        except ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else None

    async def close(self, timeout: float = 3) -> None:
        """Closes with the close handshake (code 1000); aborts the TCP connection
        if that does not finish in time (e.g. when this client stopped reading)."""
        if self in Client._open:
            Client._open.remove(self)
        try:
            await asyncio.wait_for(self.ws.close(), timeout)
        except Exception:
            self.ws.transport.abort()

    @classmethod
    async def close_all(cls) -> None:
        """Closes every client still open, all at once, at the end of a test."""
        clients, cls._open = list(cls._open), []
        await asyncio.gather(*(c.close(timeout=1) for c in clients))


class RawSocket:
    """A hand-rolled WebSocket client over a plain TCP connection, for what a real
    client library will not do: stay silent to pings, break the framing rules."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, gw: Gateway, query: str) -> "RawSocket":
        host, port = gw.addr.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /ws?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    @staticmethod
    def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
        """One frame as a client would send it (payload < 126 bytes)."""
        assert len(payload) < 126
        first = (0x80 if fin else 0) | (rsv << 4) | opcode
        if not masked:
            return bytes([first, len(payload)]) + payload
        mask = bytes([0x37, 0xFA, 0x21, 0x3D])
        return bytes([first, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, timeout: float = WAIT) -> tuple[int, bytes] | None:
        """The next server frame (opcode, payload); None at end of stream."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        opcode, n = head[0] & 0x0F, head[1] & 0x7F
        assert not head[1] & 0x80, "server frames are not masked"
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return opcode, await self.reader.readexactly(n)

    async def close_code(self, timeout: float = WAIT) -> int | None:
        """Reads up to the server's close frame; its code (None: no close frame)."""
        while (f := await self.read_frame(timeout)) is not None:
            if f[0] == 0x8:
                return int.from_bytes(f[1][:2], "big")
        return None

    async def at_eof(self, timeout: float = WAIT) -> None:
        """Reads until the server drops the connection."""

        async def drain() -> None:
            try:
                while await self.reader.read(65536):
                    pass
            except ConnectionResetError:
                pass

        await asyncio.wait_for(drain(), timeout)

    def close(self) -> None:
        self.writer.close()


async def raw_connect(url: str, **kwargs: Any) -> ClientConnection:
    """``websockets.asyncio.client.connect`` with settings that keep tests exact:
    no proxy from the environment, no compression, no client keepalive pings."""
    opts: dict[str, Any] = dict(
        proxy=None,
        compression=None,
        ping_interval=None,
        open_timeout=WAIT,
        close_timeout=3,
    )
    opts.update(kwargs)
    return await connect(url, **opts)


def run(body: Callable[[], Awaitable[T]] | Awaitable[T], timeout: float = TEST_TIMEOUT) -> T:
    """Runs a test's async body in a fresh event loop, bounded in time, and closes
    every client it opened."""

    async def main() -> T:
        try:
            coro = body() if callable(body) else body
            return await asyncio.wait_for(coro, timeout)
        finally:
            await Client.close_all()

    return asyncio.run(main())


async def poll(check: Callable[[], Awaitable[T | None]], timeout: float = WAIT, every: float = 0.05) -> T:
    """Calls ``check`` until it returns something other than None (or fails on
    the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


def token(secret: str, **claims: Any) -> str:
    """An HS256 token."""
    return jwt.encode(claims, secret, algorithm="HS256")


def now() -> int:
    return int(time.time())


def parse_id(msg_id: str) -> tuple[int, int]:
    assert ID_RE.match(msg_id), msg_id
    ms, seq = msg_id.split("-")
    return int(ms), int(seq)


def assert_ts(ts: str) -> datetime:
    """An RFC 3339 UTC timestamp close to now."""
    assert isinstance(ts, str) and ts.endswith("Z"), ts
    t = datetime.fromisoformat(ts[:-1] + "+00:00")
    assert t.tzinfo == timezone.utc
    assert abs(t.timestamp() - time.time()) < 60, ts
    return t


def assert_uuid(value: str) -> None:
    assert isinstance(value, str)
    assert str(uuid.UUID(value)) == value, value


def sort_users(users: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(users, key=lambda u: u["user_id"])
