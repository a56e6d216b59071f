"""Bounded in bytes, never silent (issue 14): one regression test per finding, each
failing on the gateway before the fix. Real processes: the gateway, redis-server where
the finding is about Redis, hand-rolled sockets where a client must misbehave."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import time
from typing import Any

import pytest

from backend_harness import SseStream, say
from harness import WAIT, Client, Gateway, poll, run, token

ROOM = "bounds"
SECRET = "bounds-secret"
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def ready(gw: Gateway) -> None:
    async def up():
        status, _, _ = await asyncio.to_thread(gw.http, "GET", "/readyz")
        return True if status == 200 else None

    await poll(up, timeout=WAIT * 2)


async def fill(c: Client, room: str, n: int, size: int) -> list[str]:
    """Publishes ``n`` messages of ``size`` bytes; their ids, oldest first."""
    return [(await say(c, room, f"{i:04d}" + "x" * (size - 4), i))["id"] for i in range(n)]


class Raw:
    """A client that reads only when told to, with a tiny receive buffer."""

    def __init__(self, gw: Gateway, query: str, rcvbuf: int = 4096) -> None:
        host, port = gw.addr.rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(WAIT)
        self.sock.connect((host, int(port)))
        self.sock.sendall(
            f"GET /ws?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(1)
        assert self.buf.startswith(b"HTTP/1.1 101"), self.buf
        self.buf = b""

    def send(self, obj: dict[str, Any]) -> None:
        payload = json.dumps(obj).encode()
        mask = b"\x01\x02\x03\x04"
        head = bytes([0x81])
        n = len(payload)
        head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self) -> tuple[int, bytes]:
        h = self._exactly(2)
        n = h[1] & 0x7F
        if n == 126:
            n = int.from_bytes(self._exactly(2), "big")
        elif n == 127:
            n = int.from_bytes(self._exactly(8), "big")
        return h[0] & 0x0F, self._exactly(n)

    def json_until(self, kind: str) -> list[dict[str, Any]]:
        out = []
        while True:
            op, payload = self.frame()
            if op == 0x1:
                f = json.loads(payload)
                out.append(f)
                if f["type"] == kind:
                    return out

    def dropped_within(self, timeout: float) -> bool:
        """Whether the server ends the connection within ``timeout`` (reading, now)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except socket.timeout:
                continue
            except OSError:
                return True
        return False

    def reset(self) -> None:
        """Goes away with a reset (unread data lost), as a crashed client does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()


# --- 1. every frame bounded in bytes -----------------------------------------------------


def test_history_of_big_messages_is_paged_not_dropped(start_gateway):
    """Before: `history` of ten 16 KB messages was one frame over the write buffer's
    bound, and the requester was dropped without a close code (1006)."""
    gw = start_gateway("--rate-limit", "10000")

    async def body():
        c = await gw.connect("w")
        await c.join_first(ROOM)
        ids = await fill(c, ROOM, 30, 16_000)
        got: list[str] = []
        before = None
        pages = 0
        while True:
            req: dict[str, Any] = {"type": "history", "room": ROOM, "limit": 100, "ref": pages}
            if before:
                req["before"] = before
            h = await c.request(req, "history")
            pages += 1
            assert len(json.dumps(h)) < 300_000, "a page fits the outgoing frame bound"
            got = [m["id"] for m in h["messages"]] + got
            if not h["more"]:
                break
            before = h["messages"][0]["id"]
        assert pages >= 2, "30 × 16 KB cannot be one page"
        assert got == ids, "every message once, in order, across the pages"
        await c.ping()

    run(body)


def test_joined_and_typing_do_not_grow_with_the_room(start_gateway):
    """Before: with 128-byte user ids and names, `joined` grew with the room and the
    550th joiner was dropped; `typing` listed every typist to every member."""
    gw = start_gateway("--rate-limit", "10000", "--max-connections", "1000")
    long = "u" * 120

    async def body():
        clients = []
        for i in range(130):
            c = await gw.connect(f"{long}{i:03d}"[-128:], f"{long}{i:03d}"[-128:])
            await c.join_first(ROOM)
            clients.append(c)
        last = await gw.connect("last")
        joined = await last.request({"type": "join", "room": ROOM}, "joined")
        assert len(joined["members"]) == 100
        assert (joined["members_count"], joined["members_more"]) == (131, True)
        assert len(json.dumps(joined)) < 40_000
        for c in clients[:25]:
            await c.send({"type": "typing", "room": ROOM, "is_typing": True})
        lists = []
        while len(lists) < 25:
            f = await last.recv()
            if f["type"] == "typing":
                lists.append(len(f["users"]))
        assert max(lists) == 20, lists
        await last.ping()

    run(body, timeout=120)


# --- 2. a client that stops reading holds bounded memory, and goes ------------------------


def test_a_client_that_stops_reading_holds_bounded_memory_and_is_dropped(start_gateway):
    """Before: 60 re-joins with since 0-0 on a room of 100 × 60 KB from a client with a
    4 KB receive buffer, then silence: RSS 8 → 352 MiB, held until the client left;
    a blocked writer never checked the heartbeat."""
    gw = start_gateway("--rate-limit", "10000", "--write-timeout-ms", "2000", "--heartbeat-ms", "1000")

    async def body():
        w = await gw.connect("w")
        await w.join_first(ROOM)
        await fill(w, ROOM, 100, 60_000)
        return rss_kib(gw.pid)

    base = run(body)
    raw = Raw(gw, "user_id=sink")
    raw.json_until("welcome")
    for i in range(60):
        raw.send({"type": "join", "room": ROOM, "since": "0-0", "ref": i})
    # Silence: it reads nothing and answers no ping.
    peak = base
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        peak = max(peak, rss_kib(gw.pid))
        time.sleep(0.2)
    grown_mib = (peak - base) / 1024
    assert grown_mib < 16, f"the node grew {grown_mib:.1f} MiB for one client"
    assert raw.dropped_within(15), "the silent, blocked client was never dropped"

    async def alive():
        c = await gw.connect("after")
        await c.ping()

    run(alive)


# --- 3. SSE ends at token expiry -----------------------------------------------------------


def test_sse_stream_ends_at_token_expiry(start_gateway):
    """Before: a stream kept receiving after `exp`, while a WebSocket of the same token
    was closed with 1008."""
    gw = start_gateway("--jwt-secret", SECRET)
    t = token(SECRET, sub="s", exp=int(time.time()) + 2)

    async def body():
        s = await SseStream.open(gw, f"rooms={ROOM}&token={t}")
        await s.start()
        ev = await s.next_event(timeout=WAIT)
        assert ev.event == "expired" and ev.data == {"type": "expired"}, ev
        with pytest.raises((StopAsyncIteration, asyncio.TimeoutError, Exception)):
            await s.next_block(timeout=5)
        await s.close()

    run(body)


# --- 4 and 5. Redis hiccups: no deaf session, no zombie -----------------------------------


@needs_redis
def test_a_rejoin_during_a_redis_stall_leaves_the_session_live(redis, start_gateway):
    """Before: re-joining a joined room while Redis stalled answered `unavailable`, and
    afterwards the session received nothing from the room, its own message included."""
    gw = start_gateway("--redis-url", redis.url)

    async def body():
        await ready(gw)
        c = await gw.connect("a")
        await c.join_first(ROOM)
        redis.cmd("CLIENT", "PAUSE", "2500", "WRITE")
        await c.send({"type": "join", "room": ROOM, "since": "0-0", "ref": "again"})
        f = await c.recv(timeout=WAIT)
        assert f.get("ref") == "again" and f["type"] in ("joined", "error"), f
        await asyncio.sleep(2.6)  # the pause ends by itself
        await c.send({"type": "message", "room": ROOM, "content": "still here", "ref": "m"})
        got = {(await c.recv())["type"], (await c.recv())["type"]}
        assert got == {"ack", "message"}, got

    run(body)


@needs_redis
def test_a_failed_presence_removal_is_retried_and_announced(redis, start_gateway):
    """Before: a presence removal that failed during a Redis error was logged and
    dropped: the user stayed a member forever and its later leaves went unannounced."""
    gw = start_gateway("--redis-url", redis.url)

    async def body():
        await ready(gw)
        a = await gw.connect("a")
        await a.join_first(ROOM)
        b = await gw.connect("b")
        await b.join_first(ROOM)
        assert (await a.expect("presence"))["event"] == "join"
        redis.cmd("CLIENT", "PAUSE", "3000", "WRITE")
        await b.close()
        leave = await a.expect("presence", timeout=WAIT + 5)
        assert (leave["event"], leave["user"]["user_id"]) == ("leave", "b")
        c = await gw.connect("c")
        joined = await c.request({"type": "join", "room": ROOM}, "joined")
        assert sorted(m["user_id"] for m in joined["members"]) == ["a", "c"]

    run(body)


# --- 6. nothing grows without a bound or an expiry ----------------------------------------


def test_idle_rooms_are_forgotten_and_rooms_per_node_are_capped(start_gateway):
    """Before: the embedded broker never forgot a room, and rooms were unlimited."""
    gw = start_gateway("--history-ttl-s", "1", "--max-rooms", "3")

    async def body():
        c = await gw.connect("a")
        first = await c.join_first("r1")
        ids = await fill(c, "r1", 2, 10)
        await c.request({"type": "leave", "room": "r1"}, "left")
        await asyncio.sleep(2.2)
        await c.send({"type": "join", "room": "r1", "since": ids[-1], "epoch": first["epoch"]})
        before, again = await c.recv_until("joined")
        assert before == [], before
        assert (await c.expect("presence"))["event"] == "join"
        assert again["last_id"] is None, "the idle room's history is gone"
        assert again["recovered"] is False and again["epoch"] != first["epoch"]
        await c.join_first("r2")
        await c.join_first("r3")
        e = await c.error({"type": "join", "room": "r4", "ref": 4}, "too_many_rooms")
        assert "limit of 3 rooms" in e["message"], e

    run(body)


@needs_redis
def test_redis_keeps_keys_only_for_rooms_with_messages(redis, start_gateway):
    """Before: any join (or SSE subscription) to any new name created a room-meta key,
    and node-rooms only ever grew."""
    gw = start_gateway("--redis-url", redis.url, "--node-id", "n1")

    async def body():
        await ready(gw)
        c = await gw.connect("a")
        for i in range(20):
            await c.join_first(f"empty-{i}")
        assert redis.cmd("KEYS", "wsgate:room-meta:*") == ""
        assert redis.cmd("HLEN", "wsgate:node-room-counts:n1") == "20"
        await fill(c, "empty-0", 1, 10)
        assert redis.cmd("KEYS", "wsgate:room-meta:*") == "wsgate:room-meta:empty-0"
        for i in range(20):
            await c.request({"type": "leave", "room": f"empty-{i}"}, "left")
        assert redis.cmd("HLEN", "wsgate:node-room-counts:n1") == "0"

    run(body)


# --- 7. the smaller ones ------------------------------------------------------------------


@needs_redis
def test_a_node_reaped_while_alive_adds_its_members_again(redis, start_gateway):
    """Before: a live node that missed heartbeats (a partition) was reaped and its
    presence never re-added: its users were invisible to the rest of the cluster."""
    n1 = start_gateway("--redis-url", redis.url, "--node-id", "n1", "--heartbeat-ms", "400")
    n2 = start_gateway("--redis-url", redis.url, "--node-id", "n2", "--heartbeat-ms", "400")

    async def body():
        await ready(n1)
        await ready(n2)
        alice = await n1.connect("alice")
        await alice.join_first(ROOM)
        bob = await n2.connect("bob")
        await bob.join_first(ROOM)
        os.kill(n1.pid, signal.SIGSTOP)  # the partition: n1 misses its heartbeats
        try:
            gone = await bob.expect("presence", timeout=WAIT)
            assert (gone["event"], gone["user"]["user_id"]) == ("leave", "alice")
        finally:
            os.kill(n1.pid, signal.SIGCONT)
        back = await bob.expect("presence", timeout=WAIT)
        assert (back["event"], back["user"]["user_id"]) == ("join", "alice")
        carol = await n2.connect("carol")
        joined = await carol.request({"type": "join", "room": ROOM}, "joined")
        assert sorted(m["user_id"] for m in joined["members"]) == ["alice", "bob", "carol"]

    run(body)


def test_restore_counts_only_what_the_client_read(start_gateway):
    """Before: the state saved for `welcome.restore` counted frames written to the
    socket as delivered, although a client that crashes loses what sat in buffers."""
    gw = start_gateway("--rate-limit", "10000")
    raw = Raw(gw, "user_id=reader")
    raw.json_until("welcome")
    raw.send({"type": "join", "room": ROOM, "ref": "j"})
    raw.json_until("joined")

    async def publish():
        w = await gw.connect("w")
        await w.join_first(ROOM)
        return await fill(w, ROOM, 40, 20_000)

    ids = run(publish)
    read = [f["id"] for f in raw.json_until("message") if f["type"] == "message"]
    raw.reset()

    async def back():
        await asyncio.sleep(0.5)
        c = await gw.connect("reader")
        welcome = c.welcome
        rooms = welcome["restore"]["rooms"]
        assert [r["room"] for r in rooms] == [ROOM]
        last = rooms[0]["last_id"]
        assert last is None or ids.index(last) <= ids.index(read[-1]), (last, read)

    run(back)


def test_keep_alive_connections_are_capped(start_gateway):
    """Before: after its first request, a kept-alive idle HTTP connection no longer
    counted against `--max-handshakes`."""
    gw = start_gateway("--max-handshakes", "4")
    host, port = gw.addr.rsplit(":", 1)
    kept = []
    for _ in range(4):
        s = socket.create_connection((host, int(port)), timeout=WAIT)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        kept.append(s)
    extra = socket.create_connection((host, int(port)), timeout=WAIT)
    extra.settimeout(WAIT)
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answer = extra.recv(4096)
    except ConnectionResetError:
        answer = b""
    assert answer == b"", "a fifth HTTP connection is closed at once"
    kept.pop().close()

    def fresh():
        s = socket.create_connection((host, int(port)), timeout=WAIT)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            return True if s.recv(4096).startswith(b"HTTP/1.1 200") else None
        except OSError:
            return None
        finally:
            s.close()

    async def check():
        await poll(lambda: asyncio.to_thread(fresh))

    run(check)
    for s in kept:
        s.close()


def test_readyz_does_not_echo_the_broker_error(start_gateway):
    """Before: `/readyz` carried Redis's error text (addresses, server messages)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gw = start_gateway("--redis-url", f"redis://127.0.0.1:{port}")
    status, _, body = gw.http("GET", "/readyz")
    assert status == 503
    assert json.loads(body) == {"error": {"code": "unavailable", "message": "the broker is unreachable"}}


def test_token_nbf_issuer_and_audience(start_gateway):
    """Before: `nbf` was not checked, and any token with an `aud` was refused."""
    open_gw = start_gateway("--jwt-secret", SECRET)
    strict = start_gateway("--jwt-secret", SECRET, "--jwt-issuer", "https://idp", "--jwt-audience", "wsgate")
    exp = int(time.time()) + 60

    def status(gw: Gateway, **claims: Any) -> int:
        t = token(SECRET, sub="u", exp=exp, **claims)
        host, port = gw.addr.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=WAIT) as s:
            s.sendall(
                f"GET /ws?token={t} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            return int(s.recv(64).split(b" ")[1])

    assert status(open_gw, aud="anything") == 101
    assert status(open_gw, nbf=int(time.time()) + 600) == 401
    assert status(strict, iss="https://idp", aud="wsgate") == 101
    assert status(strict, iss="https://idp", aud=["x", "wsgate"]) == 101
    for claims in ({"iss": "https://idp"}, {"aud": "wsgate"}, {"iss": "https://evil", "aud": "wsgate"},
                   {"iss": "https://idp", "aud": "other"}):
        assert status(strict, **claims) == 401, claims
