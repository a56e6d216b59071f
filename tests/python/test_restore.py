"""State restore: after a user's last session closes, the user's next `welcome`
carries the rooms it was in, with the last id delivered in each and the epoch
(embedded broker)."""

from __future__ import annotations

import time

from backend_harness import key_flags, publish_room, run_backend, say
from harness import Gateway, poll

WELCOME_KEYS = {"type", "protocol", "session_id", "node_id", "user_id", "username",
                "heartbeat_ms", "unread_notifications"}


def by_room(restore: dict) -> dict[str, dict]:
    assert set(restore) == {"rooms"}, restore
    rooms = restore["rooms"]
    assert all(set(r) == {"room", "last_id", "epoch"} for r in rooms), rooms
    out = {r["room"]: r for r in rooms}
    assert len(out) == len(rooms), rooms
    return out


async def rejoin(c, room: str, since: str | None, epoch: str) -> tuple[list[dict], dict]:
    frame = {"type": "join", "room": room, "epoch": epoch, "ref": room}
    if since is not None:
        frame["since"] = since
    await c.send(frame)
    replayed, joined = await c.recv_until("joined")
    presence = await c.expect("presence")
    assert (presence["room"], presence["event"], presence["user"]) == (room, "join", c.user)
    return replayed, joined


def test_welcome_restores_rooms_and_last_ids(start_gateway):
    gw: Gateway = start_gateway(*key_flags())

    async def body():
        w = await gw.connect("w")
        for room in ("r1", "r2", "r3"):
            await w.join_first(room)
        seed = await say(w, "r3", "before rita", "s")  # r3 has history rita will not see more of

        rita = await gw.connect("rita")
        assert "restore" not in rita.welcome  # nothing saved yet
        epochs = {}
        for room in ("r1", "r2", "r3", "r4", "empty"):
            joined = await rita.join_first(room)
            epochs[room] = joined["epoch"]
        assert joined["last_id"] is None  # "empty"
        for room in ("r1", "r2", "r3"):
            assert (await w.expect("presence"))["user"] == rita.user
        await rita.request({"type": "leave", "room": "r4"}, "left")

        m1 = await say(w, "r1", "one", 1)
        m2 = await say(w, "r1", "two", 2)
        p1 = await publish_room(gw, "r2", {"kind": "api"})
        for expected in (m1, m2):
            assert await rita.expect("message") == expected
        assert (await rita.expect("publish"))["id"] == p1
        await w.expect("publish")

        await rita.close()
        # Its clean-up (which saves the state first) is over when the others see
        # it leave every room.
        for _ in ("r1", "r2", "r3"):
            left = await w.expect("presence")
            assert (left["event"], left["user"]["user_id"]) == ("leave", "rita")

        # Missed while away.
        m3 = await say(w, "r1", "three", 3)
        p2 = await publish_room(gw, "r2", "missed")
        await w.expect("publish")

        back = await gw.connect("rita")
        assert set(back.welcome) == WELCOME_KEYS | {"restore"}, back.welcome
        saved = by_room(back.welcome["restore"])
        assert saved == {
            "r1": {"room": "r1", "last_id": m2["id"], "epoch": epochs["r1"]},
            "r2": {"room": "r2", "last_id": p1, "epoch": epochs["r2"]},
            # Nothing delivered here: the last id its join announced.
            "r3": {"room": "r3", "last_id": seed["id"], "epoch": epochs["r3"]},
            # No history at all.
            "empty": {"room": "empty", "last_id": None, "epoch": epochs["empty"]},
        }

        # Rejoining with since misses nothing and repeats nothing.
        replayed, joined = await rejoin(back, "r1", m2["id"], epochs["r1"])
        assert replayed == [m3] and joined["recovered"] is True
        replayed, joined = await rejoin(back, "r2", p1, epochs["r2"])
        assert [f["id"] for f in replayed] == [p2] and joined["recovered"] is True
        replayed, joined = await rejoin(back, "r3", seed["id"], epochs["r3"])
        assert replayed == [] and joined["recovered"] is True

        # Taken once: the next welcome has none.
        again = await gw.connect("rita")
        assert "restore" not in again.welcome

    run_backend(body)


def test_no_restore_without_rooms(start_gateway):
    gw = start_gateway()

    async def body():
        c = await gw.connect("nora")
        await c.ping()
        await c.close()
        await gw.wait_active(0)
        back = await gw.connect("nora")
        assert "restore" not in back.welcome
        # Leaving every room before closing leaves nothing to restore either.
        await back.join_first("x")
        await back.request({"type": "leave", "room": "x"}, "left")
        await back.close()
        await gw.wait_active(0)
        assert "restore" not in (await gw.connect("nora")).welcome

    run_backend(body)


def test_restore_expires(start_gateway):
    gw = start_gateway("--session-state-ttl", "1s")

    async def body():
        c = await gw.connect("tess")
        await c.join_first("x")
        await c.close()
        await gw.wait_active(0)  # the state was saved before the session was uncounted
        saved_by = time.monotonic()

        # Looking would take the state: wait for the TTL to pass on our clock instead.
        async def passed():
            return True if time.monotonic() - saved_by > 1.05 else None

        await poll(passed, timeout=5, every=0.05)
        assert "restore" not in (await gw.connect("tess")).welcome

    run_backend(body)
