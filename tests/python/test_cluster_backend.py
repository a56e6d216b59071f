"""The back-end features in cluster mode: a redis-server started for the test and
three gateways sharing it. Publishes, user publishes, notifications and state
restore cross nodes; an SSE stream whose node is killed resumes on another node."""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Callable

import pytest

from backend_harness import (
    api,
    api_error,
    check_resume_under_traffic,
    RedisServer,
    key_flags,
    kill,
    list_notifications,
    notify,
    open_sse,
    publish_broadcast,
    publish_room,
    publish_user,
    run_backend,
    say,
)
from harness import Gateway, poll

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture
def cluster(redis: RedisServer, start_gateway: Callable[..., Gateway]) -> list[Gateway]:
    """Three ready gateways (n1, n2, n3) on one Redis. The gateways are stopped
    before Redis (fixture teardown runs in reverse)."""
    nodes = [start_gateway("--redis-url", redis.url, "--node-id", f"n{i}", *key_flags()) for i in (1, 2, 3)]

    async def ready():
        for gw in nodes:
            # Ready: its Redis pub/sub connection is up (and its channels subscribed).
            async def up(gw=gw):
                status, _, body = await asyncio.to_thread(gw.http, "GET", "/readyz")
                return True if status == 200 and json.loads(body)["broker"] == "redis" else None

            await poll(up)

    run_backend(ready)
    return nodes


def test_room_publish_reaches_members_on_every_node(cluster):
    n1, n2, n3 = cluster

    async def body():
        alice = await n2.connect("alice")
        assert alice.welcome["node_id"] == "n2"
        ja = await alice.join_first("news")
        bob = await n3.connect("bob")
        await bob.join_first("news")
        assert (await alice.expect("presence"))["user"] == bob.user
        carol = await n1.connect("carol")
        await carol.ping()

        data = {"via": "n1", "tricky": "quote\" brace} newline\n nul\u0000 é 😀 \u2028", "n": [1.5, None]}
        pid = await publish_room(n1, "news", data)
        pa, pb = await alice.expect("publish"), await bob.expect("publish")
        assert pa == pb
        assert (pa["id"], pa["room"], pa["data"]) == (pid, "news", data)

        # Stored once, under that id: history through any node, replay with since.
        m = await say(bob, "news", "after the publish", "m")
        assert await alice.expect("message") == m
        for c in (alice, bob):
            hist = await c.request({"type": "history", "room": "news"}, "history")
            assert hist["messages"] == [pa, m]
        dave = await n1.connect("dave")
        await dave.send({"type": "join", "room": "news", "since": "0-0", "epoch": ja["epoch"]})
        replayed, joined = await dave.recv_until("joined")
        assert replayed == [pa, m] and joined["recovered"] is True and joined["last_id"] == m["id"]

        # A broadcast through n2 reaches every connection on every node, once.
        await publish_broadcast(n2, "to all")
        for c in (alice, bob, carol, dave):
            f = await c.recv_until("broadcast")
            assert f[1]["data"] == "to all", f
            # Only presence of dave joining may come before it, on the members.
            assert all(x["type"] == "presence" for x in f[0]), f

        # State restore across nodes: alice leaves from n2, comes back on n3.
        await alice.close()
        for c in (bob, dave):
            left = await c.expect("presence")
            assert (left["event"], left["user"]["user_id"]) == ("leave", "alice")
        back = await n3.connect("alice")
        assert back.welcome["restore"] == {"rooms": [{"room": "news", "last_id": m["id"], "epoch": ja["epoch"]}]}

    run_backend(body)


def test_user_publish_reaches_sessions_on_two_nodes(cluster):
    n1, n2, n3 = cluster

    async def body():
        bob2 = await n2.connect("bob")
        bob3 = await n3.connect("bob")
        carl = await n1.connect("carl")
        for c in (bob2, bob3, carl):
            await c.ping()
        await publish_user(n1, "bob", {"n": 1})
        f2, f3 = await bob2.expect("publish"), await bob3.expect("publish")
        assert f2 == f3 and (f2["user_id"], f2["data"]) == ("bob", {"n": 1})
        assert set(f2) == {"type", "user_id", "data", "ts"}
        # Once each, and nothing for carl: everyone's next frame is the next publish
        # (one ordered pub/sub connection per node).
        await publish_user(n1, "bob", {"n": 2})
        await publish_user(n1, "carl", "c")
        for c in (bob2, bob3):
            assert (await c.expect("publish"))["data"] == {"n": 2}
        assert (await carl.expect("publish"))["data"] == "c"

    run_backend(body)


def test_offline_notifications_are_seen_on_another_node(cluster):
    n1, n2, n3 = cluster

    async def body():
        [i1] = await notify(n1, {"user_id": "olga", "title": "first", "body": "b", "kind": "error"})
        [i2] = await notify(n1, {"user_ids": ["olga"], "title": "second", "body": "b", "data": [1]})
        o2 = await n2.connect("olga")
        assert o2.welcome["unread_notifications"] == 2
        got = await o2.request({"type": "notifications"}, "notifications")
        assert [n["id"] for n in got["items"]] == [i2, i1] and got["unread"] == 2
        assert [(n["title"], n["kind"], n.get("data")) for n in got["items"]] == [
            ("second", "info", [1]), ("first", "error", None)]
        assert await list_notifications(n3, "olga") == {"items": got["items"], "unread": 2, "more": False}

        # Live to every session on any node; mark_read told to the other node's session only.
        o3 = await n3.connect("olga")
        assert o3.welcome["unread_notifications"] == 2
        for c in (o2, o3):
            await c.ping()
        [i3] = await notify(n1, {"user_id": "olga", "title": "third", "body": "b"})
        for c in (o2, o3):
            f = await c.expect("notification")
            assert (f["notification"]["id"], f["unread"]) == (i3, 3)
        marked = await o2.request({"type": "mark_read", "ids": [i1, i3]}, "marked_read")
        assert sorted(marked["ids"]) == sorted([i1, i3]) and marked["unread"] == 1
        assert await o3.recv() == {"type": "notifications_read", "ids": marked["ids"], "unread": 1}
        await publish_user(n1, "olga", "barrier")
        for c in (o2, o3):
            assert (await c.expect("publish"))["data"] == "barrier"
        assert (await list_notifications(n1, "olga"))["unread"] == 1

    run_backend(body)


def test_sse_resumes_on_another_node_after_a_kill(cluster):
    n1, n2, n3 = cluster

    async def body():
        sse, start = await open_sse(n1, "rooms=a,b&user_id=s")
        assert start == {"a": "0-0", "b": "0-0"}
        sent: dict[str, list[str]] = {"a": [], "b": []}

        async def round_(via: Gateway, tag: str) -> None:
            for room in ("a", "b"):
                sent[room].append(await publish_room(via, room, f"{tag}-{room}"))

        await round_(n3, "1")
        await round_(n3, "2")
        seen = await sse.events(3)  # a1, b1, a2; b2 was sent but is not read
        assert [e.data["id"] for e in seen] == [sent["a"][0], sent["b"][0], sent["a"][1]]
        last = seen[-1].id
        assert seen[-1].ids == f"a={sent['a'][1]};b={sent['b'][0]}"

        kill(n1)
        await round_(n2, "3")

        back, resumed = await open_sse(n2, "rooms=a,b&user_id=s", {"Last-Event-ID": last})
        assert resumed == {"a": sent["a"][1], "b": sent["b"][0]}
        got = await back.events(3)
        assert [(e.event, e.data["room"], e.data["id"], e.data["data"]) for e in got] == [
            ("publish", "a", sent["a"][2], "3-a"),
            ("publish", "b", sent["b"][1], "2-b"),
            ("publish", "b", sent["b"][2], "3-b"),
        ]
        assert got[-1].ids == f"a={sent['a'][2]};b={sent['b'][2]}"
        # Then live, nothing twice.
        await round_(n3, "4")
        live = await back.events(2)
        assert [e.data["id"] for e in live] == [sent["a"][3], sent["b"][3]]

    run_backend(body)


def test_sse_resume_across_nodes_under_live_traffic(cluster):
    n1, n2, n3 = cluster
    # Read on n2, publish through n3: every event crosses Redis.
    run_backend(lambda: check_resume_under_traffic(n2, n3))


def test_graceful_drain_keeps_restore_state_and_sse_cursor(cluster):
    """A node shut down with SIGTERM closes its sessions with 1001 and saves their
    state before it exits: the user's welcome on another node restores its rooms,
    and an SSE stream of the drained node resumes elsewhere exactly."""
    n1, n2, n3 = cluster

    async def body():
        w = await n3.connect("w")
        await w.join_first("d1")
        await w.join_first("d2")
        una = await n1.connect("una")
        e1 = (await una.join_first("d1"))["epoch"]
        e2 = (await una.join_first("d2"))["epoch"]
        sse, _ = await open_sse(n1, "rooms=d1,d2&user_id=una-feed")
        for _ in range(2):
            assert (await w.expect("presence"))["user"] == una.user
        m1 = await say(w, "d1", "one", 1)
        m2 = await say(w, "d2", "two", 2)
        assert await una.expect("message") == m1
        assert await una.expect("message") == m2
        events = await sse.events(2)
        assert [e.data for e in events] == [m1, m2]

        n1.terminate()
        assert await una.closed() == 1001
        assert await asyncio.to_thread(n1.wait_exit) == 0
        left = await w.recv_n(2)
        assert sorted((f["type"], f["room"], f["event"], f["user"]["user_id"]) for f in left) == [
            ("presence", "d1", "leave", "una"), ("presence", "d2", "leave", "una")]
        m3 = await say(w, "d1", "three", 3)

        back = await n2.connect("una")
        assert back.welcome["restore"] == {"rooms": [
            {"room": "d1", "last_id": m1["id"], "epoch": e1},
            {"room": "d2", "last_id": m2["id"], "epoch": e2},
        ]}
        again, _ = await open_sse(n2, "rooms=d1,d2&user_id=una-feed", {"Last-Event-ID": events[-1].id})
        [e] = await again.events(1)
        assert e.data == m3

    run_backend(body)


def test_api_answers_503_while_redis_is_down(redis, start_gateway):
    gw = start_gateway("--redis-url", redis.url, *key_flags())

    async def readyz():
        status, _, _ = await asyncio.to_thread(gw.http, "GET", "/readyz")
        return status

    async def body():
        await poll(lambda: _is(readyz(), 200))
        m = await gw.connect("m")
        await m.join_first("r")
        await m.ping()

        redis.stop()
        refused = [
            ("POST", "/api/publish", {"room": "r", "data": "lost"}),
            ("POST", "/api/publish", {"user_id": "m", "data": "lost"}),
            ("POST", "/api/publish", {"broadcast": True, "data": "lost"}),
            ("POST", "/api/notifications", {"user_id": "m", "title": "lost", "body": ""}),
            ("GET", "/api/users/m/notifications", None),
        ]
        for method, path, req in refused:
            await api_error(gw, method, path, req, status=503, code="unavailable")

        redis.start()
        await poll(lambda: _is(readyz(), 200))
        # Redis came back empty (no persistence): the node cannot refill the room's
        # gap and says so before anything live.
        resync = await m.expect("resync")
        assert resync["room"] == "r" and resync["last_id"] is None, resync
        pid = await publish_room(gw, "r", "after")
        # Nothing refused was sent: the member's next frame is the accepted publish.
        f = await m.expect("publish")
        assert (f["id"], f["data"]) == (pid, "after")
        assert await list_notifications(gw, "m") == {"items": [], "unread": 0, "more": False}

    run_backend(body)


async def _is(awaitable, value):
    return True if await awaitable == value else None


def test_idempotent_publish_happens_once_whichever_node_the_retry_reaches(cluster):
    """A back end retrying a publish with the same `idempotency_key` through another
    node gets the first answer (with "replayed": true) and nothing is stored or sent
    twice; a new key publishes; user and broadcast targets likewise; a bad key is
    refused."""
    n1, n2, n3 = cluster

    async def body():
        alice = await n3.connect("alice")
        await alice.join_first("orders")
        first = await api(n1, "POST", "/api/publish", {"room": "orders", "data": 1, "idempotency_key": "o-1"})
        assert (first.status, set(first.body)) == (200, {"id"}), first.body
        for gw in (n2, n3, n1):
            retry = await api(gw, "POST", "/api/publish", {"room": "orders", "data": 2, "idempotency_key": "o-1"})
            assert (retry.status, retry.body) == (200, {"id": first.body["id"], "replayed": True}), retry.body
        other = await api(n2, "POST", "/api/publish", {"room": "orders", "data": 3, "idempotency_key": "o-2"})
        assert other.status == 200 and "replayed" not in other.body
        got = [await alice.expect("publish") for _ in range(2)]
        assert [(p["id"], p["data"]) for p in got] == [(first.body["id"], 1), (other.body["id"], 3)]
        hist = await alice.request({"type": "history", "room": "orders"}, "history")
        assert [m["data"] for m in hist["messages"]] == [1, 3], "the retries stored nothing"

        for target in ({"user_id": "alice"}, {"broadcast": True}):
            key = f"k-{list(target)[0]}"
            a = await api(n1, "POST", "/api/publish", {**target, "data": "once", "idempotency_key": key})
            b = await api(n2, "POST", "/api/publish", {**target, "data": "twice", "idempotency_key": key})
            assert (a.status, a.body, b.status, b.body) == (200, {}, 200, {"replayed": True})
            f = await alice.expect("broadcast" if "broadcast" in target else "publish")
            assert f["data"] == "once"
        # Anything sent twice would have been published before this barrier (one Redis,
        # one Pub/Sub connection per node): the barrier must be the very next frame.
        await publish_user(n3, "alice", "barrier")
        assert (await alice.expect("publish"))["data"] == "barrier"

        for bad in ("", 5, "x" * 257, "tab\there"):
            await api_error(n1, "POST", "/api/publish", {"room": "orders", "data": 0, "idempotency_key": bad},
                            status=400, code="invalid_field")

    run_backend(body)
