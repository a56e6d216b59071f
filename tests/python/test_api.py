"""The back-end HTTP API: `POST /api/publish` (room, user, broadcast), its key
rules and its refusals, against the real binary (embedded broker)."""

from __future__ import annotations

import json

from backend_harness import (
    API_KEY,
    api,
    api_error,
    chunked_post,
    key_flags,
    list_notifications,
    notify,
    open_sse,
    publish_broadcast,
    publish_room,
    publish_user,
    raw_request,
    run_backend,
    say,
)
from harness import EPOCH_RE, assert_ts, parse_id, poll

PUBLISH_ROOM_KEYS = {"type", "id", "room", "data", "ts"}
PUBLISH_USER_KEYS = {"type", "user_id", "data", "ts"}


def test_api_key_is_required_and_checked(start_gateway):
    gw = start_gateway(*key_flags())
    keyless = start_gateway()
    insecure = start_gateway("--insecure-api")
    ok_publish = {"room": "k", "data": 1}
    ok_notify = {"user_id": "u", "title": "t", "body": "b"}

    async def body():
        routes = [
            ("POST", "/api/publish", ok_publish),
            ("POST", "/api/notifications", ok_notify),
            ("GET", "/api/users/u/notifications", None),
        ]
        for method, path, req in routes:
            # Missing, wrong (either header), wrong scheme: 401.
            await api_error(gw, method, path, req, key=None, status=401, code="unauthorized")
            await api_error(gw, method, path, req, key="wrong", status=401, code="unauthorized")
            await api_error(gw, method, path, req, key=API_KEY + "x", status=401, code="unauthorized")
            await api_error(gw, method, path, req, key=None, headers={"X-Api-Key": "wrong"},
                            status=401, code="unauthorized")
            await api_error(gw, method, path, req, key=None, headers={"Authorization": f"Basic {API_KEY}"},
                            status=401, code="unauthorized")
            # No key configured: 403, whatever key is given.
            await api_error(keyless, method, path, req, key=None, status=403, code="forbidden")
            await api_error(keyless, method, path, req, key=API_KEY, status=403, code="forbidden")
            # --insecure-api lifts the 403: no key needed.
            a = await api(insecure, method, path, req, key=None)
            assert a.status == 200, (path, a.status, a.body)

        # The right key, either way of giving it.
        a = await api(gw, "POST", "/api/publish", ok_publish)
        assert a.status == 200 and set(a.body) == {"id"}, a.body
        a = await api(gw, "POST", "/api/publish", ok_publish, key=None, headers={"X-Api-Key": API_KEY})
        assert a.status == 200 and set(a.body) == {"id"}, a.body
        a = await api(gw, "POST", "/api/notifications", ok_notify, key=None, headers={"X-Api-Key": API_KEY})
        assert a.status == 200 and len(a.body["ids"]) == 1, a.body
        a = await api(gw, "GET", "/api/users/u/notifications", key=None, headers={"X-Api-Key": API_KEY})
        assert a.status == 200 and a.body["unread"] == 1, a.body

        # Nothing the refused requests carried was stored: each gateway holds only
        # the one notification it accepted.
        assert (await list_notifications(gw, "u"))["unread"] == 1
        a = await api(insecure, "GET", "/api/users/u/notifications", key=None)
        assert a.body["unread"] == 1, a.body

    run_backend(body)


def test_publish_refusals(start_gateway):
    gw = start_gateway(*key_flags(), "--max-message-bytes", "1024")

    async def body():
        watcher = await gw.connect("watcher")
        await watcher.join_first("r")
        await watcher.ping()
        path = "/api/publish"
        for raw in [b"{nope", b"", b"[1,2]", b'"room"', b"null", b"\xff\xfe"]:
            await api_error(gw, "POST", path, content=raw, status=400, code="bad_json")
        for req in [
            {"room": "r", "data": 1, "extra": True},  # unknown field
            {"room": "r"},  # data missing
            {"data": 1},  # no target
            {"broadcast": False, "data": 1},  # no target either
            {"room": "r", "user_id": "u", "data": 1},  # two targets
            {"room": "r", "broadcast": True, "data": 1},
            {"user_id": "u", "broadcast": True, "data": 1},
            {"room": "r", "user_id": "u", "broadcast": True, "data": 1},
            {"room": "bad room", "data": 1},
            {"room": "", "data": 1},
            {"room": "x" * 129, "data": 1},
            {"room": 5, "data": 1},
            {"user_id": "", "data": 1},
            {"user_id": 7, "data": 1},
            {"broadcast": "yes", "data": 1},
        ]:
            await api_error(gw, "POST", path, req, status=400, code="invalid_field")
        # Over --max-message-bytes: 413, announced by Content-Length or not.
        big = {"room": "r", "data": "x" * 1100}
        await api_error(gw, "POST", path, big, status=413, code="too_large")

        status, err = await raw_request(gw, chunked_post(path, json.dumps(big).encode()))
        assert (status, err["error"]["code"]) == (413, "too_large"), err
        # A chunked body within the limit is read whole.
        status, ok = await raw_request(gw, chunked_post(path, json.dumps({"room": "r", "data": "c"}).encode()))
        assert status == 200 and set(ok) == {"id"}, ok
        assert (await watcher.expect("publish"))["id"] == ok["id"]
        # Just under the limit is fine.
        fits = {"room": "r", "data": "y" * 900}
        assert len(json.dumps(fits)) <= 1024
        fid = await publish_room(gw, "r", fits["data"])

        # None of the refused requests reached the room: the next frame the member
        # gets is the accepted publish.
        got = await watcher.expect("publish")
        assert got["id"] == fid and got["data"] == fits["data"], got

    run_backend(body)


def test_room_publish_is_delivered_and_stored(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        alice = await gw.connect("alice")
        joined = await alice.join_first("news")
        assert joined["last_id"] is None
        bob = await gw.connect("bob")
        await bob.join_first("news")
        assert (await alice.expect("presence"))["user"]["user_id"] == "bob"
        outsider = await gw.connect("outsider")
        await outsider.join_first("elsewhere")

        data1 = {"headline": "hi", "n": [1, 2, {"deep": None}], "ok": True,
                 "tricky": "quote\" brace} newline\n nul\u0000 é 😀 \u2028"}
        id1 = await publish_room(gw, "news", data1)
        parse_id(id1)
        p1 = await alice.expect("publish")
        assert set(p1) == PUBLISH_ROOM_KEYS, p1
        assert (p1["type"], p1["id"], p1["room"], p1["data"]) == ("publish", id1, "news", data1)
        assert_ts(p1["ts"])
        assert await bob.expect("publish") == p1

        m1 = await say(alice, "news", "between", "m1")
        assert await bob.expect("message") == m1
        id2 = await publish_room(gw, "news", "a plain string")
        p2 = await alice.expect("publish")
        assert await bob.expect("publish") == p2
        assert (p2["id"], p2["data"]) == (id2, "a plain string")
        assert parse_id(id1) < parse_id(m1["id"]) < parse_id(id2)

        # Stored: history lists the published frames as they were delivered.
        hist = await alice.request({"type": "history", "room": "news", "ref": "h"}, "history")
        assert hist == {"type": "history", "ref": "h", "room": "news", "messages": [p1, m1, p2], "more": False}

        # Recoverable: a fresh session that saw only p1 gets exactly m1 and p2.
        carol = await gw.connect("carol")
        await carol.send({"type": "join", "room": "news", "since": id1, "epoch": joined["epoch"], "ref": "j"})
        replayed, j = await carol.recv_until("joined")
        assert replayed == [m1, p2]
        assert (j["recovered"], j["last_id"], j["ref"]) == (True, id2, "j")
        assert EPOCH_RE.match(j["epoch"])

        # The member of another room got none of it: its next frame is what we
        # publish there now.
        id3 = await publish_room(gw, "elsewhere", 3)
        assert (await outsider.expect("publish"))["id"] == id3

    run_backend(body)


def test_user_publish_reaches_every_session_of_the_user(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        bob1 = await gw.connect("bob")
        bob2 = await gw.connect("bob")
        alice = await gw.connect("alice")
        for c in (bob1, bob2, alice):
            await c.ping()  # the session is past its set-up (user channel subscribed)
        await bob1.join_first("room")

        data = {"invoice": 42}
        await publish_user(gw, "bob", data)
        frames = [await bob1.expect("publish"), await bob2.expect("publish")]
        assert frames[0] == frames[1]
        assert set(frames[0]) == PUBLISH_USER_KEYS, frames[0]
        assert (frames[0]["user_id"], frames[0]["data"]) == ("bob", data)
        assert_ts(frames[0]["ts"])

        # A user with no session: accepted, goes nowhere.
        await publish_user(gw, "nobody", "x")

        # Exactly once each, and alice got nothing: the next frame of everyone is
        # the broadcast sent afterwards (one ordered fan-out).
        await publish_broadcast(gw, "after")
        for c in (bob1, bob2, alice):
            assert (await c.expect("broadcast"))["data"] == "after"

        # Not stored: the room bob1 is in has no history from it.
        hist = await bob1.request({"type": "history", "room": "room"}, "history")
        assert hist["messages"] == []

    run_backend(body)


def test_broadcast_reaches_every_connection(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        clients = [await gw.connect(u) for u in ("a", "b", "c")]
        clients.append(await gw.connect("a"))  # a second session of a
        await clients[0].join_first("r1")
        await clients[1].join_first("r2")
        for c in clients:
            await c.ping()
        sse, _ = await open_sse(gw, "rooms=r1&user_id=s")

        await publish_broadcast(gw, {"motd": "maintenance at 5"})
        first = None
        for c in clients:
            f = await c.expect("broadcast")
            assert set(f) == {"type", "data", "ts"}, f
            assert f["data"] == {"motd": "maintenance at 5"}
            assert_ts(f["ts"])
            first = first or f
            assert f == first
        ev = await sse.next_event()
        assert (ev.event, ev.data) == ("broadcast", first)
        # Not stored in any room.
        hist = await clients[0].request({"type": "history", "room": "r1"}, "history")
        assert hist["messages"] == []

        # Exactly once: the next thing everyone gets is the second broadcast.
        await publish_broadcast(gw, 2)
        for c in clients:
            assert (await c.expect("broadcast"))["data"] == 2
        ev = await sse.next_event()
        assert (ev.event, ev.data["data"]) == ("broadcast", 2)

    run_backend(body)


def test_notification_refusals(start_gateway):
    gw = start_gateway(*key_flags(), "--max-message-bytes", "65536")

    async def body():
        path = "/api/notifications"
        base = {"title": "t", "body": "b"}
        for raw in [b"{", b"", b"[]", b"3"]:
            await api_error(gw, "POST", path, content=raw, status=400, code="bad_json")
        for req in [
            {**base},  # no user
            {**base, "user_id": "u", "user_ids": ["v"]},  # both
            {**base, "user_ids": []},
            {**base, "user_ids": [f"u{i}" for i in range(1001)]},
            {**base, "user_ids": ["ok", 5]},
            {**base, "user_ids": "u"},
            {**base, "user_id": ""},
            {**base, "user_id": "u", "extra": 1},  # unknown field
            {"user_id": "u", "body": "b"},  # no title
            {"user_id": "u", "title": "", "body": "b"},
            {"user_id": "u", "title": "x" * 257, "body": "b"},
            {"user_id": "u", "title": "t"},  # no body
            {"user_id": "u", "title": "t", "body": 3},
            {**base, "user_id": "u", "kind": "fatal"},
            {**base, "user_id": "u", "kind": 1},
            {**base, "user_id": "u", "action_url": ""},
            {**base, "user_id": "u", "action_url": 5},
        ]:
            await api_error(gw, "POST", path, req, status=400, code="invalid_field")
        await api_error(gw, "POST", path, {**base, "user_id": "u", "data": "z" * 70000},
                        status=413, code="too_large")
        # Nothing was stored for any of them.
        for u in ("u", "v", "ok", "u0"):
            assert await list_notifications(gw, u) == {"items": [], "unread": 0, "more": False}

        # Exactly 1000 users is allowed: one id per user, in order.
        users = [f"u{i}" for i in range(1000)]
        ids = await notify(gw, {**base, "user_ids": users})
        assert len(ids) == 1000 and len(set(ids)) == 1000
        for i in (0, 999):
            got = await list_notifications(gw, users[i])
            assert [n["id"] for n in got["items"]] == [ids[i]]
            assert got["items"][0]["user_id"] == users[i]

        # The list endpoint's own refusals.
        for q in ["limit=0", "limit=101", "limit=x", "unread_only=maybe", "before=bad%20id"]:
            await api_error(gw, "GET", f"/api/users/u/notifications?{q}", status=400, code="invalid_field")

    run_backend(body)


def test_idempotent_publish_on_the_embedded_broker(start_gateway):
    """One node, no Redis: a retried key is answered the first id, stores and sends
    nothing; the key is remembered for `--idempotency-ttl` only."""
    gw = start_gateway(*key_flags(), "--idempotency-ttl", "1s")

    async def body():
        alice = await gw.connect("alice")
        await alice.join_first("orders")
        req = {"room": "orders", "data": "first", "idempotency_key": "o-1"}
        first = await api(gw, "POST", "/api/publish", req)
        retry = await api(gw, "POST", "/api/publish", {**req, "data": "retry"})
        assert retry.body == {"id": first.body["id"], "replayed": True}, retry.body
        assert (await alice.expect("publish"))["data"] == "first"
        # The same key for another room is another publish.
        elsewhere = await api(gw, "POST", "/api/publish", {**req, "room": "elsewhere"})
        assert elsewhere.status == 200 and set(elsewhere.body) == {"id"}, elsewhere.body

        async def forgotten():
            # Retries publish nothing; once the key's lifetime (1 s) is over, one does.
            a = await api(gw, "POST", "/api/publish", {**req, "data": "later"})
            assert a.status == 200, a.body
            return a if "replayed" not in a.body else None

        later = await poll(forgotten, timeout=10)
        assert parse_id(later.body["id"]) > parse_id(first.body["id"])
        assert (await alice.expect("publish"))["data"] == "later"
        hist = await alice.request({"type": "history", "room": "orders"}, "history")
        assert [m["data"] for m in hist["messages"]] == ["first", "later"]

    run_backend(body)
