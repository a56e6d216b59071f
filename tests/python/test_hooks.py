"""Back-end hooks (issue 19, item 3): the connect, join and publish hooks against a real
back end of the test (hook_backend.py, which checks every call's signature and records
it). A product that uses its own session cookies instead of JWTs; refusals, replaced
content, a JWT checked before the hook; a back end that hangs or is down under each
failure policy; the circuit breaker opening (calls stop reaching the back end, and
are counted) and closing again after a probe."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import select
import subprocess
import sys
import time

import pytest

from harness import REPO, WAIT, Gateway, binary, now, poll, run, token
from hook_backend import HookBackend, Reply, allow, closed_port_url, refuse

SECRET = "hook-test-secret-0123456789abcdef"
JWT_SECRET = "hook-test-jwt-secret-0123456789abcdef"


@pytest.fixture
def backends():
    started: list[HookBackend] = []

    def start(answer) -> HookBackend:
        b = HookBackend(SECRET, answer)
        started.append(b)
        return b

    yield start
    for b in started:
        b.close()


def hook_flags(backend: HookBackend | None, *hooks: str, url=None) -> list[str]:
    flags = ["--hook-secret", SECRET]
    for hook in hooks:
        flags += [f"--hook-{hook}-url", url(hook) if url else backend.url(hook)]
    return flags


def metrics(gw: Gateway) -> dict[tuple[str, frozenset], float]:
    status, _, body = gw.http("GET", "/metrics")
    assert status == 200
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(gw: Gateway, name: str, **labels: str) -> float:
    return metrics(gw).get((name, frozenset(labels.items())), 0.0)


async def handshake(gw: Gateway, query: str = "", headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    """A `/ws` upgrade by hand: status, headers (lower-case), and a refusal's JSON body."""
    host, port = gw.addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(
        f"GET /ws?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
    )
    try:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)).decode()
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        body = {}
        if status >= 400 and "content-length" in hdrs:
            body = json.loads(await asyncio.wait_for(reader.readexactly(int(hdrs["content-length"])), WAIT))
        return status, hdrs, body
    finally:
        writer.close()


def sse(gw: Gateway, query: str, headers: dict[str, str]) -> tuple[int, dict]:
    """`GET /events?…`: the status and, for a refusal, the JSON body (a stream is
    dropped after its head)."""
    host, port = gw.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
    try:
        conn.request("GET", f"/events?{query}", headers=headers)
        res = conn.getresponse()
        return res.status, (json.loads(res.read()) if res.status >= 400 else {})
    finally:
        conn.close()


def test_a_cookie_session_product_decides_connects_joins_and_publishes(start_gateway, backends):
    def answer(path: str, body: dict) -> Reply:
        if path == "/connect":
            cookie = body["headers"].get("cookie")
            if cookie == "sid=good":
                return allow(user_id="u-cookie", username="Cookie User", rooms=["private:team-*"])
            if cookie == "sid=expired":
                return refuse(code="unauthorized", message="session expired")
            return refuse(message="no session\r\n\u202e cookie")
        if path == "/join":
            return refuse(message="members only") if body["room"] == "vip" else allow()
        content = body["content"]
        if content == "spam":
            return refuse(message="no spam")
        if content == "grow":
            return allow(content="x" * 65537)
        return allow(content=content.replace("darn", "****")) if "darn" in content else allow()

    backend = backends(answer)
    gw = start_gateway(*hook_flags(backend, "connect", "join", "publish"), "--trusted-proxies", "127.0.0.1")
    cookie = {"Cookie": "sid=good"}

    async def body():
        # No JWT configured: the hook names the user; `?user_id=` is passed on, not trusted.
        a = await gw.open("user_id=mallory&lang=en", additional_headers={
            **cookie, "X-Forwarded-For": "203.0.113.9", "Origin": "https://app.example"})
        assert (a.welcome["user_id"], a.welcome["username"]) == ("u-cookie", "Cookie User")
        [call] = backend.calls("connect")
        assert "websockets" in call.body["headers"].pop("user-agent")
        assert call.body == {
            "hook": "connect", "node_id": a.welcome["node_id"], "session_id": a.welcome["session_id"],
            "transport": "websocket", "client_ip": "203.0.113.9",
            "headers": {"cookie": "sid=good", "origin": "https://app.example"},
            "query": {"user_id": "mallory", "lang": "en"}, "token": None,
        }
        assert call.headers["content-type"] == "application/json"
        assert call.headers["user-agent"].startswith("wsgate/")

        # Refusals come before the upgrade, with the hook's message made safe to show.
        status, _, refused = await handshake(gw, "", {"Cookie": "sid=bad"})
        assert (status, refused) == (403, {"error": {"code": "forbidden", "message": "no session    cookie"}})
        status, _, refused = await handshake(gw, "", {"Cookie": "sid=expired"})
        assert (status, refused["error"]) == (401, {"code": "unauthorized", "message": "session expired"})
        assert metric(gw, "wsgate_hook_calls_total", hook="connect", outcome="refused") == 2
        assert metric(gw, "wsgate_handshake_refusals_total", status="403") == 1

        # Joins: asked of the hook with who and where; a refusal is `forbidden` with its
        # message and joins nothing; private rooms follow the grants the hook gave.
        await a.join_first("lobby")
        join = backend.calls("join")[-1].body
        assert join == {"hook": "join", "node_id": a.welcome["node_id"], "session_id": a.welcome["session_id"],
                        "transport": "websocket", "user": a.user, "room": "lobby"}
        err = await a.error({"type": "join", "room": "vip", "ref": "j-vip"}, "forbidden")
        assert err["message"] == "members only"
        await a.error({"type": "message", "room": "vip", "content": "in?", "ref": "m-vip"}, "not_member")
        await a.join_first("private:team-x")
        asked = len(backend.calls("join"))
        err = await a.error({"type": "join", "room": "private:ops", "ref": "j-ops"}, "forbidden")
        assert "not granted" in err["message"]
        assert len(backend.calls("join")) == asked, "a room the grants refuse costs no hook call"

        # Publishes: a burst is one batch; each message is allowed, replaced or refused,
        # answered in order, and only what the hook let through is stored, in order.
        for ref, content in [("p1", "hello"), ("p2", "darn it"), ("p3", "spam"), ("p4", "bye")]:
            await a.send({"type": "message", "room": "lobby", "content": content, "ref": ref})
        answers, messages = [], []
        while len(answers) < 4 or len(messages) < 3:
            f = await a.recv()
            (messages if f["type"] == "message" else answers).append(f)
        assert [(f["type"], f["ref"]) for f in answers] == [("ack", "p1"), ("ack", "p2"), ("error", "p3"), ("ack", "p4")]
        assert (answers[2]["code"], answers[2]["message"]) == ("forbidden", "no spam")
        assert [m["content"] for m in messages] == ["hello", "**** it", "bye"]
        history = await a.request({"type": "history", "room": "lobby"}, "history")
        assert [m["content"] for m in history["messages"]] == ["hello", "**** it", "bye"]
        published = [c.body for c in backend.calls("publish")]
        assert sorted(p["content"] for p in published) == ["bye", "darn it", "hello", "spam"]
        assert all(p["user"] == a.user and p["room"] == "lobby" and p["session_id"] == a.welcome["session_id"]
                   for p in published)
        # A replacement over --max-message-bytes is a bad answer: the default policy
        # (closed) refuses the message, nothing is stored.
        err = await a.error({"type": "message", "room": "lobby", "content": "grow", "ref": "p5"}, "unavailable")
        assert "publish hook" in err["message"]
        assert metric(gw, "wsgate_hook_failures_total", hook="publish", reason="bad_answer") == 1
        assert metric(gw, "wsgate_hook_calls_total", hook="publish", outcome="replaced") == 1
        assert metric(gw, "wsgate_hook_calls_total", hook="publish", outcome="refused") == 1
        assert metric(gw, "wsgate_hook_calls_total", hook="publish", outcome="allowed") == 2
        assert metric(gw, "wsgate_hook_latency_seconds_count", hook="publish") == 5

        # /events: the same connect hook, and the join hook for each of its rooms.
        assert await asyncio.to_thread(sse, gw, "rooms=lobby", cookie) == (200, {})
        status, refused = await asyncio.to_thread(sse, gw, "rooms=lobby,vip", cookie)
        assert (status, refused["error"]["message"]) == (403, "vip: members only")
        assert (await asyncio.to_thread(sse, gw, "rooms=lobby", {}))[0] == 403
        assert {c.body["transport"] for c in backend.calls("connect")} == {"websocket", "sse"}

        calls = backend.calls()
        assert all(c.signed for c in calls), "every call carries a valid signature"
        # One pooled connection serves sequential calls (the burst's four ran at once).
        assert 2 * len({c.port for c in calls}) < len(calls)

    run(body)


def test_a_jwt_is_checked_before_the_connect_hook(start_gateway, backends):
    backend = backends(lambda path, body: allow(username=body["token"]["username"] + " (verified)"))
    gw = start_gateway("--jwt-secret", JWT_SECRET, *hook_flags(backend, "connect"))
    exp = now() + 600

    async def body():
        tok = token(JWT_SECRET, sub="alice", name="Alice", rooms=["private:a"], exp=exp)
        a = await gw.open(f"token={tok}")
        assert (a.welcome["user_id"], a.welcome["username"]) == ("alice", "Alice (verified)")
        [call] = backend.calls("connect")
        assert call.body["token"] == {"user_id": "alice", "username": "Alice", "rooms": ["private:a"], "exp": exp}
        await a.join_first("private:a")
        status, _, _ = await handshake(gw, "token=garbage")
        assert status == 401
        assert len(backend.calls("connect")) == 1, "a bad token costs no hook call"

    run(body)


def test_a_hook_that_times_out_follows_its_policy(start_gateway, backends):
    def answer(path: str, body: dict) -> Reply:
        if body["node_id"] == "open" or path == "/publish":
            return Reply(hang=True)
        if path == "/connect":
            return Reply(hang=True) if body["headers"].get("cookie") == "sid=hang" else allow(user_id="u-1")
        return allow() if body["room"] == "lobby" else Reply(hang=True)

    backend = backends(answer)
    flags = [*hook_flags(backend, "connect", "join", "publish"), "--hook-timeout-ms", "300"]
    opened = start_gateway(*flags, "--node-id", "open", "--hook-connect-fail", "open",
                           "--hook-join-fail", "open", "--hook-publish-fail", "open")
    closed = start_gateway(*flags, "--node-id", "closed")

    async def body():
        # Open: a client the hook could not vouch for gets in as an anonymous user (the
        # query is never trusted), joins, and publishes what it sent.
        a = await opened.open("user_id=mallory")
        assert a.welcome["user_id"].startswith("anon-")
        await a.join_first("lobby")
        await a.send({"type": "message", "room": "lobby", "content": "as sent", "ref": 1})
        frames = await a.recv_n(2)
        assert {f["type"] for f in frames} == {"ack", "message"}
        assert [f["content"] for f in frames if f["type"] == "message"] == ["as sent"]
        for hook in ("connect", "join", "publish"):
            assert metric(opened, "wsgate_hook_failures_total", hook=hook, reason="timeout") == 1
            assert metric(opened, "wsgate_hook_calls_total", hook=hook, outcome="failed") == 1

        # Closed: no connect (503, retry), no join, no publish; each says to retry.
        started = time.monotonic()
        status, hdrs, refused = await handshake(closed, "", {"Cookie": "sid=hang"})
        assert (status, hdrs["retry-after"], refused["error"]["code"]) == (503, "1", "unavailable")
        assert time.monotonic() - started < 3, "bounded by --hook-timeout-ms"
        b = await closed.open("", additional_headers={"Cookie": "sid=ok"})
        assert b.welcome["user_id"] == "u-1"
        err = await b.error({"type": "join", "room": "slow", "ref": "j"}, "unavailable")
        assert "join hook" in err["message"]
        await b.join_first("lobby")
        await b.error({"type": "message", "room": "lobby", "content": "lost?", "ref": "m"}, "unavailable")
        assert (await b.request({"type": "history", "room": "lobby"}, "history"))["messages"] == []
        await b.error({"type": "message", "room": "slow", "content": "x", "ref": "n"}, "not_member")

    run(body)


def test_a_back_end_that_is_down_follows_each_policy(start_gateway, backends):
    down = closed_port_url
    all_open = start_gateway(*hook_flags(None, "connect", "join", "publish", url=down),
                             "--hook-connect-fail", "open", "--hook-join-fail", "open", "--hook-publish-fail", "open")
    connect_closed = start_gateway(*hook_flags(None, "connect", url=down))
    join_closed = start_gateway(*hook_flags(None, "join", url=down))
    # Policies are per hook: joins let through, publishes refused.
    mixed = start_gateway(*hook_flags(None, "join", "publish", url=down), "--hook-join-fail", "open")

    async def body():
        a = await all_open.open("user_id=mallory")
        assert a.welcome["user_id"].startswith("anon-")
        await a.join_first("lobby")
        await a.send({"type": "message", "room": "lobby", "content": "still here", "ref": 1})
        assert {f["type"] for f in await a.recv_n(2)} == {"ack", "message"}
        for hook in ("connect", "join", "publish"):
            assert metric(all_open, "wsgate_hook_failures_total", hook=hook, reason="unreachable") == 1

        status, _, refused = await handshake(connect_closed, "user_id=bob")
        assert (status, refused["error"]["code"]) == (503, "unavailable")
        assert (await asyncio.to_thread(sse, connect_closed, "rooms=lobby", {}))[0] == 503

        b = await join_closed.connect("bob")
        await b.error({"type": "join", "room": "lobby", "ref": "j"}, "unavailable")

        c = await mixed.connect("carol")
        await c.join_first("lobby")
        await c.error({"type": "message", "room": "lobby", "content": "x", "ref": "m"}, "unavailable")
        assert metric(mixed, "wsgate_hook_calls_total", hook="publish", outcome="failed") == 1

    run(body)


def test_the_breaker_opens_stops_calls_and_closes_after_a_probe(start_gateway, backends):
    state = {"healthy": False}
    backend = backends(lambda path, body: allow() if state["healthy"] else Reply({"oops": 1}, status=500))
    gw = start_gateway(*hook_flags(backend, "join"), "--hook-breaker-failures", "3",
                       "--hook-breaker-cooldown-ms", "600")

    async def join(c, room: str) -> str:
        await c.send({"type": "join", "room": room, "ref": room})
        f = await c.recv()
        assert f["type"] in ("joined", "error") and f["ref"] == room, f
        if f["type"] == "joined":
            await c.expect("presence")
            return "joined"
        assert f["code"] == "unavailable", f
        return "unavailable"

    async def body():
        c = await gw.connect("alice")
        for i in range(3):
            assert await join(c, f"r{i}") == "unavailable"
        assert len(backend.calls("join")) == 3
        assert metric(gw, "wsgate_hook_breaker_open", hook="join") == 1
        # Open: calls fail at once without reaching the back end, and are counted.
        started = time.monotonic()
        assert await join(c, "r3") == "unavailable"
        assert await join(c, "r4") == "unavailable"
        assert len(backend.calls("join")) == 3
        assert metric(gw, "wsgate_hook_failures_total", hook="join", reason="breaker_open") >= 2
        assert metric(gw, "wsgate_hook_failures_total", hook="join", reason="status") == 3

        # After the cool-down one probe reaches the back end; it fails: open again.
        async def probed():
            await join(c, "probe")
            return True if len(backend.calls("join")) == 4 else None

        await poll(probed, every=0.1)
        assert time.monotonic() - started >= 0.5
        assert await join(c, "r5") == "unavailable"
        assert len(backend.calls("join")) == 4

        # The back end recovers: the next probe closes the breaker.
        state["healthy"] = True

        async def closed_again():
            return True if await join(c, "back") == "joined" else None

        await poll(closed_again, every=0.1)
        assert len(backend.calls("join")) == 5, "exactly one probe per cool-down"
        assert metric(gw, "wsgate_hook_breaker_open", hook="join") == 0
        assert await join(c, "r6") == "joined"
        assert len(backend.calls("join")) == 6

    run(body)


def test_a_hook_without_a_secret_refuses_to_start():
    for flags, why in [
        (["--hook-join-url", "http://127.0.0.1:9/join"], "--hook-secret is required"),
        (["--hook-join-url", "http://127.0.0.1:9/join", "--hook-secret", "short"], "at least 16 bytes"),
        (["--hook-publish-url", "not a url", "--hook-secret", SECRET], "--hook-publish-url"),
    ]:
        done = subprocess.run([str(binary()), "--listen", "127.0.0.1:0", *flags],
                              capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 2 and why in done.stderr, (flags, done.returncode, done.stderr)


def doc_example(name: str) -> str:
    """The code block that follows ``<!-- example: NAME`` in docs/http-api.md."""
    text = (REPO / "docs" / "http-api.md").read_text()
    fence = text.index("```", text.index(f"<!-- example: {name}"))
    start = text.index("\n", fence) + 1
    return text[start:text.index("\n```", start) + 1]


@pytest.mark.parametrize("name,interpreter", [("hooks.py", sys.executable), ("hooks.mjs", "node")])
def test_the_documented_back_ends_work(start_gateway, tmp_path, name, interpreter):
    script = tmp_path / name
    script.write_text(doc_example(name))
    proc = subprocess.Popen([interpreter, str(script)], env={**os.environ, "HOOK_SECRET": SECRET, "PORT": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        assert ready, f"{name} printed nothing within {WAIT} s"
        line = proc.stdout.readline()
        assert line.startswith("hooks listening on "), (line, proc.stderr.read() if proc.poll() is not None else "")
        url = f"http://127.0.0.1:{int(line.rsplit(' ', 1)[1])}/"
        gw = start_gateway("--hook-secret", SECRET, "--hook-connect-url", url, "--hook-join-url", url,
                           "--hook-publish-url", url)

        async def body():
            alice = await gw.open("", additional_headers={"Cookie": "theme=dark; session=alice-session"})
            assert (alice.welcome["user_id"], alice.welcome["username"]) == ("alice", "Alice")
            await alice.join_first("staff-room")
            await alice.join_first("private:team-x")
            bob = await gw.open("user_id=alice", additional_headers={"Cookie": "session=bob-session"})
            assert bob.welcome["user_id"] == "bob"
            err = await bob.error({"type": "join", "room": "staff-room", "ref": 1}, "forbidden")
            assert err["message"] == "staff only"
            await bob.error({"type": "join", "room": "private:team-x", "ref": 2}, "forbidden")
            await bob.join_first("lobby")
            await bob.send({"type": "message", "room": "lobby", "content": "darn it", "ref": 3})
            frames = await bob.recv_n(2)
            assert [f["content"] for f in frames if f["type"] == "message"] == ["**** it"]
            err = await bob.error({"type": "message", "room": "lobby", "content": "see https://x.example", "ref": 4},
                                  "forbidden")
            assert err["message"] == "no links, please"
            status, _, refused = await handshake(gw, "user_id=alice")
            assert (status, refused["error"]) == (401, {"code": "unauthorized", "message": "please log in"})
            assert metric(gw, "wsgate_hook_failures_total", hook="connect", reason="status") == 0

        run(body)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
