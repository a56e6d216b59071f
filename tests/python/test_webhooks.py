"""Webhooks against real processes: gateways POST batches of signed events to a back
end written here (``webhook_backend.py``: the standard library's HTTP server, every
signature checked, every call recorded, answers chosen per scenario).

- One node (embedded broker): presence transitions, ``user_offline`` only after the
  presence grace (and not at all for a user back within it), ``client_message`` only in
  a namespace that opts in, batches, signatures, metrics; a back end that answers 500
  gets the same events again, with growing waits, until it answers 200.
- Three nodes on one Redis: one ``room_occupied`` and one ``room_vacated`` per room
  however many nodes held it, one ``member_*`` per user, one ``user_offline`` per user
  after the grace (a user with sessions on two nodes, one back on another node within
  the grace); a node killed with ``kill -9`` while it holds undelivered events: a
  survivor delivers them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from typing import Any, Callable

import pytest

from backend_harness import RedisServer, kill, say
from harness import REPO, WAIT, Gateway, poll, run
from webhook_backend import WebhookBackend

SECRET = "webhook-secret-0123456789"
GRACE_MS = 600

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture
def backend_factory():
    made: list[WebhookBackend] = []

    def make(status: Callable[[int], int] = lambda n: 200) -> WebhookBackend:
        b = WebhookBackend(SECRET, status)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def webhook_flags(backend: WebhookBackend, *extra: str) -> list[str]:
    return ["--webhook-url", backend.url, "--webhook-secret", SECRET, "--webhook-batch-ms", "50", *extra]


def metric(gw: Gateway, name: str, **labels: str) -> float:
    status, _, body = gw.http("GET", "/metrics")
    assert status == 200
    want = set(labels.items())
    for line in body.decode().splitlines():
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if m and m.group(1) == name and set(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")) == want:
            return float(m.group(3))
    return 0.0


async def counted(gw: Gateway, name: str, value: float, **labels: str) -> None:
    """Waits until a metric reaches ``value`` (a node counts a batch once its POST
    is answered, a moment after the back end saw it), and fails if it goes past."""

    async def reached():
        v = await asyncio.to_thread(metric, gw, name, **labels)
        return v if v >= value else None

    assert await poll(reached) == value


async def wait_events(backend: WebhookBackend, count: int, timeout: float = WAIT, **match: Any) -> list[dict]:
    """Waits until ``count`` delivered events match (and fails if more do)."""

    async def enough():
        evs = backend.events(**match)
        return evs if len(evs) >= count else None

    evs = await poll(enough, timeout=timeout)
    assert len(evs) == count, (match, evs)
    return evs


def brief(evs: list[dict]) -> list[tuple]:
    return [(e["name"], e.get("room"), e.get("user_id")) for e in evs]


def test_embedded_node_sends_presence_and_messages(start_gateway, backend_factory, tmp_path):
    backend = backend_factory()
    config = tmp_path / "ns.toml"
    config.write_text("[namespaces.support]\nwebhook_client_messages = true\n")
    gw = start_gateway("--presence-grace-ms", str(GRACE_MS), "--config", str(config), *webhook_flags(backend))

    async def body():
        alice = await gw.connect("alice")
        await alice.join_first("lobby")
        bob = await gw.connect("bob")
        await bob.join_first("lobby")
        assert (await alice.expect("presence"))["user"] == bob.user
        await wait_events(backend, 3, room="lobby")
        assert brief(backend.events(room="lobby")) == [
            ("room_occupied", "lobby", None), ("member_added", "lobby", "alice"), ("member_added", "lobby", "bob")]

        # client_message: in `support` (opted in), not in the default namespace.
        await alice.join_first("support:1")
        await bob.join_first("support:1")
        await alice.expect("presence")
        m = await say(alice, "support:1", "help me", "m1")
        assert await bob.expect("message") == m
        await say(alice, "lobby", "not sent", "m2")
        await bob.expect("message")
        [cm] = await wait_events(backend, 1, name="client_message")
        assert (cm["room"], cm["user_id"], cm["message"]) == ("support:1", "alice", m)

        # carol closes and is back within the grace: neither removed nor offline.
        carol = await gw.connect("carol")
        await carol.join_first("lobby")
        await carol.close()
        carol = await gw.connect("carol")
        await carol.request({"type": "join", "room": "lobby"}, "joined")

        # alice closes: her rooms and then she go after the grace, not before.
        closed_at = time.monotonic()
        await alice.close()
        [off] = await wait_events(backend, 1, name="user_offline")
        assert off["user_id"] == "alice"
        arrived = backend.delivered()[off["id"]][1].at
        assert arrived - closed_at >= GRACE_MS / 1000 * 0.9, arrived - closed_at
        removed = backend.events(name="member_removed")
        assert sorted(brief(removed)) == [("member_removed", "lobby", "alice"), ("member_removed", "support:1", "alice")]
        assert all(e["time_ms"] <= off["time_ms"] for e in removed)

        # An explicit leave is not delayed: bob leaves support:1, the room is vacated.
        await bob.send({"type": "leave", "room": "support:1"})
        await bob.recv_until("left")
        await wait_events(backend, 1, name="room_vacated")
        assert brief(backend.events(room="support:1"))[-2:] == [
            ("member_removed", "support:1", "bob"), ("room_vacated", "support:1", None)]

        # Everything recorded after carol's grace ended is in: nothing for carol but her join.
        assert brief(backend.events(user_id="carol")) == [("member_added", "lobby", "carol")]
        assert not backend.events(user_id="bob", name="user_offline"), "bob is still connected"

        calls = backend.calls()
        assert calls and all(c.signed and c.ok for c in calls), calls
        assert all(c.headers["content-type"] == "application/json" and c.node for c in calls)
        assert any(len(c.body["events"]) > 1 for c in calls), "events recorded together go together"
        ids = [i for c in calls for i in c.ids]
        assert len(ids) == len(set(ids)), "each event once"
        assert all(set(e) <= {"id", "name", "time_ms", "room", "user_id", "message"}
                   for c in calls for e in c.body["events"])
        await counted(gw, "wsgate_webhook_events_total", len(ids), outcome="delivered")
        await counted(gw, "wsgate_webhook_requests_total", len(calls), result="2xx")

    run(body)


def test_embedded_node_retries_after_500(start_gateway, backend_factory):
    backend = backend_factory(lambda n: 500 if n <= 2 else 200)
    gw = start_gateway("--presence-grace-ms", "0", *webhook_flags(backend))

    async def body():
        dave = await gw.connect("dave")
        await dave.join_first("r")
        await wait_events(backend, 2)
        calls = backend.calls()
        assert [c.status for c in calls] == [500, 500, 200]
        assert calls[0].ids == calls[1].ids == calls[2].ids, "the same events, the same ids"
        assert calls[0].body == calls[2].body, "the same body, signed again"
        # Waits of 500 ms then 1 s, with jitter down to half of each.
        assert calls[1].at - calls[0].at >= 0.25 and calls[2].at - calls[1].at >= 0.5
        # Delivered once: the next events go without them.
        await dave.close()
        await wait_events(backend, 1, name="room_vacated")
        await wait_events(backend, 1, name="user_offline")
        later = backend.calls()[3:]
        assert later and all(c.status == 200 and not set(c.ids) & set(calls[0].ids) for c in later)
        assert metric(gw, "wsgate_webhook_requests_total", result="5xx") == 2
        await counted(gw, "wsgate_webhook_events_total", 5, outcome="delivered")

    run(body)


def test_embedded_node_sends_what_its_shutdown_records(start_gateway, backend_factory):
    backend = backend_factory()
    gw = start_gateway("--presence-grace-ms", "300", *webhook_flags(backend))

    async def body():
        zed = await gw.connect("zed")
        await zed.join_first("z")
        await wait_events(backend, 2)
        # SIGTERM: the session is drained (1001), its presence waits out the grace,
        # and what that records is sent before the process exits.
        gw.terminate()
        assert await zed.closed() == 1001
        assert await asyncio.to_thread(gw.wait_exit) == 0
        assert brief(backend.events())[2:] == [
            ("member_removed", "z", "zed"), ("room_vacated", "z", None), ("user_offline", None, "zed")]

    run(body)


@pytest.fixture
def three_nodes(redis: RedisServer, start_gateway) -> Callable[..., list[Gateway]]:
    def start(backend: WebhookBackend, *extra: str) -> list[Gateway]:
        nodes = [start_gateway("--redis-url", redis.url, "--node-id", f"n{i}", "--presence-grace-ms", "1000",
                               *webhook_flags(backend, *extra)) for i in (1, 2, 3)]

        async def ready():
            for gw in nodes:
                async def up(gw=gw):
                    status, _, _ = await asyncio.to_thread(gw.http, "GET", "/readyz")
                    return True if status == 200 else None

                await poll(up, timeout=WAIT * 2)

        run(ready)
        return nodes

    return start


@needs_redis
def test_three_nodes_one_event_per_transition(three_nodes, backend_factory):
    backend = backend_factory()
    n1, n2, n3 = three_nodes(backend)
    rooms = ["hall", "r1", "r2", "r3"]

    async def body():
        people = {}
        for user, gw in (("a", n1), ("b", n2), ("c", n3)):
            people[user] = c = await gw.connect(user)
            for room in rooms:
                await c.join_first(room)
        dup1 = await n1.connect("dup")
        await dup1.join_first("hall")
        dup2 = await n2.connect("dup")
        await dup2.request({"type": "join", "room": "hall"}, "joined")
        await wait_events(backend, 13, name="member_added")
        assert Counter(e["room"] for e in backend.events(name="room_occupied")) == Counter(rooms)

        # eve leaves n1 and is back on n3 within the grace: no removal, not offline.
        eve = await n1.connect("eve")
        await eve.join_first("hall")
        await eve.close()
        eve = await n3.connect("eve")
        await eve.request({"type": "join", "room": "hall"}, "joined")

        # Everyone else goes at once, from every node; dup's second session later.
        closed_at = time.monotonic()
        await asyncio.gather(*(c.close() for c in (*people.values(), dup1)))
        offline = await wait_events(backend, 3, timeout=WAIT * 2, name="user_offline")
        assert sorted(e["user_id"] for e in offline) == ["a", "b", "c"]
        for e in offline:
            arrived = backend.delivered()[e["id"]][1].at
            assert arrived - closed_at >= 0.9, f"user_offline {arrived - closed_at:.2f} s after the close"
        await dup2.close()
        await wait_events(backend, 4, timeout=WAIT * 2, name="user_offline")
        # One room_vacated per room but the hall (eve is in it), one removal per member.
        vacated = await wait_events(backend, 3, name="room_vacated")
        assert sorted(e["room"] for e in vacated) == ["r1", "r2", "r3"]
        removed = await wait_events(backend, 13, name="member_removed")
        assert Counter((e["room"], e["user_id"]) for e in removed) == Counter(
            [(r, u) for r in rooms for u in "abc"] + [("hall", "dup")])

        # The outbox is empty (so anything eve's old session could have recorded is in):
        # nothing for eve but her one join.
        async def empty():
            await asyncio.sleep(0.3)
            return True if metric(n2, "wsgate_webhook_queue_depth") == 0 else None

        await poll(empty)
        assert brief(backend.events(user_id="eve")) == [("member_added", "hall", "eve")]
        assert len(backend.events(name="room_occupied")) == 4
        calls = backend.calls()
        assert all(c.signed and c.ok for c in calls)
        ids = [i for c in calls for i in c.ids]
        assert len(ids) == len(set(ids)), "no event twice"

    run(body)


@needs_redis
def test_a_killed_node_leaves_its_events_to_a_survivor(three_nodes, backend_factory):
    healthy = {"on": False}
    backend = backend_factory(lambda n: 200 if healthy["on"] else 503)
    nodes = three_nodes(backend, "--webhook-claim-ms", "1500", "--webhook-timeout-ms", "500",
                        "--webhook-backoff-max-ms", "1000")
    by_id = {f"n{i}": gw for i, gw in enumerate(nodes, 1)}

    async def body():
        # Six events recorded on n1 (x1..x3 join k1..k3); some node takes them and fails.
        for i in (1, 2, 3):
            c = await nodes[0].connect(f"x{i}")
            await c.join_first(f"k{i}")

        async def all_tried():
            seen = {i for c in backend.calls() for i in c.ids}
            return seen if len(seen) >= 6 else None

        ids = await poll(all_tried)
        assert len(ids) == 6
        # The node that holds the most of them dies without a word.
        holders = Counter(c.node for c in backend.calls() for _ in c.ids)
        victim = holders.most_common(1)[0][0]
        held = {i for c in backend.calls() if c.node == victim for i in c.ids}
        kill(by_id[victim])
        killed_at = time.monotonic()
        healthy["on"] = True

        async def delivered():
            got = backend.delivered()
            return got if ids <= set(got) else None

        got = await poll(delivered, timeout=WAIT * 2)
        for i in held:
            _, call = got[i]
            assert call.node != victim and call.at > killed_at, (i, call.node)
        assert sorted(brief([e for e, _ in got.values() if e["id"] in ids])) == sorted(
            [("room_occupied", f"k{i}", None) for i in (1, 2, 3)]
            + [("member_added", f"k{i}", f"x{i}") for i in (1, 2, 3)])

    run(body)


def doc_example(name: str) -> str:
    """The code block that follows ``<!-- example: NAME`` in docs/http-api.md."""
    text = (REPO / "docs" / "http-api.md").read_text()
    fence = text.index("```", text.index(f"<!-- example: {name}"))
    start = text.index("\n", fence) + 1
    return text[start:text.index("\n```", start) + 1]


def post_signed(url: str, body: bytes, secret: str = SECRET) -> int:
    ts = str(int(time.time()))
    sig = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(url, body, {"X-Wsgate-Timestamp": ts, "X-Wsgate-Signature": sig,
                                             "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("name,interpreter", [("webhooks.py", sys.executable), ("webhooks.mjs", "node")])
def test_the_documented_receivers_work(start_gateway, tmp_path, name, interpreter):
    if shutil.which(interpreter) is None:
        pytest.skip(f"{interpreter} is not installed")
    script = tmp_path / name
    script.write_text(doc_example(name))
    proc = subprocess.Popen([interpreter, str(script)], env={**os.environ, "WEBHOOK_SECRET": SECRET, "PORT": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pending = bytearray()

    def line() -> str:
        """The next line it printed (several may come in one read)."""
        deadline = time.monotonic() + WAIT
        while b"\n" not in pending:
            ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"{name} printed nothing more within {WAIT} s (so far {bytes(pending)!r})"
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"{name} exited: {proc.stderr.read()!r}"
            pending.extend(chunk)
        end = pending.index(b"\n") + 1
        out = bytes(pending[:end]).decode()
        del pending[:end]
        return out

    try:
        first = line()
        assert first.startswith("webhooks listening on "), first
        url = f"http://127.0.0.1:{int(first.rsplit(' ', 1)[1])}/webhooks"
        gw = start_gateway("--presence-grace-ms", "0", "--webhook-url", url, "--webhook-secret", SECRET)

        async def body():
            c = await gw.connect("zoe")
            await c.join_first("doc")
            await c.close()

        run(body)
        events = [json.loads(line()) for _ in range(5)]
        assert brief(events) == [("room_occupied", "doc", None), ("member_added", "doc", "zoe"),
                                 ("member_removed", "doc", "zoe"), ("room_vacated", "doc", None),
                                 ("user_offline", None, "zoe")]
        # A redelivered event is handled once; an unsigned request is refused.
        again = json.dumps({"time_ms": 1, "events": [events[0], {**events[0], "id": "x-1"}]}).encode()
        assert post_signed(url, again) in (200, 204)
        assert json.loads(line())["id"] == "x-1"
        assert post_signed(url, again, secret="another-secret-0123") == 401
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
