"""Server-Sent Events, `GET /events`, read with httpx: named events, cursors,
exact resume with `Last-Event-ID`, `reset`, refusals, origins (embedded broker)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from websockets.exceptions import InvalidStatus

from backend_harness import (
    api,
    check_resume_under_traffic,
    key_flags,
    notify,
    open_sse,
    publish_broadcast,
    publish_room,
    publish_user,
    run_backend,
    say,
    sse_refused,
    SseStream,
)
from harness import Client, now, token

ZERO = "0-0"


def cursor(**rooms: str) -> str:
    return ";".join(f"{r}={i}" for r, i in rooms.items())


def test_named_events_and_cursors(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        w = await gw.connect("w")
        await w.join_first("a")
        await w.join_first("b")
        sse, start = await open_sse(gw, "rooms=a,b&user_id=sam&username=Sam")
        assert start == {"a": ZERO, "b": ZERO}

        m1 = await say(w, "a", "hello a", "m1")
        pid = await publish_room(gw, "b", {"x": 1})
        p1 = await w.expect("publish")
        assert p1["id"] == pid
        await publish_broadcast(gw, "all")
        bc = await w.expect("broadcast")
        [nid] = await notify(gw, {"user_id": "sam", "title": "hi", "body": "there"})
        await publish_user(gw, "sam", {"for": "sam"})
        # Frames SSE does not carry: typing, presence (a user joining a), errors.
        await w.send({"type": "typing", "room": "a", "is_typing": True})
        assert (await w.expect("typing"))["users"] == [w.user]
        other = await gw.connect("o")
        await other.join_first("a")
        assert (await w.expect("presence"))["user"] == other.user
        m2 = await say(w, "a", "last", "m2")

        events = await sse.events(6)
        assert [(e.event, e.ids) for e in events] == [
            ("message", cursor(a=m1["id"], b=ZERO)),
            ("publish", cursor(a=m1["id"], b=pid)),
            ("broadcast", cursor(a=m1["id"], b=pid)),
            ("notification", cursor(a=m1["id"], b=pid)),
            ("publish", cursor(a=m1["id"], b=pid)),
            ("message", cursor(a=m2["id"], b=pid)),
        ]
        # The data is the very frame a WebSocket gets.
        assert events[0].data == m1
        assert events[1].data == p1
        assert events[2].data == bc
        n = events[3].data
        assert set(n) == {"type", "notification", "unread"} and n["unread"] == 1, n
        assert (n["notification"]["id"], n["notification"]["user_id"]) == (nid, "sam")
        u = events[4].data
        assert set(u) == {"type", "user_id", "data", "ts"}, u
        assert (u["user_id"], u["data"]) == ("sam", {"for": "sam"})
        assert events[5].data == m2

    run_backend(body)


async def publish_round(gw, tag: str, rooms=("a", "b")) -> dict[str, str]:
    """One API publish per room; room → id."""
    return {r: await publish_room(gw, r, f"{tag}-{r}") for r in rooms}


def test_resume_gets_exactly_what_was_missed(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        sse, start = await open_sse(gw, "rooms=a,b,c&user_id=s")
        assert start == {"a": ZERO, "b": ZERO, "c": ZERO}
        r1 = await publish_round(gw, "1")
        r2 = await publish_round(gw, "2")
        seen = await sse.events(3)  # a1, b1, a2: b2 is published but not read
        assert [e.data["id"] for e in seen] == [r1["a"], r1["b"], r2["a"]]
        last = seen[-1].id
        assert seen[-1].ids == cursor(a=r2["a"], b=r1["b"], c=ZERO)
        await sse.close()
        await gw.wait_active(0)

        r3 = await publish_round(gw, "3")
        c1 = await publish_room(gw, "c", "c1")

        # Resume: per room, exactly the events after the cursor, room by room.
        back, resumed = await open_sse(gw, "rooms=a,b,c&user_id=s", {"Last-Event-ID": last})
        assert resumed == {"a": r2["a"], "b": r1["b"], "c": ZERO}
        got = await back.events(4)
        assert [(e.event, e.data["room"], e.data["id"]) for e in got] == [
            ("publish", "a", r3["a"]),
            ("publish", "b", r2["b"]),
            ("publish", "b", r3["b"]),
            ("publish", "c", c1),
        ]
        assert [e.ids for e in got] == [
            cursor(a=r3["a"], b=r1["b"], c=ZERO),
            cursor(a=r3["a"], b=r2["b"], c=ZERO),
            cursor(a=r3["a"], b=r3["b"], c=ZERO),
            cursor(a=r3["a"], b=r3["b"], c=c1),
        ]
        assert [e.data["data"] for e in got] == ["3-a", "2-b", "3-b", "c1"]
        # Then live, with no duplicate: the next events are the ones published now.
        r4 = await publish_round(gw, "4", rooms=("a", "b", "c"))
        live = await back.events(3)
        assert [e.data["id"] for e in live] == [r4["a"], r4["b"], r4["c"]]
        assert live[-1].ids == cursor(a=r4["a"], b=r4["b"], c=r4["c"])

        # The same with ?last_event_id= from the very first cursor: everything.
        again, _ = await open_sse(gw, "rooms=a,b,c&user_id=s&last_event_id=" + quote(cursor(a=ZERO, b=ZERO, c=ZERO)))
        every = await again.events(2 * 4 + 2)
        assert [e.data["id"] for e in every] == [
            r1["a"], r2["a"], r3["a"], r4["a"],
            r1["b"], r2["b"], r3["b"], r4["b"],
            c1, r4["c"],
        ]
        # A cursor naming only some rooms: the others start live.
        part, pstart = await open_sse(gw, "rooms=a,b&user_id=s", {"Last-Event-ID": cursor(b=r3["b"])})
        assert pstart == {"a": r4["a"], "b": r3["b"]}
        [e] = await part.events(1)
        assert e.data["id"] == r4["b"]
        r5 = await publish_round(gw, "5", rooms=("a",))
        [e] = await part.events(1)
        assert e.data["id"] == r5["a"]
        assert e.ids == cursor(a=r5["a"], b=r4["b"])

    run_backend(body)


def test_resume_is_exact_under_live_traffic(start_gateway):
    """Events published while the resumed stream sets up and replays are neither
    lost nor duplicated."""
    gw = start_gateway(*key_flags())
    run_backend(lambda: check_resume_under_traffic(gw, gw))


def test_reset_when_history_no_longer_reaches(start_gateway):
    gw = start_gateway(*key_flags(), "--history-len", "5")
    fresh = start_gateway(*key_flags())

    async def body():
        sse, _ = await open_sse(gw, "rooms=a,b&user_id=s")
        a_ids = [await publish_room(gw, "a", 1)]
        [e] = await sse.events(1)
        last = e.id
        assert e.ids == cursor(a=a_ids[0], b=ZERO)
        await sse.close()
        a_ids += [await publish_room(gw, "a", i) for i in range(2, 10)]  # 9 in all: 5 kept
        b_id = await publish_room(gw, "b", "b1")

        back, resumed = await open_sse(gw, "rooms=a,b&user_id=s", {"Last-Event-ID": last})
        assert resumed == {"a": ZERO, "b": ZERO}
        reset = await back.next_event()
        assert (reset.event, reset.data, reset.ids) == ("reset", {"type": "reset", "room": "a"}, cursor(a=ZERO, b=ZERO))
        got = await back.events(6)
        assert [(e.event, e.data["id"]) for e in got] == [("publish", i) for i in a_ids[4:]] + [("publish", b_id)]
        assert got[-1].ids == cursor(a=a_ids[-1], b=b_id)
        # Live afterwards, nothing twice.
        nxt = await publish_room(gw, "a", "next")
        [e] = await back.events(1)
        assert e.data["id"] == nxt

        # A cursor that history still reaches: no reset.
        ok, _ = await open_sse(gw, "rooms=a&user_id=s", {"Last-Event-ID": cursor(a=a_ids[6])})
        got = await ok.events(3)
        assert [(e.event, e.data["id"]) for e in got] == [("publish", a_ids[7]), ("publish", a_ids[8]), ("publish", nxt)]

        # A cursor from another life of the broker (ahead of anything stored here):
        # history cannot vouch for it, so reset first.
        ahead = cursor(a="99999999999999-0")
        f, fstart = await open_sse(fresh, "rooms=a&user_id=s", {"Last-Event-ID": ahead})
        assert fstart == {"a": ZERO}
        reset = await f.next_event()
        assert (reset.event, reset.data) == ("reset", {"type": "reset", "room": "a"})
        fid = await publish_room(fresh, "a", "new life")
        [e] = await f.events(1)
        assert (e.event, e.data["id"], e.ids) == ("publish", fid, cursor(a=fid))

    run_backend(body)


def test_refusals(start_gateway):
    gw = start_gateway("--max-rooms-per-connection", "2")

    async def body():
        for q in ["", "rooms=", "rooms=a%20b", "rooms=a,b%20c", "rooms=a,b,c", "rooms=" + "x" * 129,
                  "rooms=a&user_id=" + "u" * 129]:
            await sse_refused(gw, q, 400, "invalid_field")
        # Development mode grants no private room.
        await sse_refused(gw, "rooms=a,private:x&user_id=u", 403, "forbidden")
        s, start = await open_sse(gw, "rooms=a,a,b&user_id=u")  # duplicates count once
        assert start == {"a": ZERO, "b": ZERO}

    run_backend(body)


def test_token_identity_and_private_rooms(start_gateway):
    secret = "a-test-secret-that-is-long-enough-0123"
    gw = start_gateway("--jwt-secret", secret, *key_flags())

    async def body():
        good = token(secret, sub="pat", exp=now() + 60, rooms=["private:team"])
        await sse_refused(gw, "rooms=a", 401, "unauthorized")
        await sse_refused(gw, "rooms=a&token=garbage", 401, "unauthorized")
        expired = token(secret, sub="pat", exp=now() - 60)
        await sse_refused(gw, f"rooms=a&token={expired}", 401, "unauthorized")
        await sse_refused(gw, f"rooms=a,private:other&token={good}", 403, "forbidden")
        s, start = await open_sse(gw, f"rooms=private:team&token={good}")
        assert start == {"private:team": ZERO}
        pid = await publish_room(gw, "private:team", "secret stuff")
        [e] = await s.events(1)
        assert (e.event, e.data["id"]) == ("publish", pid)
        # The bearer header works too; user-targeted events reach the token's user.
        h, _ = await open_sse(gw, "rooms=a", {"Authorization": f"Bearer {good}"})
        await publish_user(gw, "pat", "for pat")
        for stream in (s, h):
            [e] = await stream.events(1)
            assert (e.event, e.data["user_id"], e.data["data"]) == ("publish", "pat", "for pat")

    run_backend(body)


def test_origins(start_gateway):
    gw = start_gateway("--allowed-origins", "https://good.example,https://also.example")

    async def body():
        await sse_refused(gw, "rooms=a&user_id=u", 403, "forbidden", {"Origin": "https://evil.example"})
        s, _ = await open_sse(gw, "rooms=a&user_id=u", {"Origin": "https://also.example"})
        assert s.headers["access-control-allow-origin"] == "https://also.example"
        # Not from a browser (no Origin): allowed, no CORS header.
        n, _ = await open_sse(gw, "rooms=a&user_id=u")
        assert "access-control-allow-origin" not in n.headers
        # The CORS preflight of /events echoes an allowed origin only.
        for origin, allowed in [("https://good.example", True), ("https://evil.example", False)]:
            a = await api(gw, "OPTIONS", "/events", key=None, headers={
                "Origin": origin, "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id"})
            assert a.status == 204, a.status
            assert a.headers.get("access-control-allow-origin") == (origin if allowed else None), a.headers
            if allowed:
                assert "last-event-id" in a.headers["access-control-allow-headers"].lower()

        with pytest.raises(InvalidStatus) as ei:
            await Client.open(gw.url("user_id=u"), origin="https://evil.example")
        assert ei.value.response.status_code == 403
        ok = await gw.open("user_id=u", origin="https://good.example")
        assert ok.welcome["user_id"] == "u"

    run_backend(body)


def test_sse_streams_count_towards_max_connections(start_gateway):
    gw = start_gateway("--max-connections", "1")

    async def body():
        s, _ = await open_sse(gw, "rooms=a&user_id=u")
        refused = await SseStream.open(gw, "rooms=a&user_id=v")
        assert refused.status == 503 and "retry-after" in refused.headers, refused.headers
        assert (await refused.refused())["error"]["code"] == "unavailable"
        with pytest.raises(InvalidStatus) as ei:
            await Client.open(gw.url("user_id=w"))
        assert ei.value.response.status_code == 503
        await s.close()
        await gw.wait_active(0)
        # The slot is free again, for either kind.
        ws = await gw.connect("w")
        await ws.close()
        await gw.wait_active(0)
        s2, _ = await open_sse(gw, "rooms=a&user_id=u")

    run_backend(body)
