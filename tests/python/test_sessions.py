"""Session life: close codes, capacity, slow consumers, heartbeat, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import time

import pytest
from websockets.exceptions import InvalidStatus

from harness import START_TIMEOUT, WAIT, Client, RawSocket, binary, poll, run


def test_binary_frame_closes_with_1003(gateway):
    async def body():
        watcher = await gateway.connect("watcher")
        await watcher.join_first("r")
        a = await gateway.connect("a")
        await a.join_first("r")
        assert (await watcher.expect("presence"))["event"] == "join"
        await a.send_raw(b"\x01\x02\x03")
        assert await a.closed() == 1003
        # Its presence is cleaned up; the bystander carries on.
        assert await watcher.recv() == {"type": "presence", "room": "r", "event": "leave", "user": a.user, "count": 1}
        await watcher.ping()
        await gateway.wait_active(1)

    run(body)


def test_binary_frame_even_if_it_holds_json_closes_with_1003(gateway):
    async def body():
        a = await gateway.connect("a")
        await a.send_raw(json.dumps({"type": "ping"}).encode(), text=False)
        assert await a.closed() == 1003

    run(body)


def test_invalid_utf8_in_a_text_frame_closes_with_1007(gateway):
    async def body():
        watcher = await gateway.connect("watcher")
        await watcher.join_first("r")
        a = await gateway.connect("a")
        await a.join_first("r")
        await watcher.expect("presence")
        # websockets sends these bytes as a text frame as they are (no validation).
        await a.send_raw(b"\xff\xfe", text=True)
        assert await a.closed() == 1007
        assert await watcher.recv() == {"type": "presence", "room": "r", "event": "leave", "user": a.user, "count": 1}

        # Invalid UTF-8 inside otherwise valid JSON as well.
        b = await gateway.connect("b")
        await b.send_raw(b'{"type":"ping","ref":"\xc3\x28"}', text=True)
        assert await b.closed() == 1007
        await watcher.ping()
        await gateway.wait_active(1)

    run(body)


def test_messages_over_the_size_limit(start_gateway):
    limit = 1000
    gw = start_gateway("--max-message-bytes", str(limit))

    async def body():
        a = await gw.connect("a")
        b = await gw.connect("b")
        await a.join_first("r")
        await b.join_first("r")
        await a.expect("presence")

        # content over the limit: an error, not a close.
        await a.error({"type": "message", "room": "r", "content": "x" * (limit + 1), "ref": 1}, "invalid_field")

        # A WebSocket message of exactly limit + 4096 bytes is still read (fields a
        # frame does not define are ignored) ...
        def ping_of_size(n: int) -> str:
            base = json.dumps({"type": "ping", "ref": "big", "pad": ""})
            text = json.dumps({"type": "ping", "ref": "big", "pad": "p" * (n - len(base))})
            assert len(text.encode()) == n
            return text

        await a.send_raw(ping_of_size(limit + 4096))
        assert await a.recv() == {"type": "pong", "ref": "big"}
        # ... one byte more closes the session with 1009.
        await a.send_raw(ping_of_size(limit + 4097))
        assert await a.closed() == 1009
        assert await b.recv() == {"type": "presence", "room": "r", "event": "leave", "user": a.user, "count": 1}

        # A real message far over the limit.
        c = await gw.connect("c")
        await c.send_raw(json.dumps({"type": "message", "room": "r", "content": "x" * 6000}))
        assert await c.closed() == 1009
        await b.ping()
        await gw.wait_active(1)

    run(body)


def test_at_capacity_the_handshake_gets_503_with_retry_after(start_gateway):
    gw = start_gateway("--max-connections", "2")

    async def body():
        a = await gw.connect("a")
        b = await gw.connect("b")
        for _ in range(3):
            with pytest.raises(InvalidStatus) as ei:
                await Client.open(gw.url("user_id=c"))
            response = ei.value.response
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            body = json.loads(bytes(response.body))
            assert body["error"]["code"] == "unavailable", body
        # The sessions already in are unaffected.
        await a.ping()
        await b.ping()

        # A slot frees when a client leaves.
        await b.close()

        async def try_connect():
            try:
                return await gw.connect("c")
            except InvalidStatus as e:
                assert e.response.status_code == 503
                return None

        c = await poll(try_connect)
        assert c.welcome["user_id"] == "c"
        await c.ping()

    run(body)


def test_sigterm_closes_every_session_with_1001_and_exits_0(start_gateway):
    gw = start_gateway("--shutdown-timeout-ms", "5000")

    async def body():
        a = await gw.connect("a")
        b = await gw.connect("b")
        idle = await gw.connect("idle")
        await a.join_first("r")
        await b.join_first("r")
        assert (await a.expect("presence"))["user"]["user_id"] == "b"
        started = time.monotonic()
        gw.terminate()
        codes = await asyncio.gather(a.closed(), b.closed(), idle.closed())
        assert codes == [1001, 1001, 1001]
        code = await asyncio.to_thread(gw.wait_exit, WAIT)
        assert code == 0, gw.log_tail()
        assert time.monotonic() - started < 6, "shutdown took too long"

    run(body)


def test_sigterm_with_no_sessions_exits_0(gateway):
    assert gateway.http("GET", "/healthz")[0] == 200
    gateway.terminate()
    assert gateway.wait_exit(WAIT) == 0, gateway.log_tail()


def test_sigterm_right_after_the_address_line_exits_0():
    # The window between the address line and the handler would be short, so try
    # many times; each attempt is ~5 ms.
    for attempt in range(100):
        proc = subprocess.Popen(
            [str(binary()), "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")},
        )
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
            assert ready, "no address line"
            line = proc.stdout.readline()
            assert line.startswith(b"wsgate listening on "), line
            os.kill(proc.pid, signal.SIGTERM)
            code = proc.wait(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)
            proc.stdout.close()
        assert code == 0, f"attempt {attempt}: exit status {code}"


def test_a_client_that_stops_reading_is_closed_with_1013_and_others_get_everything(start_gateway):
    gw = start_gateway("--send-queue", "16", "--rate-limit", "100000")
    total = 400
    content = "x" * 60_000  # 400 × 60 KB = 24 MB: far more than every buffer on the way
    lead = 4  # the publisher stays at most this many messages ahead of the readers

    async def body():
        # The slow client's socket gets a small, fixed receive buffer (no autotuning),
        # so that what it can absorb without reading is well known.
        host, port = gw.addr.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect((host, int(port)))
        sock.setblocking(False)
        slow = await gw.connect("slow", sock=sock)
        fast = await gw.connect("fast")
        publisher = await gw.connect("pub")
        await slow.join_first("r")
        await fast.join_first("r")
        await publisher.join_first("r")
        await slow.expect("presence")
        await slow.expect("presence")
        await fast.expect("presence")
        # From here on `slow` reads nothing: the websockets client stops reading the
        # socket once its own small queue is full, so the server's queue fills up.

        progress = asyncio.Condition()
        received = {"fast": 0, "pub": 0}
        others: dict[str, list[dict]] = {"fast": [], "pub": []}

        async def read_all(c: Client, name: str) -> list[str]:
            ids = []
            while len(ids) < total:
                f = await c.recv(timeout=30)
                if f["type"] != "message":
                    others[name].append(f)
                elif f["type"] == "message":
                    assert len(f["content"]) == 60_000
                    ids.append(f["id"])
                    async with progress:
                        received[name] = len(ids)
                        progress.notify_all()
            return ids

        fast_task = asyncio.create_task(read_all(fast, "fast"))
        pub_task = asyncio.create_task(read_all(publisher, "pub"))
        for i in range(total):
            # Pace on the readers that do read, so that only the one that does not
            # can ever fall behind by more than its queue.
            async with progress:
                await asyncio.wait_for(progress.wait_for(lambda: min(received.values()) >= i - lead), 30)
            await publisher.send({"type": "message", "room": "r", "content": content})
        fast_ids = await fast_task
        pub_ids = await pub_task
        assert fast_ids == pub_ids
        assert len(set(fast_ids)) == total
        parsed = [tuple(map(int, i.split("-"))) for i in fast_ids]
        assert parsed == sorted(parsed), "in order"

        # Now the slow client reads: what was buffered, then the 1013 close.
        assert await slow.closed(timeout=30) == 1013
        # Only the slow one was closed: the others hear it leave (while the messages
        # flowed, or after), once, and still answer.
        leave = {"type": "presence", "room": "r", "event": "leave", "user": slow.user, "count": 2}
        for c, name in ((fast, "fast"), (publisher, "pub")):
            await c.send({"type": "ping", "ref": "alive"})
            before, _ = await c.recv_until("pong")
            assert others[name] + before == [leave], (others[name], before)

    run(body)


def test_silent_peers_are_dropped_after_two_heartbeats(start_gateway):
    gw = start_gateway("--heartbeat-ms", "300")

    async def body():
        watcher = await gw.connect("watcher")
        assert watcher.welcome["heartbeat_ms"] == 300
        await watcher.join_first("r")

        # A raw client: handshake, join, then silence (it never answers a ping).
        ghost_ws = await RawSocket.open(gw, "user_id=ghost")
        await ghost_ws.send(RawSocket.frame(0x1, json.dumps({"type": "join", "room": "r"}).encode()))
        joined_at = time.monotonic()
        ghost = {"user_id": "ghost", "username": "ghost"}
        assert await watcher.recv() == {"type": "presence", "room": "r", "event": "join", "user": ghost, "count": 2}
        # The watcher answers pings (its client does it by itself), so it stays; the
        # ghost is gone after two silent intervals.
        assert await watcher.recv() == {"type": "presence", "room": "r", "event": "leave", "user": ghost, "count": 1}
        assert time.monotonic() - joined_at >= 0.6
        # The server pinged the ghost, then dropped it without a close frame.
        frames = []
        while (f := await ghost_ws.read_frame()) is not None:
            frames.append(f[0])
        ghost_ws.close()
        assert 0x9 in frames and 0x8 not in frames, frames
        await gw.wait_active(1)
        # The watcher has been silent for far more than two intervals too, but it
        # answered every ping.
        await watcher.ping()

    run(body)


@pytest.mark.parametrize(
    "what, frame",
    [
        ("unmasked", RawSocket.frame(0x1, b'{"type":"ping"}', masked=False)),
        ("reserved bit", RawSocket.frame(0x1, b'{"type":"ping"}', rsv=4)),
        ("reserved opcode", RawSocket.frame(0x3, b'{"type":"ping"}')),
        ("continuation first", RawSocket.frame(0x0, b'{"type":"ping"}')),
        ("fragmented ping", RawSocket.frame(0x9, b"x", fin=False)),
    ],
)
def test_protocol_errors_close_with_1002(gateway, what, frame):
    async def body():
        raw = await RawSocket.open(gateway, "user_id=raw")
        opcode, welcome = await raw.read_frame()
        assert opcode == 0x1 and json.loads(welcome)["type"] == "welcome"
        await raw.send(frame)
        assert await raw.close_code() == 1002, what
        raw.close()
        await gateway.wait_active(0)

    run(body)


def test_fragmented_messages_are_reassembled_and_limited_as_a_whole(start_gateway):
    gw = start_gateway("--max-message-bytes", "1000")

    async def body():
        a = await gw.connect("a")
        await a.ws.send(['{"type":', '"ping","ref":"frag"}'])
        assert await a.recv() == {"type": "pong", "ref": "frag"}
        # A character split across two fragments is fine.
        await a.ws.send([b'{"type":"ping","ref":"\xc3', b'\xa9"}'], text=True)
        assert await a.recv() == {"type": "pong", "ref": "\u00e9"}
        # Protocol-level pings are answered too.
        await asyncio.wait_for(await a.ws.ping(b"hi"), WAIT)
        # Small fragments adding up to more than the limit + 4096 bytes: 1009.
        await a.ws.send(["x" * 1000 for _ in range(6)])
        assert await a.closed() == 1009
        await gw.wait_active(0)

    run(body)


def test_the_server_answers_a_client_close_with_1000(gateway):
    async def body():
        raw = await RawSocket.open(gateway, "user_id=raw")
        await raw.read_frame()
        await raw.send(RawSocket.frame(0x8, (1000).to_bytes(2, "big")))
        assert await raw.close_code() == 1000
        await raw.at_eof()
        raw.close()
        await gateway.wait_active(0)

    run(body)
