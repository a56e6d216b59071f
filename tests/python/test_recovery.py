"""Recovery is exact or it says so: `join` with `since` and `epoch`."""

from __future__ import annotations

import asyncio

from harness import Client, Gateway, run, sort_users

MAX_ID = "99999999999999-0"


async def publish(c: Client, room: str, n: int, tag: str = "m") -> list[dict]:
    """Publishes n messages with refs; the message frames, in order. ``c`` must be
    the only reader of its frames and a member of the room."""
    out = []
    for i in range(n):
        await c.send({"type": "message", "room": room, "content": f"{tag}{i}", "ref": i})
        frames = await c.recv_n(2)
        by_type = {f["type"]: f for f in frames}
        assert set(by_type) == {"ack", "message"}, frames
        assert by_type["ack"]["id"] == by_type["message"]["id"]
        out.append(by_type["message"])
    return out


async def rejoin(c: Client, room: str, since: str, epoch: str | None = None, ref: object = "rj") -> tuple[list[dict], dict]:
    """Joins with ``since`` (and ``epoch``); the replayed messages and ``joined``.
    Nothing but messages may come before ``joined``."""
    frame = {"type": "join", "room": room, "since": since, "ref": ref}
    if epoch is not None:
        frame["epoch"] = epoch
    await c.send(frame)
    replayed, joined = await c.recv_until("joined")
    assert all(f["type"] == "message" for f in replayed), replayed
    assert joined["ref"] == ref
    return replayed, joined


async def rejoin_fresh(gw: Gateway, user: str, room: str, since: str, epoch: str | None) -> tuple[list[dict], dict]:
    """A new session of a user new to the room: replay, joined, then its own presence."""
    c = await gw.connect(user)
    replayed, joined = await rejoin(c, room, since, epoch)
    assert await c.recv() == {"type": "presence", "room": room, "event": "join", "user": c.user,
                              "count": joined["members_count"]}
    await c.close()
    return replayed, joined


async def saw_come_and_go(c: Client, room: str, users: list[str]) -> None:
    """``c``, a member of ``room``, gets exactly a presence join then leave for each
    of ``users`` (the sessions of rejoin_fresh), users interleaved in any order."""
    frames = await c.recv_n(2 * len(users))
    assert all(f["type"] == "presence" and f["room"] == room for f in frames), frames
    for u in users:
        assert [f["event"] for f in frames if f["user"]["user_id"] == u] == ["join", "leave"], frames
    assert {f["user"]["user_id"] for f in frames} == set(users), frames


def test_since_replays_exactly_what_was_missed(start_gateway):
    gw = start_gateway("--rate-limit", "1000")

    async def body():
        writer = await gw.connect("w")
        first = await writer.join_first("r")
        epoch = first["epoch"]
        reader = await gw.connect("reader")
        await reader.join_first("r")
        await writer.expect("presence")
        seen = await publish(writer, "r", 3)
        for m in seen:
            assert await reader.recv() == m
        await reader.close()
        assert (await writer.expect("presence"))["event"] == "leave"

        missed = await publish(writer, "r", 4)
        back = await gw.connect("reader")
        replayed, joined = await rejoin(back, "r", seen[-1]["id"], epoch, ref="again")
        # Exactly the missed frames, identical to what the room got live, oldest first.
        assert replayed == missed
        assert {**joined, "members": sort_users(joined["members"])} == {
            "type": "joined",
            "ref": "again",
            "room": "r",
            "members": sort_users([writer.user, back.user]),
            "members_count": 2,
            "members_more": False,
            "presence": "full",
            "last_id": missed[-1]["id"],
            "epoch": epoch,
            "recovered": True,
        }
        arrival = {"type": "presence", "room": "r", "event": "join", "user": back.user, "count": 2}
        assert await back.recv() == arrival
        assert await writer.recv() == arrival

        # Then live, with no duplicate.
        live = await publish(writer, "r", 1, tag="live")
        assert await back.recv() == live[0]

        everything = seen + missed + live
        # Nothing missed: nothing replayed, still recovered.
        replayed, joined = await rejoin_fresh(gw, "u1", "r", live[0]["id"], epoch)
        assert (replayed, joined["recovered"], joined["last_id"]) == ([], True, live[0]["id"])
        # From the very beginning of an untrimmed room.
        replayed, joined = await rejoin_fresh(gw, "u2", "r", "0-0", epoch)
        assert (replayed, joined["recovered"]) == (everything, True)
        # Without an epoch the server vouches for what it can check.
        replayed, joined = await rejoin_fresh(gw, "u3", "r", missed[1]["id"], None)
        assert (replayed, joined["recovered"]) == (missed[2:] + live, True)
        for member in (writer, back):
            await saw_come_and_go(member, "r", ["u1", "u2", "u3"])
        # Joining with since when already in the room: the session has been a live
        # member all along, so no second replay (it would duplicate what it got), just
        # joined, and no second presence.
        replayed, joined = await rejoin(back, "r", missed[-1]["id"], epoch)
        assert (replayed, joined["recovered"], joined["last_id"]) == ([], True, live[0]["id"])
        await back.ping()

    run(body)


def test_wrong_epoch_or_future_since_is_never_vouched_for(start_gateway):
    gw = start_gateway("--rate-limit", "1000")

    async def body():
        writer = await gw.connect("w")
        epoch = (await writer.join_first("r"))["epoch"]
        msgs = await publish(writer, "r", 4)

        # A different epoch: what history holds is replayed, recovered false.
        replayed, joined = await rejoin_fresh(gw, "a", "r", msgs[1]["id"], "someotherepoch")
        assert replayed == msgs[2:]
        assert (joined["recovered"], joined["epoch"], joined["last_id"]) == (False, epoch, msgs[-1]["id"])
        # A since newer than anything the room holds.
        replayed, joined = await rejoin_fresh(gw, "b", "r", MAX_ID, epoch)
        assert (replayed, joined["recovered"]) == ([], False)
        # A join without since replays nothing and is recovered, whatever the epoch.
        c = await gw.connect("c")
        joined = await c.request({"type": "join", "room": "r", "epoch": "someotherepoch"}, "joined")
        assert (joined["recovered"], joined["last_id"], joined["epoch"]) == (True, msgs[-1]["id"], epoch)
        assert (await c.expect("presence"))["user"]["user_id"] == "c"

        await saw_come_and_go(writer, "r", ["a", "b"])
        assert await writer.recv() == {"type": "presence", "room": "r", "event": "join", "user": c.user, "count": 2}
        # An empty room: since 0-0 is complete; any later since is not.
        replayed, joined = await rejoin_fresh(gw, "d", "empty", "0-0", epoch)
        assert (replayed, joined["recovered"], joined["last_id"], joined["epoch"]) == ([], True, None, epoch)
        replayed, joined = await rejoin_fresh(gw, "e", "empty", msgs[0]["id"], epoch)
        assert (replayed, joined["recovered"], joined["last_id"]) == ([], False, None)

    run(body)


def test_trimmed_history_answers_recovered_false_and_replays_what_is_kept(start_gateway):
    gw = start_gateway("--history-len", "5", "--rate-limit", "1000")

    async def body():
        writer = await gw.connect("w")
        epoch = (await writer.join_first("r"))["epoch"]
        msgs = await publish(writer, "r", 10)
        kept = msgs[5:]

        # From an old id: messages 2..4 are gone, so not recovered; only what is kept.
        replayed, joined = await rejoin_fresh(gw, "a", "r", msgs[1]["id"], epoch)
        assert replayed == kept
        assert (joined["recovered"], joined["last_id"], joined["epoch"]) == (False, msgs[-1]["id"], epoch)
        replayed, joined = await rejoin_fresh(gw, "b", "r", "0-0", epoch)
        assert (replayed, joined["recovered"]) == (kept, False)
        replayed, joined = await rejoin_fresh(gw, "c", "r", msgs[3]["id"], epoch)
        assert (replayed, joined["recovered"]) == (kept, False)
        # From the newest trimmed id: nothing after it was trimmed.
        replayed, joined = await rejoin_fresh(gw, "d", "r", msgs[4]["id"], epoch)
        assert (replayed, joined["recovered"]) == (kept, True)
        replayed, joined = await rejoin_fresh(gw, "e", "r", msgs[7]["id"], epoch)
        assert (replayed, joined["recovered"]) == (msgs[8:], True)

        await saw_come_and_go(writer, "r", ["a", "b", "c", "d", "e"])
        # history holds only what is kept.
        h = await writer.request({"type": "history", "room": "r", "limit": 100}, "history")
        assert h["messages"] == kept

    run(body)


def test_a_restarted_gateway_has_a_new_epoch(start_gateway):
    async def body():
        gw = start_gateway()
        c = await gw.connect("c")
        epoch = (await c.join_first("r"))["epoch"]
        msgs = await publish(c, "r", 2)
        await c.close()
        await asyncio.to_thread(gw.stop)

        gw2 = start_gateway()
        replayed, joined = await rejoin_fresh(gw2, "c", "r", msgs[-1]["id"], epoch)
        assert replayed == []
        assert joined["recovered"] is False
        assert joined["epoch"] != epoch
        assert joined["last_id"] is None

    run(body)


def test_messages_published_during_a_rejoin_are_neither_lost_nor_duplicated(start_gateway):
    gw = start_gateway("--rate-limit", "100000")

    async def body():
        writer = await gw.connect("w")
        epoch = (await writer.join_first("r"))["epoch"]
        pre = [m["id"] for m in await publish(writer, "r", 20, tag="pre")]
        await writer.close()  # it would stop reading, and the server is free to drop it
        pump = await gw.connect("pump")
        await pump.join_first("r")
        readers = [await gw.connect(f"reader{i}") for i in range(5)]

        async def pump_messages() -> list[str]:
            ids = []
            for i in range(150):
                await pump.send({"type": "message", "room": "r", "content": f"p{i}", "ref": i})
                while True:
                    f = await pump.recv()
                    if f["type"] == "ack":
                        assert f["ref"] == i
                        ids.append(f["id"])
                        break
            return ids

        async def read(c: Client) -> tuple[bool, list[str]]:
            # Rejoin from the start while the pump publishes; then read until the
            # pump's last message.
            await c.send({"type": "join", "room": "r", "since": "0-0", "epoch": epoch})
            seen = []
            recovered = None
            while True:
                f = await c.recv()
                if f["type"] == "message":
                    seen.append(f["id"])
                    if f["content"] == "p149":
                        return recovered, seen
                elif f["type"] == "joined":
                    recovered = f["recovered"]
                else:
                    assert f["type"] == "presence", f

        pumped, *results = await asyncio.gather(pump_messages(), *(read(c) for c in readers))
        expected = pre + pumped
        for recovered, seen in results:
            assert recovered is True
            assert seen == expected, "exactly every message once, in order"

    run(body)
