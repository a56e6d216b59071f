"""The hostile input campaign (issue 9, part 2): every door of one gateway (`/ws` and
its handshake, the frames after it, `/events`, `/api/*`, the HTTP parser in front of
them) is fed malformed, truncated, oversized and out-of-order input. For each attack
the test asserts the documented answer (HTTP status + JSON `error.code`, `error`
frame code, or close code), and after each test that the gateway is alive and has
not panicked. Throughout the whole module a publisher sends a numbered message into
the room `arena` every 50 ms and a bystander in that room records what it gets; the
last test checks that it got every message, in order, without a gap, and that the
gateway's memory after the campaign is within a small bound of what it was before.

Every verdict is a row of ``target/hostile-report.md`` (door, attack, expected,
observed, ok), written as the tests run.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

import hostile as h
from harness import WAIT, Gateway, poll, run

API_KEY = "campaign-api-key"
RATE = 100  # frames/s per connection (burst 200): the publisher's 20/s is far below
ROOM = "arena"
MAX_ROOMS = 64
MAX_BYTES = 65536  # --max-message-bytes (default): frames over MAX_BYTES + 4096 → 1009
#: RSS growth allowed over the campaign. The attacks themselves must cost nothing
#: that outlives them; what legitimately stays is the room's history (the
#: publisher's ~1,500 messages of ~200 bytes, plus what the floods stored: under
#: 1 MiB in all) and allocator slack (glibc keeps freed arenas of the runtime's
#: worker threads). 8 MiB is twice the whole gateway's start-up heap growth and
#: still far below what a leak of one buffer per attack (hundreds of attacks ×
#: 64 KiB buffers = tens of MiB) would show.
RSS_BOUND_KIB = 8 * 1024

#: How long the gateway waits for a client to read its answers before closing it with
#: 1013 (READER_STALL in crates/gateway/src/session.rs).
READER_STALL_S = 10

REPORT = h.Report(h.REPORT_DIR / "hostile-report.md", "Hostile input campaign: attack → observed answer")

FANOUT = {"message", "presence", "typing", "publish", "broadcast", "notification", "direct"}


@pytest.fixture(scope="module")
def gw():
    g = Gateway(["--api-key", API_KEY, "--rate-limit", str(RATE), "--max-rooms-per-connection", str(MAX_ROOMS)])
    yield g
    g.stop()
    bad = h.panics(g)
    assert not bad, bad


@pytest.fixture(scope="module")
def witness(gw):
    w = h.Witness(gw, ROOM).start()
    # The memory baseline: after start-up, with the witness connected and publishing
    # (its connections, the room and its first history entries exist).
    deadline = time.monotonic() + WAIT
    while w.snapshot()[1] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.rss_before = h.rss_kib(gw.pid)
    yield w
    w.stop()


@pytest.fixture(autouse=True)
def gateway_survives(gw, witness):
    """Every test: the gateway is alive and has not panicked afterwards, and the
    bystander kept receiving during the test."""
    before = witness.snapshot()[1]
    yield
    assert h.alive(gw), f"the gateway died: {gw.log_tail()}"
    assert not h.panics(gw), h.panics(gw)
    if witness.stopped:
        return
    # The bystander is still being served: it gets a message sent after this test
    # (bounded wait; the publisher sends one every 50 ms).
    deadline = time.monotonic() + WAIT
    while witness.snapshot()[1] <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert witness.bystander_closed is None, f"the bystander was closed: {witness.bystander_closed}"
    assert witness.snapshot()[1] > before, "the bystander received nothing during or after the test"


def answer(a: h.HttpAnswer) -> str:
    return a.describe()


def is_json_error(a: h.HttpAnswer, status: int, code: str) -> bool:
    return a.status == status and a.json_code() == code and a.headers.get("content-type") == "application/json"


def ok_json(status: int, code: str):
    return lambda a: is_json_error(a, status, code)


# --- the HTTP parser, in front of every door -------------------------------------


def test_malformed_http(gw):
    check = h.Checks(REPORT)
    bare = "bare {s}, closed (the HTTP parser refuses it before routing: no JSON body)"

    async def body():
        cases = [
            ("garbage request line", b"HELLO WORLD\r\n\r\n", 400),
            ("TLS ClientHello on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n", 400),
            ("unknown HTTP version", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400),
            ("NUL in a header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
            ("space before the colon", b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            ("obsolete line folding", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
            ("Content-Length: abc", h.request("POST", "/api/publish", {"Content-Length": "abc"}), 400),
            ("Content-Length: -1", h.request("POST", "/api/publish", {"Content-Length": "-1"}), 400),
            (
                "two different Content-Lengths",
                b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
                400,
            ),
            ("request target of 100 KiB", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ]
        for attack, raw, status in cases:
            a = await h.http_exchange(gw, raw)
            check("HTTP", attack, bare.format(s=status), answer(a), a.status == status and a.closed)

        # HTTP/2's preface on an HTTP/1.1-only port: dropped.
        a = await h.http_exchange(gw, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        check("HTTP", "HTTP/2 preface", "closed without an answer", answer(a), a.status is None and a.closed)

        # A request cut in the middle of a header, then the connection closed.
        a = await h.http_exchange(gw, b"GET /ws?user_id=x HTTP/1.1\r\nHost: x\r\nUpgrade: webs", then_close=True)
        check("HTTP", "request cut mid-header, then closed", "closed without an answer", answer(a), a.status is None and a.closed)

        # Chunked garbage: the API reads the body and cannot.
        raw = h.request("POST", "/api/publish", {"Authorization": f"Bearer {API_KEY}", "Transfer-Encoding": "chunked"})
        a = await h.http_exchange(gw, raw + b"zz\r\nhello\r\n0\r\n\r\n")
        check("/api/*", "chunked body with a bad chunk size", "400 `bad_json`, closed", answer(a), is_json_error(a, 400, "bad_json") and a.closed)

        # Content-Length and chunked at once (a request-smuggling shape): the chunked
        # framing wins (RFC 9112 §6.3), the body `{}` is read, and the connection is
        # not reused.
        raw = h.request(
            "POST",
            "/api/publish",
            {"Authorization": f"Bearer {API_KEY}", "Content-Length": "40", "Transfer-Encoding": "chunked"},
        )
        a = await h.http_exchange(gw, raw + b"2\r\n{}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        check(
            "/api/*",
            "Content-Length + Transfer-Encoding: chunked, then a smuggled request",
            "400 `invalid_field` (body `{}` read as chunked), closed, smuggled request not served",
            answer(a) + (", smuggled request served" if a.raw.count(b"HTTP/1.1 ") > 1 else ""),
            is_json_error(a, 400, "invalid_field") and a.closed and a.raw.count(b"HTTP/1.1 ") == 1,
        )

        # No Host header: served (hyper does not insist; RFC 9112 §3.2 would say 400).
        a = await h.http_exchange(gw, b"GET /healthz HTTP/1.1\r\n\r\n")
        check("HTTP", "HTTP/1.1 request without Host", "served: 200 (docs silent; RFC 9112 §3.2 says 400)", answer(a), a.status == 200)
        check.done()

    run(body)


def test_oversized_headers_and_bodies(gw):
    check = h.Checks(REPORT)

    async def body():
        # hyper reads at most 64 KiB of buffered request head (checked between reads,
        # so a head a little over it that arrives in one read may still pass).
        a = await h.http_exchange(gw, h.request("GET", "/healthz", {"X-Big": "a" * 100 * 1024}))
        check(
            "HTTP",
            "one 100 KiB header",
            "431, closed; or served when it arrives in one read (the 64 KiB head limit is checked between reads)",
            answer(a),
            (a.status == 431 and a.closed) or a.status == 200,
        )
        for size in (256 * 1024, 16 * 1024 * 1024):
            a = await h.http_exchange(gw, h.request("GET", "/healthz", {"X-Big": "a" * size}))
            check("HTTP", f"one {size // 1024} KiB header", "bare 431, closed", answer(a), a.status == 431 and a.closed)
        many = "".join(f"X-H{i}: v\r\n" for i in range(10_000))
        a = await h.http_exchange(gw, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
        check("HTTP", "10,000 headers", "bare 431, closed (hyper: at most 100 headers)", answer(a), a.status == 431 and a.closed)
        a = await h.http_exchange(gw, h.request("GET", f"/ws?user_id=x", {**h.upgrade_headers(), **{f"X-H{i}": "v" for i in range(100)}}))
        check("/ws", "upgrade with 100 extra headers", "bare 431, closed", answer(a), a.status == 431 and a.closed)

        ten_mib = 10 * 1024 * 1024
        auth = {"Authorization": f"Bearer {API_KEY}"}
        a = await h.http_exchange(gw, h.request("POST", "/api/publish", {**auth, "Content-Length": str(ten_mib)}), body_stream=b"a" * ten_mib)
        check("/api/*", "10 MiB body (Content-Length)", "413 `too_large`, closed (refused before reading)", answer(a), is_json_error(a, 413, "too_large") and a.closed)
        chunks = (b"10000\r\n" + b"a" * 65536 + b"\r\n") * 160 + b"0\r\n\r\n"
        a = await h.http_exchange(gw, h.request("POST", "/api/notifications", {**auth, "Transfer-Encoding": "chunked"}), body_stream=chunks)
        check("/api/*", "10 MiB body (chunked)", "413 `too_large`, closed (reading stops at 64 KiB)", answer(a), is_json_error(a, 413, "too_large") and a.closed)
        a = await h.http_exchange(gw, h.request("POST", "/api/publish", {"Content-Length": str(ten_mib)}), body_stream=b"a" * ten_mib)
        check("/api/*", "10 MiB body without a key", "401 `unauthorized` (key checked first), closed", answer(a), is_json_error(a, 401, "unauthorized") and a.closed)
        big = json.dumps({"room": ROOM, "data": "x" * MAX_BYTES}).encode()
        a = await h.http_exchange(gw, h.request("POST", "/api/publish", auth, big))
        check("/api/*", f"body of {len(big)} bytes (just over the limit)", "413 `too_large`", answer(a), is_json_error(a, 413, "too_large"))
        # /events and /ws take no body: one sent anyway is not read into memory.
        a = await h.http_exchange(gw, h.request("GET", "/events?rooms=a", {"Content-Length": str(ten_mib)}), body_stream=b"a" * ten_mib, timeout=3)
        check(
            "/events",
            "GET with a 10 MiB body",
            "the stream starts (200) or the request is refused; the body is not buffered",
            answer(a),
            a.status in (200, 400),
        )
        check.done()

    run(body)


def test_wrong_methods(gw):
    check = h.Checks(REPORT)

    async def body():
        auth = {"Authorization": f"Bearer {API_KEY}"}
        cases = [
            ("POST", "/ws", "GET", h.upgrade_headers()),
            ("PUT", "/ws", "GET", {}),
            ("DELETE", "/events?rooms=a", "GET", {}),
            ("POST", "/events?rooms=a", "GET", {}),
            ("GET", "/api/publish", "POST", auth),
            ("PUT", "/api/publish", "POST", auth),
            ("GET", "/api/notifications", "POST", auth),
            ("POST", "/api/users/alice/notifications", "GET", auth),
            ("DELETE", "/api/users/alice/notifications", "GET", auth),
            ("POST", "/healthz", "GET", {}),
            ("POST", "/readyz", "GET", {}),
            ("POST", "/api/stats", "GET", {}),
            ("POST", "/metrics", "GET", {}),
            ("POST", "/", "GET", {}),
        ]
        for method, path, allow, headers in cases:
            a = await h.http_exchange(gw, h.request(method, path, headers))
            check(
                path.split("?")[0],
                f"{method} {path}",
                f"405 `method_not_allowed`, Allow: {allow}",
                answer(a) + f", Allow: {a.headers.get('allow')}",
                is_json_error(a, 405, "method_not_allowed") and a.headers.get("allow") == allow,
            )
        a = await h.http_exchange(gw, h.request("BREW", "/healthz"))
        check("HTTP", "BREW /healthz (unknown method)", "405 `method_not_allowed`", answer(a), is_json_error(a, 405, "method_not_allowed"))
        a = await h.http_exchange(gw, h.request("GET", "/nope/../api/publish"))
        check("HTTP", "GET /nope/../api/publish", "404 `not_found` (no path normalisation)", answer(a), is_json_error(a, 404, "not_found"))
        check.done()

    run(body)


# --- the WebSocket handshake -------------------------------------------------------


def test_handshake(gw):
    check = h.Checks(REPORT)

    async def body():
        q = "/ws?user_id=hs"
        up = h.upgrade_headers
        keys = [
            ("16 bytes of key, 23 characters", "dGhlIHNhbXBsZSBub25jZQ="),
            ("key of 20 characters", "dGhlIHNhbXBsZSBub25j"),
            ("key of 28 characters (20 bytes)", "dGhlIHNhbXBsZSBub25jZQAAAA=="),
            ("key with a character outside base64", "dGhlIHNhbXBsZSBub25j!Q=="),
            ("key with base64url characters", "dGhlIHNhbXBsZSBub25j-_=="),
            ("key with non-zero padding bits", "dGhlIHNhbXBsZSBub25jZR=="),
            ("empty key", ""),
            ("key of 8 KiB", "A" * 8192),
        ]
        for attack, key in keys:
            a = await h.http_exchange(gw, h.request("GET", q, up(key=key)))
            check("/ws handshake", f"Sec-WebSocket-Key: {attack}", "400 `bad_handshake`", answer(a), is_json_error(a, 400, "bad_handshake"))
        headers = up()
        del headers["Sec-WebSocket-Key"]
        a = await h.http_exchange(gw, h.request("GET", q, headers))
        check("/ws handshake", "no Sec-WebSocket-Key", "400 `bad_handshake`", answer(a), is_json_error(a, 400, "bad_handshake"))
        for version in ("8", "12", "14", "13, 8", "", "thirteen"):
            a = await h.http_exchange(gw, h.request("GET", q, up(version=version)))
            check(
                "/ws handshake",
                f"Sec-WebSocket-Version: {version!r}",
                "426 `bad_handshake`, Sec-WebSocket-Version: 13",
                answer(a) + f", Sec-WebSocket-Version: {a.headers.get('sec-websocket-version')}",
                is_json_error(a, 426, "bad_handshake") and a.headers.get("sec-websocket-version") == "13",
            )
        headers = up()
        del headers["Sec-WebSocket-Version"]
        a = await h.http_exchange(gw, h.request("GET", q, headers))
        check("/ws handshake", "no Sec-WebSocket-Version", "426 `bad_handshake`", answer(a), is_json_error(a, 426, "bad_handshake"))
        for attack, hdrs in [
            ("no Upgrade header", {k: v for k, v in up().items() if k != "Upgrade"}),
            ("Upgrade: h2c", up(Upgrade="h2c")),
            ("Connection: keep-alive", up(Connection="keep-alive")),
            ("plain GET", {}),
        ]:
            a = await h.http_exchange(gw, h.request("GET", q, hdrs))
            check("/ws handshake", attack, "426 `upgrade_required`, Upgrade: websocket", answer(a), is_json_error(a, 426, "upgrade_required") and a.headers.get("upgrade") == "websocket")
        for attack, query in [
            ("user_id with a control character", "user_id=a%0Ab"),
            ("user_id of 129 bytes", "user_id=" + "u" * 129),
            ("user_id of 60 KiB", "user_id=" + "u" * 60_000),
            ("username with a NUL", "user_id=a&username=x%00y"),
        ]:
            a = await h.http_exchange(gw, h.request("GET", f"/ws?{query}", up()))
            check("/ws handshake", attack, "400 `invalid_field`", answer(a), is_json_error(a, 400, "invalid_field"))
        # The upgrade as the docs show it still works after all that.
        att = await h.WsAttacker.open(gw, "user_id=after-handshakes")
        await att.send_json({"type": "ping", "ref": 1})
        pong = await att.until("pong")
        check("/ws handshake", "a valid upgrade after the attacks", "101, welcome, pong", "101, welcome, pong", pong == {"type": "pong", "ref": 1})
        att.abort()
        check.done()

    run(body)


# --- WebSocket frames -------------------------------------------------------------


async def close_after(gw: Gateway, data: bytes | list[bytes], join: bool = True) -> str:
    """Opens an attacker, joins the bystander's room, sends ``data`` and returns the
    close code it gets (and whether the server then ended the TCP connection)."""
    att = await h.WsAttacker.open(gw)
    try:
        if join:
            await att.join(ROOM)
        att.send_background(b"".join(data) if isinstance(data, list) else data)
        code = await att.close_code()
        eof = await att.eof()
        return f"{code}" + (", closed" if eof else ", left open")
    finally:
        att.abort()


def test_frame_attacks(gw):
    check = h.Checks(REPORT)
    ping = b'{"type":"ping"}'

    async def body():
        cases: list[tuple[str, bytes | list[bytes], str]] = [
            ("RSV1 set", h.text(ping, rsv=4), "1002"),
            ("RSV2 set", h.text(ping, rsv=2), "1002"),
            ("RSV3 set", h.text(ping, rsv=1), "1002"),
            ("all RSV bits on a ping", h.frame(0x9, b"", rsv=7), "1002"),
            *[(f"reserved data opcode {op:#x}", h.frame(op, b"x"), "1002") for op in range(3, 8)],
            *[(f"reserved control opcode {op:#x}", h.frame(op, b"x"), "1002") for op in range(0xB, 0x10)],
            ("unmasked text frame", h.text(ping, masked=False), "1002"),
            ("unmasked close frame", h.frame(0x8, b"\x03\xe8", masked=False), "1002"),
            ("fragmented ping (FIN=0)", h.frame(0x9, b"x", fin=False), "1002"),
            ("fragmented close (FIN=0)", h.frame(0x8, b"\x03\xe8", fin=False), "1002"),
            ("ping of 126 bytes", h.frame(0x9, b"x" * 126), "1002"),
            ("pong of 200 bytes", h.frame(0xA, b"x" * 200), "1002"),
            ("close of 126 bytes", h.frame(0x8, b"\x03\xe8" + b"x" * 124), "1002"),
            ("length field 2^63-1 (no payload follows)", h.frame(0x1, b"", length=(1 << 63) - 1), "1009"),
            ("length field 2^63 (top bit set)", h.frame(0x1, b"", length=1 << 63), "1009"),
            ("length field 2^64-1 (top bit set)", h.frame(0x1, b"", length=(1 << 64) - 1), "1009"),
            ("binary length 2^63 on a binary frame", h.frame(0x2, b"", length=1 << 63), "1009"),
            ("16-bit length field for 5 bytes (non-minimal)", bytes([0x81, 0x80 | 126, 0, 15]) + h.MASK + h.mask(ping), "pong, open"),
            ("close code 999", h.close_frame(999), "1002"),
            ("close code 1004 (reserved)", h.close_frame(1004), "1002"),
            ("close code 1005 (must not be sent)", h.close_frame(1005), "1002"),
            ("close code 1006 (must not be sent)", h.close_frame(1006), "1002"),
            ("close code 1015 (must not be sent)", h.close_frame(1015), "1002"),
            ("close code 2999", h.close_frame(2999), "1002"),
            ("close code 5000", h.close_frame(5000), "1002"),
            ("close with a 1-byte payload", h.close_frame(raw_payload=b"\x03"), "1002"),
            ("close with an invalid UTF-8 reason", h.close_frame(1000, b"\xce\xba\xff"), "1007"),
            ("close 1000 (valid)", h.close_frame(1000, b"bye"), "1000"),
            ("close 4000 (application code)", h.close_frame(4000), "4000"),
            ("text frame of invalid UTF-8", h.text(b'{"type":"ping","x":"\xff"}'), "1007"),
            ("UTF-8 overlong encoding of '/'", h.text(b'{"type":"ping","x":"\xc0\xaf"}'), "1007"),
            ("UTF-8 surrogate (ED A0 80)", h.text(b'{"type":"ping","x":"\xed\xa0\x80"}'), "1007"),
            (
                "invalid UTF-8 split across fragments",
                [h.text(b'{"type":"ping","x":"\xce', fin=False), h.frame(0, b'\xff"}')],
                "1007",
            ),
            (
                "message ending in a truncated UTF-8 sequence",
                [h.text(b'{"type":"ping","x":"', fin=False), h.frame(0, b"\xe2\x82")],
                "1007",
            ),
            ("continuation without a start", h.frame(0x0, b"x"), "1002"),
            ("final continuation without a start", h.frame(0x0, ping), "1002"),
            ("new text frame inside a fragmented message", [h.text(b'{"type":', fin=False), h.text(ping)], "1002"),
            ("new binary frame inside a fragmented text message", [h.text(b'{"type":', fin=False), h.frame(0x2, b"x")], "1002"),
            ("binary frame", h.frame(0x2, b'{"type":"ping"}'), "1003"),
            ("fragmented binary message", [h.frame(0x2, b"ab", fin=False), h.frame(0x0, b"cd")], "1003"),
            (
                "1 MiB text message (one frame)",
                h.text(json.dumps({"type": "message", "room": ROOM, "content": "x" * (1 << 20)})),
                "1009",
            ),
            (
                "20 fragments of 4 KiB (80 KiB message)",
                [h.text(b"x" * 4096, fin=False)] + [h.frame(0, b"x" * 4096, fin=False)] * 18 + [h.frame(0, b"x" * 4096)],
                "1009",
            ),
            ("1,000 empty fragments then more than the limit", [h.text(b"", fin=False)] + [h.frame(0, b"", fin=False)] * 999 + [h.frame(0, b"x" * (MAX_BYTES + 4097))], "1009"),
        ]
        for attack, data, expected in cases:
            if expected == "pong, open":
                att = await h.WsAttacker.open(gw)
                await att.join(ROOM)
                await att.send(data)
                f = await att.until("pong")
                observed = "pong, open" if f == {"type": "pong"} else f"{f}"
                att.abort()
            else:
                observed = await close_after(gw, data)
                expected += ", closed"
            check("/ws frames", attack, f"close {expected}" if expected[0].isdigit() else expected, observed, observed == expected)

        # A frame cut in the middle, then the socket closed: nothing to answer; the
        # session ends (the connection count comes back down).
        active = (await gw.stats())["active_connections"]
        att = await h.WsAttacker.open(gw)
        await att.join(ROOM)
        full = h.text(b'{"type":"message","room":"arena","content":"never finished"}')
        await att.send(full[:20])
        att.abort()

        async def back_down():
            return True if (await gw.stats())["active_connections"] == active else None

        await poll(back_down)
        check("/ws frames", "frame cut mid-payload, then TCP closed", "session ends (connection count restored)", "session ended", True)

        # A peer that gets its close frame but never answers: the socket is dropped
        # after the bounded close wait (session.rs CLOSE_HANDSHAKE_WAIT, 10 s), or
        # at once when the stream is already finished.
        att = await h.WsAttacker.open(gw)
        await att.send(h.text(ping, rsv=4))
        started = time.monotonic()
        while (f := await att.read_frame())[0] != 0x8:
            pass
        eof = await att.eof(15)
        took = time.monotonic() - started
        check(
            "/ws frames",
            "RSV1 set, then the close frame never answered",
            "close 1002, then dropped within 10 s",
            f"close {int.from_bytes(f[1][:2], 'big')}, dropped after {took:.1f} s",
            int.from_bytes(f[1][:2], "big") == 1002 and eof and took < 11,
        )
        att.abort()
        check.done()

    run(body, timeout=180)


# --- client frames (JSON) --------------------------------------------------------------


async def direct_answers(att: h.WsAttacker, payload: bytes, n: int) -> list[dict]:
    """Sends ``payload`` in one text frame, then a ``ping`` barrier; the frames answered to this session
    before the barrier's ``pong`` (room and user fan-out skipped)."""
    await att.send(h.text(payload))
    await att.send_json({"type": "ping", "ref": f"barrier-{n}"})
    out = []
    while True:
        f = await att.read_json()
        if f.get("type") == "pong" and f.get("ref") == f"barrier-{n}":
            return out
        if f.get("type") not in FANOUT:
            out.append(f)


def describe(frames: list[dict]) -> str:
    parts = []
    for f in frames:
        if f["type"] == "error":
            parts.append(f"error `{f['code']}`" + (f" ref={f['ref']!r}" if "ref" in f else ""))
        else:
            parts.append(f["type"])
    return ", ".join(parts) or "(no direct answer)"


# Each client frame type, complete, with the answer it gets and its required fields.
FRAMES: list[tuple[dict, str, set[str]]] = [
    ({"type": "join", "room": ROOM, "since": "99999999999999-0", "epoch": "e"}, "joined", {"room"}),
    ({"type": "leave", "room": "left-room"}, "left", {"room"}),
    ({"type": "message", "room": ROOM, "content": "from the attacker"}, "ack", {"room", "content"}),
    ({"type": "typing", "room": ROOM, "is_typing": False}, "", {"room", "is_typing"}),
    ({"type": "direct", "to": "nobody-home", "content": "hi"}, "ack", {"to", "content"}),
    ({"type": "history", "room": ROOM, "before": "99999999999999-0", "limit": 1}, "history", {"room"}),
    ({"type": "notifications", "limit": 1, "before": "abc", "unread_only": True}, "notifications", set()),
    ({"type": "mark_read", "ids": ["abc"]}, "marked_read", {"ids"}),
    ({"type": "mark_read", "all": True}, "marked_read", {"all"}),
    ({"type": "ping"}, "pong", set()),
]


def test_every_frame_with_every_field_missing_wrong_or_null(gw):
    check = h.Checks(REPORT)

    async def body():
        att = await h.WsAttacker.open(gw, "user_id=json-attacker")
        await att.join(ROOM)
        n = 0

        async def case(attack: str, frame_obj: dict, expected: str) -> None:
            nonlocal n
            n += 1
            before = frame_obj.get("type")
            if before == "leave":
                # A leave needs a room to leave.
                await att.send_json({"type": "join", "room": "left-room", "ref": f"j{n}"})
                await att.until("joined", ref=f"j{n}")
            got = await direct_answers(att, json.dumps({**frame_obj, "ref": f"r{n}"}).encode(), n)
            observed = describe(got)
            if expected == "":
                ok = got == []
                expected_text = "(no direct answer; the room gets `typing`)"
            elif expected.startswith("error "):
                code = expected.split()[1]
                ok = len(got) == 1 and got[0]["type"] == "error" and got[0]["code"] == code and got[0].get("ref") == f"r{n}"
                expected_text = f"error `{code}` with the ref"
            else:
                ok = len(got) == 1 and got[0]["type"] == expected and got[0].get("ref") == f"r{n}"
                expected_text = f"{expected} with the ref"
            check("/ws frames (JSON)", attack, expected_text, observed, ok)

        for complete, answer_type, required in FRAMES:
            kind = complete["type"]
            await case(f"`{kind}` complete", complete, answer_type)
            await case(f"`{kind}` with extra unknown fields", {**complete, "zzz": [1, {"a": None}], "Type": "x"}, answer_type)
            for fld in complete:
                rest = {k: v for k, v in complete.items() if k != fld}
                if fld == "type":
                    await case(f"`{kind}` without `type`", rest, "error unknown_type")
                    continue
                want = "error invalid_field" if fld in required else answer_type
                # mark_read needs exactly one of ids / all.
                await case(f"`{kind}` without `{fld}`", rest, want)
                await case(f"`{kind}` with `{fld}`: null", {**complete, fld: None}, want)
                await case(f"`{kind}` with `{fld}`: 12345 (number)", {**complete, fld: 12345}, "error invalid_field")
                await case(f"`{kind}` with `{fld}`: [] (array)", {**complete, fld: []}, "error invalid_field")
                await case(f"`{kind}` with `{fld}`: {{}} (object)", {**complete, fld: {}}, "error invalid_field")
            await case(f"`{kind}` with `type` uppercased", {**complete, "type": kind.upper()}, "error unknown_type")
        for attack, obj, want in [
            ("unknown type", {"type": "subscribe", "channel": ROOM}, "error unknown_type"),
            ("type 5", {"type": 5}, "error unknown_type"),
            ("type null", {"type": None}, "error unknown_type"),
            ("type of 60 KiB", {"type": "t" * 60_000}, "error unknown_type"),
            ("server frame type (`welcome`)", {"type": "welcome"}, "error unknown_type"),
            ("`message` content of 60 KiB with a NUL", {"type": "message", "room": ROOM, "content": "\u0000" + "c" * 60_000}, "ack"),
            ("room of 129 characters", {"type": "join", "room": "r" * 129}, "error invalid_field"),
            ("room with a NUL", {"type": "join", "room": "a\u0000b"}, "error invalid_field"),
            ("room of 60 KiB", {"type": "join", "room": "r" * 60_000}, "error invalid_field"),
            ("history limit 1e300", {"type": "history", "room": ROOM, "limit": 1e300}, "error invalid_field"),
            ("history limit 2^64", {"type": "history", "room": ROOM, "limit": 2**64}, "error invalid_field"),
            ("history limit -0", {"type": "history", "room": ROOM, "limit": -0.0}, "error invalid_field"),
            ("since of 60 KiB of digits", {"type": "join", "room": ROOM, "since": "9" * 60_000 + "-0"}, "error invalid_field"),
            ("since 2^64-0 (overflows u64)", {"type": "join", "room": ROOM, "since": "18446744073709551616-0"}, "error invalid_field"),
            ("mark_read with 1,001 ids", {"type": "mark_read", "ids": ["a"] * 1001}, "error invalid_field"),
            ("mark_read with ids and all", {"type": "mark_read", "ids": ["a"], "all": True}, "error invalid_field"),
            ("4,000 extra fields", {"type": "ping", **{f"k{i}": i for i in range(4000)}}, "pong"),
        ]:
            await case(attack, obj, want)
        # Frames that are not JSON objects get no ref back.
        for attack, raw in [
            ("object nested 10,000 deep", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
            ("array nested 10,000 deep (closed)", b"[" * 10_000 + b"]" * 10_000),
            ("10,000-deep value inside a valid frame", b'{"type":"ping","ref":"deep","x":' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
            ("lone surrogate escape in a string", b'{"type":"ping","x":"\\ud800"}'),
            ("number 1e400", b'{"type":"history","room":"arena","limit":1e400}'),
            ("trailing garbage after the object", b'{"type":"ping"} x'),
            ("two objects in one frame", b'{"type":"ping"}{"type":"ping"}'),
            ("empty text frame", b""),
            ("only whitespace", b" \t\r\n "),
            ("a JSON string", b'"join"'),
            ("a UTF-8 BOM before the object", b'\xef\xbb\xbf{"type":"ping"}'),
        ]:
            n += 1
            got = await direct_answers(att, raw, n)
            check(
                "/ws frames (JSON)",
                attack,
                "error `bad_json` (no ref)",
                describe(got),
                len(got) == 1 and got[0]["type"] == "error" and got[0]["code"] == "bad_json" and "ref" not in got[0],
            )
        # A `ref` of the wrong type is invalid_field and not echoed.
        for ref in (True, [1], {"a": 1}):
            n += 1
            got = await direct_answers(att, json.dumps({"type": "ping", "ref": ref}).encode(), n)
            check("/ws frames (JSON)", f"ref {json.dumps(ref)}", "error `invalid_field` (no ref)", describe(got), len(got) == 1 and got[0].get("code") == "invalid_field" and "ref" not in got[0])
        att.abort()
        check.done()

    run(body, timeout=120)


def test_size_limits(gw):
    check = h.Checks(REPORT)

    async def body():
        att = await h.WsAttacker.open(gw, "user_id=size-attacker")
        await att.join(ROOM)
        at_limit = {"type": "message", "room": ROOM, "content": "é" * (MAX_BYTES // 2), "ref": "at"}
        got = await direct_answers(att, json.dumps(at_limit, ensure_ascii=False).encode(), 1)
        check("/ws frames (JSON)", f"content of exactly {MAX_BYTES} bytes", "ack", describe(got), [f["type"] for f in got] == ["ack"])
        over = {"type": "message", "room": ROOM, "content": "x" * (MAX_BYTES + 1), "ref": "over"}
        got = await direct_answers(att, json.dumps(over).encode(), 2)
        check(
            "/ws frames (JSON)",
            f"content of {MAX_BYTES + 1} bytes (frame under the {MAX_BYTES + 4096}-byte limit)",
            "error `invalid_field`, open",
            describe(got),
            len(got) == 1 and got[0].get("code") == "invalid_field",
        )
        under = json.dumps({"type": "message", "room": ROOM, "content": "x" * (MAX_BYTES + 4096 - 70), "ref": "u"}).encode()
        assert len(under) <= MAX_BYTES + 4096
        got = await direct_answers(att, under, 3)
        check("/ws frames (JSON)", f"frame of {len(under)} bytes (at most the limit)", "error `invalid_field`, open", describe(got), len(got) == 1 and got[0].get("code") == "invalid_field")
        over_frame = b'{"type":"ping","pad":"' + b"x" * (MAX_BYTES + 4096 - 22 - 1) + b'"}'
        assert len(over_frame) == MAX_BYTES + 4097
        await att.send(h.text(over_frame))
        code = await att.close_code()
        check("/ws frames", f"frame of {MAX_BYTES + 4097} bytes (one over the limit)", "close 1009", f"close {code}", code == 1009)
        att.abort()
        check.done()

    run(body)


# --- floods --------------------------------------------------------------------------


def test_flood_of_joins(gw):
    check = h.Checks(REPORT)

    async def body():
        # More rooms than --max-rooms-per-connection, in one write.
        att = await h.WsAttacker.open(gw, "user_id=join-flooder")
        await att.join(ROOM)
        n = 150
        await att.send(b"".join(h.text(json.dumps({"type": "join", "room": f"flood-{i}", "ref": i})) for i in range(n)))
        answers = []
        while len(answers) < n:
            f = await att.read_json()
            if f.get("type") in ("joined", "error") and isinstance(f.get("ref"), int):
                answers.append(f)
        joined = [f["ref"] for f in answers if f["type"] == "joined"]
        refused = [f for f in answers if f["type"] == "error"]
        ok = joined == list(range(MAX_ROOMS - 1)) and all(f["code"] == "too_many_rooms" for f in refused) and len(refused) == n - MAX_ROOMS + 1
        check(
            "/ws frames (JSON)",
            f"{n} joins in one write (limit {MAX_ROOMS} rooms, 1 already joined)",
            f"{MAX_ROOMS - 1} `joined`, {n - MAX_ROOMS + 1} error `too_many_rooms`, open",
            f"{len(joined)} joined, {len(refused)} × error {sorted({f['code'] for f in refused})}",
            ok,
        )
        await att.send_json({"type": "ping", "ref": "still"})
        await att.until("pong", ref="still")
        att.abort()
        check.done()

    run(body)


async def flood_answers(att: h.WsAttacker, n: int, kinds: set[str]) -> tuple[list[dict], Any]:
    """Reads until ``n`` frames of the given types arrived, or the close frame; the
    frames and the close code (None while open)."""
    got: list[dict] = []
    while len(got) < n:
        op, payload = await att.read_frame()
        if op == 0x8:
            return got, int.from_bytes(payload[:2], "big")
        if op == 0x1:
            f = json.loads(payload)
            if f.get("type") in kinds:
                got.append(f)
    return got, None


def test_flood_of_pings(gw):
    """`ping` is free of the rate limit and answered in order: 2,000 of them pipelined
    in one write by a client that reads its answers at once."""
    check = h.Checks(REPORT)

    async def body():
        att = await h.WsAttacker.open(gw, "user_id=ping-flooder")
        await att.join(ROOM)
        n = 2000
        await att.send(b"".join(h.text(json.dumps({"type": "ping", "ref": i})) for i in range(n)))
        got, code = await flood_answers(att, n, {"pong", "error"})
        refs = [f.get("ref") if f["type"] == "pong" else f for f in got]
        check(
            "/ws frames (JSON)",
            f"{n} `ping` frames in one write (the client reads at once)",
            f"{n} `pong`, in order, open",
            f"{len(got)} answers, in order: {refs == list(range(n))}" + (f", then close {code}" if code else ", open"),
            refs == list(range(n)) and code is None,
        )
        att.abort()
        check.done()

    run(body)


def test_flood_of_invalid_frames(gw):
    """Invalid frames take no token (only the listed types do): 3,000 pipelined in one
    write each get their `bad_json`, and the connection stays open."""
    check = h.Checks(REPORT)

    async def body():
        att = await h.WsAttacker.open(gw, "user_id=garbage-flooder")
        n = 3000
        await att.send(b"".join(h.text(b"not json") for _ in range(n)))
        got, code = await flood_answers(att, n, {"error"})
        codes = {f["code"] for f in got}
        check(
            "/ws frames (JSON)",
            f"{n} invalid frames in one write (the client reads at once)",
            f"{n} × error `bad_json`, open (\"a bad frame never closes the connection\")",
            f"{len(got)} × error {sorted(codes)}" + (f", then close {code}" if code else ", open"),
            len(got) == n and codes == {"bad_json"} and code is None,
        )
        att.abort()
        check.done()

    run(body)


def test_flood_of_websocket_pings(gw):
    check = h.Checks(REPORT)

    async def body():
        att = await h.WsAttacker.open(gw, "user_id=wsping-flooder")
        await att.join(ROOM)
        n = 2000
        await att.send(b"".join(h.frame(0x9, i.to_bytes(4, "big") + b"p" * 121) for i in range(n)))
        await att.send_json({"type": "ping", "ref": "after"})
        pongs = 0
        last = -1
        while True:
            op, payload = await att.read_frame()
            if op == 0xA:
                pongs += 1
                last = int.from_bytes(payload[:4], "big")
            elif op == 0x1 and json.loads(payload).get("ref") == "after":
                break
            elif op == 0x8:
                last = f"close {int.from_bytes(payload[:2], 'big')}"
                break
        check(
            "/ws frames",
            f"{n} WebSocket Pings of 125 bytes in one write",
            "Pongs echoing the payload (at least the latest: RFC 6455 §5.5.3 lets older ones go unanswered), open",
            f"{pongs} Pongs, the last for ping {last}",
            pongs >= 1 and last == n - 1,
        )
        att.abort()
        check.done()

    run(body)


def test_flood_of_messages(gw):
    """Messages over the rate limit into the bystander's room, from their own
    connection: the burst is spent first (and answered), then 3,000 more come in one
    write: the excess is refused with `rate_limited` and the connection lives."""
    check = h.Checks(REPORT)

    async def body():
        att = await h.WsAttacker.open(gw, "user_id=message-flooder")
        await att.join(ROOM)
        frame = lambda i: h.text(json.dumps({"type": "message", "room": ROOM, "content": f"flood-{i}", "ref": i}))
        burst = 2 * RATE
        started = time.monotonic()
        await att.send(b"".join(frame(i) for i in range(burst)))
        # The burst's answers and the room's copies of what was accepted: once all
        # are in, the connection is quiet before the flood.
        first: list[dict] = []
        copies = 0
        code = None
        while code is None and (len(first) < burst or copies < sum(1 for f in first if f["type"] == "ack")):
            op, payload = await att.read_frame()
            if op == 0x8:
                code = int.from_bytes(payload[:2], "big")
            elif op == 0x1:
                f = json.loads(payload)
                if f.get("type") in ("ack", "error"):
                    first.append(f)
                elif f.get("type") == "message" and f.get("user_id") == "message-flooder":
                    copies += 1
        n = 3000
        if code is None:
            await att.send_json({"type": "ping", "ref": "quiet"})
            await att.until("pong", ref="quiet")
            await att.send(b"".join(frame(burst + i) for i in range(n)))
            got, code = await flood_answers(att, n, {"ack", "error"})
        else:
            got = []
        elapsed = time.monotonic() - started
        answers = first + got
        acks = sum(1 for f in answers if f["type"] == "ack")
        limited = sum(1 for f in answers if f["type"] == "error" and f["code"] == "rate_limited" and isinstance(f.get("ref"), int))
        if code is None:
            await att.send_json({"type": "ping", "ref": "alive"})
            await att.until("pong", ref="alive")
        bound = burst + RATE * elapsed + 1
        check(
            "/ws frames (JSON)",
            f"{burst} then {n} `message` frames in one write each (rate {RATE}/s, burst {burst})",
            f"at most burst + rate × time acked ({bound:.0f}), the rest error `rate_limited`; open",
            f"{acks} ack, {limited} rate_limited in {elapsed:.2f} s" + (f", then close {code}" if code else "; pong after"),
            code is None and acks + limited == burst + n and burst - 1 <= acks <= bound and limited > 0,
        )
        att.abort()
        check.done()

    run(body)


def test_flood_from_a_client_that_never_reads(gw):
    """A client that floods the server with frames that are answered and does not read
    the answers: the server stops reading from it once half its send queue is waiting
    (TCP pushes back on the flooder), and when it still has not read after the reader
    stall limit (10 s), it alone is closed with 1013."""
    check = h.Checks(REPORT)

    async def body():
        att = await h.WsAttacker.open(gw, "user_id=deaf-flooder")
        await att.join(ROOM)
        blob = b"".join(h.text(b"not json " + b"x" * 100) for _ in range(2000))
        sent = 0
        deadline = time.monotonic() + 3 * WAIT
        try:
            while time.monotonic() < deadline and sent < 400_000:
                await att.send(blob, timeout=2)
                sent += 2000
        except (asyncio.TimeoutError, OSError):
            pass
        # Not reading is the attack: time itself is the condition (the server's reader
        # stall limit is 10 s).
        await asyncio.sleep(READER_STALL_S + 2)
        code = await att.close_code(timeout=30)
        check(
            "/ws frames (JSON)",
            "invalid frames flooded by a client that does not read for 12 s",
            "TCP backpressure, then close 1013 after the 10 s reader stall, the room unaffected",
            f"close {code} after ~{sent} frames",
            code == 1013,
        )
        att.abort()
        check.done()

    run(body, timeout=90)


# --- /events --------------------------------------------------------------------------


def test_events(gw):
    check = h.Checks(REPORT)

    async def body():
        bad_rooms = [
            ("no rooms parameter", "/events?user_id=x"),
            ("empty rooms", "/events?rooms=&user_id=x"),
            ("only commas", "/events?rooms=,,,&user_id=x"),
            ("a room with a space", "/events?rooms=a,b%20c&user_id=x"),
            ("a room with ';' (the cursor separator)", "/events?rooms=a;b&user_id=x"),
            ("a room with '='", "/events?rooms=a=b&user_id=x"),
            ("a room of 129 characters", "/events?rooms=" + "r" * 129 + "&user_id=x"),
            ("a room with a NUL", "/events?rooms=a%00b&user_id=x"),
            ("65 rooms (limit 64)", "/events?rooms=" + ",".join(f"r{i}" for i in range(65)) + "&user_id=x"),
            ("5,000 rooms", "/events?rooms=" + ",".join(f"r{i}" for i in range(5000)) + "&user_id=x"),
            ("user_id with a control character", f"/events?rooms={ROOM}&user_id=a%01b"),
        ]
        for attack, path in bad_rooms:
            a = await h.http_exchange(gw, h.request("GET", path))
            check("/events", attack, "400 `invalid_field`", answer(a), is_json_error(a, 400, "invalid_field"))
        a = await h.http_exchange(gw, h.request("GET", "/events?rooms=private:x&user_id=x"))
        check("/events", "a private room in development mode", "403 `forbidden`", answer(a), is_json_error(a, 403, "forbidden"))
        # The same room 1,000 times is one room.
        a = await h.http_exchange(gw, h.request("GET", "/events?rooms=" + ",".join([ROOM] * 1000) + "&user_id=x"), timeout=2)
        check("/events", "the same room listed 1,000 times", "200 stream (duplicates count once)", answer(a), a.status == 200 and a.headers.get("content-type") == "text/event-stream")

        # Bad Last-Event-ID: unparseable parts are ignored, the stream starts live.
        for attack, value in [
            ("garbage", "garbage"),
            ("a cursor of an unknown room", "zzz=1-1"),
            ("ids that overflow u64", f"{ROOM}=99999999999999999999999-0"),
            ("a negative id", f"{ROOM}=-1-0"),
            ("8 KiB of ';'", ";" * 8192),
            ("a cursor in the future", f"{ROOM}=99999999999999-0"),
            ("non-ASCII bytes", "é=1-0"),
        ]:
            hdr = {"Last-Event-ID": value}
            raw = h.request("GET", f"/events?rooms={ROOM}&user_id=sse-attacker", hdr)
            a = await h.http_exchange(gw, raw, timeout=1.5)
            started = a.status == 200 and b"retry: 3000" in a.body
            check("/events", f"Last-Event-ID: {attack}", "200 stream (unparseable parts ignored)", answer(a).split(" body")[0] + (", stream started" if started else ""), started)
        check.done()

    run(body)


# --- /api/* --------------------------------------------------------------------------


def test_api(gw):
    check = h.Checks(REPORT)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    ctype = {"Content-Type": "application/json"}

    async def post(path: str, body: bytes, headers: dict[str, str]) -> h.HttpAnswer:
        return await h.http_exchange(gw, h.request("POST", path, headers, body))

    async def body():
        good = json.dumps({"room": ROOM, "data": {"from": "api"}}).encode()
        for attack, headers in [
            ("no key", {}),
            ("wrong key (Bearer)", {"Authorization": "Bearer nope"}),
            ("wrong key (X-Api-Key)", {"X-Api-Key": "nope"}),
            ("key as a prefix of the right one", {"Authorization": f"Bearer {API_KEY[:-1]}"}),
            ("the right key plus a character", {"Authorization": f"Bearer {API_KEY}x"}),
            ("Basic scheme with the key", {"Authorization": f"Basic {API_KEY}"}),
            ("empty Bearer", {"Authorization": "Bearer "}),
            ("key of 60 KiB", {"X-Api-Key": "k" * 60_000}),
            ("non-ASCII key", {"X-Api-Key": "clé"}),
        ]:
            for path in ("/api/publish", "/api/notifications"):
                a = await post(path, good, headers)
                check(path, attack, "401 `unauthorized`, WWW-Authenticate: Bearer", answer(a), is_json_error(a, 401, "unauthorized") and a.headers.get("www-authenticate") == "Bearer")
            a = await h.http_exchange(gw, h.request("GET", "/api/users/alice/notifications", headers))
            check("/api/users/{id}/notifications", attack, "401 `unauthorized`", answer(a), is_json_error(a, 401, "unauthorized"))

        # The content type is not checked (curl -d sends a form type): JSON is JSON.
        for attack, hdr in [("Content-Type: text/plain", {"Content-Type": "text/plain"}), ("no Content-Type", {}), ("Content-Type: multipart/form-data", {"Content-Type": "multipart/form-data; boundary=x"})]:
            a = await post("/api/publish", good, {**auth, **hdr})
            check("/api/publish", attack + " with a JSON body", "200 `{id}` (the body is read as JSON whatever its type)", answer(a), a.status == 200 and "id" in json.loads(a.body or b"{}"))

        for attack, raw in [
            ("invalid JSON", b"{not json"),
            ("empty body", b""),
            ("a JSON array", b"[1,2]"),
            ("a JSON string", b'"room"'),
            ("null", b"null"),
            ("form-encoded body", b"room=arena&data=1"),
            ("object nested 10,000 deep", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
            ("data nested 10,000 deep", b'{"room":"arena","data":' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
            ("invalid UTF-8 in a string", b'{"room":"arena","data":"\xff"}'),
            ("lone surrogate escape", b'{"room":"arena","data":"\\ud800"}'),
            ("trailing garbage", good + b" x"),
        ]:
            for path in ("/api/publish", "/api/notifications"):
                a = await post(path, raw, {**auth, **ctype})
                check(path, attack, "400 `bad_json`", answer(a), is_json_error(a, 400, "bad_json"))

        publish_cases = [
            ("no target", {"data": 1}),
            ("no data", {"room": ROOM}),
            ("room and user_id", {"room": ROOM, "user_id": "u", "data": 1}),
            ("room and broadcast", {"room": ROOM, "broadcast": True, "data": 1}),
            ("broadcast: false alone", {"broadcast": False, "data": 1}),
            ("broadcast: \"true\"", {"broadcast": "true", "data": 1}),
            ("room: 5", {"room": 5, "data": 1}),
            ("room: null", {"room": None, "data": 1}),
            ("room: \"\"", {"room": "", "data": 1}),
            ("room with a space", {"room": "a b", "data": 1}),
            ("room of 129 characters", {"room": "r" * 129, "data": 1}),
            ("user_id: 5", {"user_id": 5, "data": 1}),
            ("user_id: \"\"", {"user_id": "", "data": 1}),
            ("user_id with a newline", {"user_id": "a\nb", "data": 1}),
            ("user_id of 129 bytes", {"user_id": "u" * 129, "data": 1}),
            ("an unknown field", {"room": ROOM, "data": 1, "extra": 1}),
            ("a field of 60 KiB name", {"room": ROOM, "data": 1, "k" * 60_000: 1}),
        ]
        for attack, obj in publish_cases:
            a = await post("/api/publish", json.dumps(obj).encode(), {**auth, **ctype})
            check("/api/publish", attack, "400 `invalid_field`", answer(a), is_json_error(a, 400, "invalid_field"))
        base = {"user_id": "api-target", "title": "t", "body": "b"}
        notify_cases = [
            ("no user", {"title": "t", "body": "b"}),
            ("user_id and user_ids", {**base, "user_ids": ["a"]}),
            ("user_ids: []", {"user_ids": [], "title": "t", "body": "b"}),
            ("user_ids with 1,001 users", {"user_ids": [f"u{i}" for i in range(1001)], "title": "t", "body": "b"}),
            ("user_ids: \"a\"", {"user_ids": "a", "title": "t", "body": "b"}),
            ("user_ids: [5]", {"user_ids": [5], "title": "t", "body": "b"}),
            ("user_ids: [null]", {"user_ids": [None], "title": "t", "body": "b"}),
            ("user_id: 5", {**base, "user_id": 5}),
            ("no title", {k: v for k, v in base.items() if k != "title"}),
            ("title: \"\"", {**base, "title": ""}),
            ("title of 257 bytes", {**base, "title": "t" * 257}),
            ("title: 5", {**base, "title": 5}),
            ("no body", {k: v for k, v in base.items() if k != "body"}),
            ("body: null", {**base, "body": None}),
            ("body: 5", {**base, "body": 5}),
            ("kind: \"fatal\"", {**base, "kind": "fatal"}),
            ("kind: 1", {**base, "kind": 1}),
            ("action_url: \"\"", {**base, "action_url": ""}),
            ("action_url of 2,049 bytes", {**base, "action_url": "u" * 2049}),
            ("action_url: 5", {**base, "action_url": 5}),
            ("an unknown field", {**base, "read": True}),
        ]
        for attack, obj in notify_cases:
            a = await post("/api/notifications", json.dumps(obj).encode(), {**auth, **ctype})
            check("/api/notifications", attack, "400 `invalid_field`", answer(a), is_json_error(a, 400, "invalid_field"))
        for attack, query in [
            ("limit=0", "limit=0"),
            ("limit=101", "limit=101"),
            ("limit=abc", "limit=abc"),
            ("limit=-1", "limit=-1"),
            ("limit of 60 KiB of digits", "limit=" + "9" * 60_000),
            ("before with a space", "before=a%20b"),
            ("before of 65 characters", "before=" + "a" * 65),
            ("unread_only=maybe", "unread_only=maybe"),
        ]:
            a = await h.http_exchange(gw, h.request("GET", f"/api/users/alice/notifications?{query}", auth))
            check("/api/users/{id}/notifications", attack, "400 `invalid_field`", answer(a), is_json_error(a, 400, "invalid_field"))
        for attack, user in [("user id of 129 bytes", "u" * 129), ("user id with %0A", "a%0Ab")]:
            a = await h.http_exchange(gw, h.request("GET", f"/api/users/{user}/notifications", auth))
            check("/api/users/{id}/notifications", attack, "400 `invalid_field`", answer(a), is_json_error(a, 400, "invalid_field"))
        # A publish with a valid but deep `data` reaches the room's members intact.
        deep = {"room": ROOM, "data": json.loads("[" * 100 + "]" * 100)}
        a = await post("/api/publish", json.dumps(deep).encode(), {**auth, **ctype})
        check("/api/publish", "data nested 100 deep (valid)", "200 `{id}`", answer(a), a.status == 200)
        check.done()

    run(body, timeout=120)


# --- the bystander, and memory ------------------------------------------------------------


def test_zz_bystander_got_everything_and_memory_is_back(gw, witness):
    """Runs last: stops the publisher, checks the bystander's exact sequence, waits for
    every attacker's session to be gone, and compares the gateway's RSS with the
    baseline taken before the campaign."""
    check = h.Checks(REPORT)

    async def body():
        # Every attacker is gone: only the bystander and the publisher remain.
        async def only_witness():
            s = await gw.stats()
            return s if s["active_connections"] == 2 else None

        await poll(only_witness, timeout=30)
        witness.stop()
        ok, summary = witness.verdict()
        max_latency = max(witness.latency) if witness.latency else float("inf")
        check(
            "bystander",
            "the whole campaign, in the room the attackers joined",
            "every publisher message, in order, no gap, no duplicate; max latency < 2 s",
            summary,
            ok and max_latency < 2.0,
        )
        await gw.wait_active(0)
        before = witness.rss_before
        after = await h.settled_rss(gw.pid, floor=before + RSS_BOUND_KIB // 2)
        grown = after - before
        REPORT.note(f"gateway RSS before the campaign {before} KiB, after it (settled) {after} KiB: {grown:+d} KiB (bound {RSS_BOUND_KIB} KiB)")
        check("gateway", "memory after the campaign", f"RSS growth < {RSS_BOUND_KIB // 1024} MiB", f"{before} → {after} KiB ({grown:+d} KiB)", grown < RSS_BOUND_KIB)
        # Idle once the attackers are gone: no task left spinning.
        t0 = h.cpu_ticks(gw.pid)
        t = time.monotonic()
        await asyncio.sleep(2)
        busy = (h.cpu_ticks(gw.pid) - t0) / h.TICKS_PER_S / (time.monotonic() - t)
        check("gateway", "CPU when idle after the campaign", "< 5 % of a core", f"{busy * 100:.1f} %", busy < 0.05)
        print(f"\n{summary}\nRSS {before} -> {after} KiB ({grown:+d}); idle CPU {busy * 100:.1f} %")
        check.done()

    run(body, timeout=90)
