"""Notifications: stored per user, delivered live, listed, counted in `welcome`,
capped, expiring, and marked read across a user's sessions (embedded broker)."""

from __future__ import annotations

import time
from urllib.parse import quote

from backend_harness import (
    api,
    key_flags,
    list_notifications,
    notify,
    publish_user,
    run_backend,
)
from harness import WAIT, assert_ts, assert_uuid, poll

NOTIFICATION_KEYS = {"id", "user_id", "kind", "title", "body", "ts", "read"}


def check_notification(n: dict, user: str, title: str, **extra) -> None:
    assert set(n) == NOTIFICATION_KEYS | set(extra), n
    assert_uuid(n["id"])
    assert_ts(n["ts"])
    assert (n["user_id"], n["title"]) == (user, title), n
    for k, v in extra.items():
        assert n[k] == v, (k, n)


def test_offline_notifications_are_seen_on_connect(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        [id1] = await notify(gw, {
            "user_id": "dana", "kind": "warning", "title": "Disk", "body": "almost full",
            "action_url": "https://example.com/disk", "data": {"pct": 93},
        })
        ids = await notify(gw, {"user_ids": ["dana", "erin", "dana"], "title": "Hello", "body": ""})
        assert len(ids) == 2  # one per (distinct) user
        id2, id3 = ids
        assert len({id1, id2, id3}) == 3

        listed = await list_notifications(gw, "dana")
        assert listed["unread"] == 2
        n2, n1 = listed["items"]  # newest first
        check_notification(n1, "dana", "Disk", id=id1, kind="warning", body="almost full",
                           action_url="https://example.com/disk", data={"pct": 93}, read=False)
        check_notification(n2, "dana", "Hello", id=id2, kind="info", body="", read=False)
        erin = await list_notifications(gw, "erin")
        assert erin["unread"] == 1
        check_notification(erin["items"][0], "erin", "Hello", id=id3, kind="info", read=False)

        # Pages of the HTTP list.
        assert (await list_notifications(gw, "dana", "limit=1"))["items"] == [n2]
        assert (await list_notifications(gw, "dana", f"before={id2}"))["items"] == [n1]
        assert (await list_notifications(gw, "dana", f"before={id1}"))["items"] == []

        # Counted in the welcome of each user; zero for a user with none.
        dana = await gw.connect("dana")
        assert dana.welcome["unread_notifications"] == 2
        assert (await gw.connect("erin")).welcome["unread_notifications"] == 1
        assert (await gw.connect("frank")).welcome["unread_notifications"] == 0

        # The client's own list, with and without paging; `ref` echoed.
        got = await dana.request({"type": "notifications", "ref": "n"}, "notifications")
        assert got == {"type": "notifications", "ref": "n", "items": [n2, n1], "unread": 2, "more": False}
        got = await dana.request({"type": "notifications", "limit": 1}, "notifications")
        assert got == {"type": "notifications", "items": [n2], "unread": 2, "more": False}
        got = await dana.request({"type": "notifications", "before": id2}, "notifications")
        assert got == {"type": "notifications", "items": [n1], "unread": 2, "more": False}

        # Live while connected.
        await dana.ping()
        [id4] = await notify(gw, {"user_id": "dana", "kind": "success", "title": "Done", "body": "ok"})
        live = await dana.expect("notification")
        assert set(live) == {"type", "notification", "unread"}, live
        assert live["unread"] == 3
        check_notification(live["notification"], "dana", "Done", id=id4, kind="success", body="ok", read=False)

        # Read state: listed, filtered, counted.
        marked = await dana.request({"type": "mark_read", "ids": [id1], "ref": 9}, "marked_read")
        assert marked == {"type": "marked_read", "ref": 9, "ids": [id1], "unread": 2}
        marked = await dana.request({"type": "mark_read", "ids": [id1, "not-a-known-id"]}, "marked_read")
        assert marked == {"type": "marked_read", "ids": [], "unread": 2}
        got = await dana.request({"type": "notifications", "unread_only": True}, "notifications")
        assert got == {"type": "notifications", "items": [live["notification"], n2], "unread": 2, "more": False}
        http = await list_notifications(gw, "dana", "unread_only=true")
        assert http == {"items": [live["notification"], n2], "unread": 2, "more": False}
        http = await list_notifications(gw, "dana")
        assert http == {"items": [live["notification"], n2, {**n1, "read": True}], "unread": 2, "more": False}

    run_backend(body)


def test_user_ids_are_decoded_in_the_list_path(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        for user in ["x y/z+é", "a%b", "dot.user:1", "ünï"]:
            [nid] = await notify(gw, {"user_id": user, "title": "t", "body": ""})
            listed = await list_notifications(gw, quote(user, safe=""))
            assert [(n["id"], n["user_id"]) for n in listed["items"]] == [(nid, user)], user
            c = await gw.open("user_id=" + quote(user, safe=""))
            assert (c.welcome["user_id"], c.welcome["unread_notifications"]) == (user, 1)
        a = await api(gw, "GET", "/api/users//notifications")
        assert (a.status, a.body["error"]["code"]) == (400, "invalid_field")

    run_backend(body)


def test_notifications_are_capped(start_gateway):
    gw = start_gateway(*key_flags(), "--notifications-len", "3")

    async def body():
        ids = [(await notify(gw, {"user_id": "cap", "title": f"t{i}", "body": ""}))[0] for i in range(5)]
        listed = await list_notifications(gw, "cap")
        assert [n["id"] for n in listed["items"]] == ids[:1:-1]  # t4, t3, t2
        assert [n["title"] for n in listed["items"]] == ["t4", "t3", "t2"]
        assert listed["unread"] == 3
        c = await gw.connect("cap")
        assert c.welcome["unread_notifications"] == 3
        await c.ping()
        # A sixth, live: the unread count stays at the cap.
        [id5] = await notify(gw, {"user_id": "cap", "title": "t5", "body": ""})
        live = await c.expect("notification")
        assert (live["notification"]["id"], live["unread"]) == (id5, 3)
        got = await c.request({"type": "notifications"}, "notifications")
        assert [n["title"] for n in got["items"]] == ["t5", "t4", "t3"]
        assert got["unread"] == 3

    run_backend(body)


def test_notifications_expire(start_gateway):
    ttl = 1.0
    gw = start_gateway(*key_flags(), "--notifications-ttl", "1s")

    async def body():
        sent_at = time.monotonic()
        [nid] = await notify(gw, {"user_id": "exp", "title": "soon gone", "body": ""})
        listed = await list_notifications(gw, "exp")
        if time.monotonic() - sent_at < ttl * 0.8:  # still well within the TTL
            assert [n["id"] for n in listed["items"]] == [nid] and listed["unread"] == 1

        async def gone():
            got = await list_notifications(gw, "exp")
            return got if got["items"] == [] else None

        assert await poll(gone, timeout=WAIT + ttl) == {"items": [], "unread": 0, "more": False}
        # Never before the TTL had passed since the request was sent.
        assert time.monotonic() - sent_at >= ttl
        c = await gw.connect("exp")
        assert c.welcome["unread_notifications"] == 0
        got = await c.request({"type": "notifications"}, "notifications")
        assert got == {"type": "notifications", "items": [], "unread": 0, "more": False}
        # Marking read what expired changes nothing.
        marked = await c.request({"type": "mark_read", "all": True}, "marked_read")
        assert marked == {"type": "marked_read", "ids": [], "unread": 0}

    run_backend(body)


def test_mark_read_updates_the_other_sessions_not_the_sender(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        g1 = await gw.connect("gus")
        g2 = await gw.connect("gus")
        other = await gw.connect("hal")
        for c in (g1, g2, other):
            await c.ping()
        ids = []
        for i in range(3):
            [nid] = await notify(gw, {"user_id": "gus", "title": f"n{i}", "body": ""})
            ids.append(nid)
            for c in (g1, g2):
                f = await c.expect("notification")
                assert (f["notification"]["id"], f["unread"]) == (nid, i + 1)

        async def barrier(tag: str) -> None:
            """The next frame of every session is a user publish sent now."""
            await publish_user(gw, "gus", tag)
            for c in (g1, g2):
                f = await c.expect("publish")
                assert f["data"] == tag, f

        marked = await g1.request({"type": "mark_read", "ids": [ids[0]], "ref": "m"}, "marked_read")
        assert marked == {"type": "marked_read", "ref": "m", "ids": [ids[0]], "unread": 2}
        assert await g2.recv() == {"type": "notifications_read", "ids": [ids[0]], "unread": 2}
        await barrier("b1")  # g1 got no notifications_read, g2 only one

        marked = await g2.request({"type": "mark_read", "all": True}, "marked_read")
        assert sorted(marked["ids"]) == sorted(ids[1:]) and marked["unread"] == 0, marked
        assert set(marked) == {"type", "ids", "unread"}
        assert await g1.recv() == {"type": "notifications_read", "ids": marked["ids"], "unread": 0}
        await barrier("b2")

        # Nothing changed: no one else is told.
        marked = await g1.request({"type": "mark_read", "all": True}, "marked_read")
        assert marked == {"type": "marked_read", "ids": [], "unread": 0}
        await barrier("b3")

        # The other user heard nothing of it.
        await publish_user(gw, "hal", "only")
        assert (await other.expect("publish"))["data"] == "only"

        listed = await list_notifications(gw, "gus")
        assert [n["read"] for n in listed["items"]] == [True, True, True]
        assert (await gw.connect("gus")).welcome["unread_notifications"] == 0

    run_backend(body)


def test_mark_read_and_notifications_refusals(start_gateway):
    gw = start_gateway(*key_flags())

    async def body():
        c = await gw.connect("ivy")
        for frame in [
            {"type": "mark_read"},
            {"type": "mark_read", "ids": []},
            {"type": "mark_read", "ids": [5]},
            {"type": "mark_read", "ids": ["x"], "all": True},
            {"type": "mark_read", "all": "yes"},
            {"type": "notifications", "limit": 0},
            {"type": "notifications", "limit": 101},
            {"type": "notifications", "before": "a b"},
            {"type": "notifications", "unread_only": 1},
        ]:
            await c.error({**frame, "ref": "e"}, "invalid_field")
        # The connection carries on.
        got = await c.request({"type": "notifications", "limit": 100}, "notifications")
        assert got == {"type": "notifications", "items": [], "unread": 0, "more": False}
        a = await api(gw, "GET", "/api/users/ivy/notifications?limit=100&unread_only=1")
        assert (a.status, a.body) == (200, {"items": [], "unread": 0, "more": False})

    run_backend(body)

