"""Every client frame of the contract and its answer, against the real binary."""

from __future__ import annotations

import re

from harness import (
    EPOCH_RE,
    Client,
    assert_ts,
    assert_uuid,
    parse_id,
    run,
    sort_users,
)

WELCOME_KEYS = {
    "type",
    "protocol",
    "session_id",
    "node_id",
    "user_id",
    "username",
    "heartbeat_ms",
    "unread_notifications",
}
MESSAGE_KEYS = {"type", "id", "room", "user_id", "username", "content", "ts"}


async def message_and_ack(c: Client) -> tuple[dict, dict]:
    """The sender of a `message` with a `ref` gets exactly two frames, the `ack` and
    its own copy of the `message`, in either order."""
    frames = await c.recv_n(2)
    by_type = {f["type"]: f for f in frames}
    assert set(by_type) == {"ack", "message"}, frames
    return by_type["message"], by_type["ack"]


async def send_and_wait(c: Client, room: str, content: str, ref: object) -> dict:
    """Sends a message with a ref; returns the message frame the sender got."""
    await c.send({"type": "message", "room": room, "content": content, "ref": ref})
    msg, ack = await message_and_ack(c)
    assert ack == {"type": "ack", "ref": ref, "room": room, "id": msg["id"]}
    return msg


def test_welcome_fields(start_gateway):
    gw = start_gateway("--node-id", "gw-py")

    async def body():
        a = await gw.connect("alice", "Alice")
        w = a.welcome
        assert set(w) == WELCOME_KEYS, w
        assert w["type"] == "welcome"
        assert w["protocol"] == 1
        assert w["node_id"] == "gw-py"
        assert w["user_id"] == "alice"
        assert w["username"] == "Alice"
        assert w["heartbeat_ms"] == 25000
        assert w["unread_notifications"] == 0
        assert_uuid(w["session_id"])

        # A second session of the same user is another session.
        a2 = await gw.connect("alice", "Alice")
        assert a2.welcome["session_id"] != w["session_id"]
        assert a2.welcome["user_id"] == "alice"

        # No username: the user id is the name.
        b = await gw.open("user_id=bob")
        assert (b.welcome["user_id"], b.welcome["username"]) == ("bob", "bob")

        # No identity at all: an anonymous id.
        anon = await gw.open("")
        assert set(anon.welcome) == WELCOME_KEYS
        assert re.fullmatch(r"anon-[0-9a-f]{12}", anon.welcome["user_id"]), anon.welcome
        assert anon.welcome["username"] == anon.welcome["user_id"]
        anon2 = await gw.open("")
        assert anon2.welcome["user_id"] != anon.welcome["user_id"]

    run(body)


def test_default_node_id_and_heartbeat_flag(start_gateway):
    gw = start_gateway("--heartbeat-ms", "4321")

    async def body():
        a = await gw.connect("alice")
        assert a.welcome["heartbeat_ms"] == 4321
        assert re.fullmatch(r"gw-.+", a.welcome["node_id"]), a.welcome

    run(body)


def test_join_joined_and_presence(gateway):
    async def body():
        alice = await gateway.connect("alice", "Alice")
        joined = await alice.request({"type": "join", "room": "lobby", "ref": "j1"}, "joined")
        epoch = joined["epoch"]
        assert EPOCH_RE.fullmatch(epoch), epoch
        assert joined == {
            "type": "joined",
            "ref": "j1",
            "room": "lobby",
            "members": [{"user_id": "alice", "username": "Alice"}],
            "members_count": 1,
            "members_more": False,
            "presence": "full",
            "last_id": None,
            "epoch": epoch,
            "recovered": True,
        }
        # The joiner hears its own arrival, with the count after it.
        assert await alice.recv() == {
            "type": "presence",
            "room": "lobby",
            "event": "join",
            "user": {"user_id": "alice", "username": "Alice"},
            "count": 1,
        }

        bob = await gateway.connect("bob", "Bob")
        joined_b = await bob.request({"type": "join", "room": "lobby", "ref": 7}, "joined")
        assert set(joined_b) == {
            "type", "ref", "room", "members", "members_count", "members_more", "presence", "last_id", "epoch",
            "recovered",
        }
        assert (joined_b["members_count"], joined_b["members_more"]) == (2, False)
        assert joined_b["ref"] == 7
        assert sort_users(joined_b["members"]) == [
            {"user_id": "alice", "username": "Alice"},
            {"user_id": "bob", "username": "Bob"},
        ]
        assert (joined_b["last_id"], joined_b["recovered"]) == (None, True)
        # Embedded mode: one epoch for the whole process.
        assert joined_b["epoch"] == epoch
        bob_presence = {
            "type": "presence",
            "room": "lobby",
            "event": "join",
            "user": {"user_id": "bob", "username": "Bob"},
            "count": 2,
        }
        assert await bob.recv() == bob_presence
        assert await alice.recv() == bob_presence

        # A join without ref has no ref in its answer.
        other = await bob.request({"type": "join", "room": "other"}, "joined")
        assert "ref" not in other
        await bob.expect("presence")

        # Joining again answers joined again, and is not a second arrival.
        again = await alice.request({"type": "join", "room": "lobby", "ref": "j2"}, "joined")
        assert again["ref"] == "j2"
        assert sort_users(again["members"]) == sort_users(joined_b["members"])
        # Barrier: a message published after the re-join is the next thing both get.
        msg = await send_and_wait(alice, "lobby", "after rejoin", "b1")
        assert await bob.recv() == msg

    run(body)


def test_presence_counts_sessions_of_one_user(gateway):
    async def body():
        alice = await gateway.connect("alice")
        await alice.join_first("p")
        bob1 = await gateway.connect("bob")
        await bob1.join_first("p")
        assert await alice.recv() == {
            "type": "presence", "room": "p", "event": "join", "user": bob1.user, "count": 2,
        }

        # A second session of bob: bob is counted once, and nobody hears a new arrival.
        bob2 = await gateway.connect("bob")
        joined = await bob2.request({"type": "join", "room": "p", "ref": 1}, "joined")
        assert sort_users(joined["members"]) == [alice.user, bob1.user]
        msg = await send_and_wait(bob2, "p", "two of me", "m")
        assert await alice.recv() == msg
        assert await bob1.recv() == msg

        # The first of bob's sessions leaves: bob is still there, no presence.
        left = await bob1.request({"type": "leave", "room": "p", "ref": "l1"}, "left")
        assert left == {"type": "left", "ref": "l1", "room": "p"}
        msg = await send_and_wait(alice, "p", "still here?", "m2")
        assert await bob2.recv() == msg
        # bob1 left the room: the next thing it gets is a direct sent afterwards.
        await alice.request({"type": "direct", "to": "bob", "content": "ping bob", "ref": "d"}, "ack")
        d1 = await bob1.expect("direct")
        assert d1["content"] == "ping bob"
        assert (await bob2.expect("direct"))["id"] == d1["id"]
        members = (await alice.request({"type": "join", "room": "p"}, "joined"))["members"]
        assert sort_users(members) == [alice.user, bob2.user]

        # The last session of bob leaves: now the room hears it.
        await bob2.request({"type": "leave", "room": "p"}, "left")
        assert await alice.recv() == {
            "type": "presence", "room": "p", "event": "leave", "user": bob2.user, "count": 1,
        }
        members = (await alice.request({"type": "join", "room": "p"}, "joined"))["members"]
        assert members == [alice.user]

        # Disconnects count like leaves: only the last session of bob to go is a leave.
        bob3 = await gateway.connect("bob")
        bob4 = await gateway.connect("bob")
        await bob3.join_first("p")
        assert (await alice.expect("presence"))["event"] == "join"
        await bob4.request({"type": "join", "room": "p"}, "joined")
        await bob3.close()
        # (alice + bob1 + bob2 + bob4 remain: wait until bob3's clean-up is over)
        await gateway.wait_active(4)
        msg = await send_and_wait(alice, "p", "bob3 gone", "m3")
        assert await bob4.recv() == msg
        await bob4.close()
        assert await alice.recv() == {
            "type": "presence", "room": "p", "event": "leave", "user": bob4.user, "count": 1,
        }

    run(body)


def test_message_ack_and_fan_out(start_gateway):
    gw = start_gateway("--rate-limit", "1000")

    async def body():
        alice = await gw.connect("alice", "Alice")
        bob = await gw.connect("bob", "Bob")
        carol = await gw.connect("carol", "Carol")
        await alice.join_first("chat")
        await bob.join_first("chat")
        await alice.expect("presence")

        await alice.send({"type": "message", "room": "chat", "content": "hello", "ref": "m1"})
        msg, ack = await message_and_ack(alice)
        assert set(msg) == MESSAGE_KEYS, msg
        assert ack == {"type": "ack", "ref": "m1", "room": "chat", "id": msg["id"]}
        parse_id(msg["id"])
        assert_ts(msg["ts"])
        assert {k: msg[k] for k in ("room", "user_id", "username", "content")} == {
            "room": "chat", "user_id": "alice", "username": "Alice", "content": "hello",
        }
        # Every member, sender included, gets the identical frame.
        assert await bob.recv() == msg

        # Numeric ref; any text survives the round trip.
        text = 'héllo 👋 "quoted" \\ back\nslash <tag> \u2028'
        m2 = await send_and_wait(bob, "chat", text, 42)
        assert m2["content"] == text
        assert (m2["user_id"], m2["username"]) == ("bob", "Bob")
        assert await alice.recv() == m2

        # No ref: no ack. The sender's frames up to a pong are its message and the pong.
        await alice.send({"type": "message", "room": "chat", "content": "no ref"})
        await alice.send({"type": "ping", "ref": "p"})
        frames = await alice.recv_n(2)
        assert sorted(f["type"] for f in frames) == ["message", "pong"], frames
        m3 = next(f for f in frames if f["type"] == "message")
        assert await bob.recv() == m3

        # Ids sort in publish order, also within one millisecond.
        ids = [msg["id"], m2["id"], m3["id"]]
        for i in range(10):
            ids.append((await send_and_wait(alice, "chat", f"burst {i}", i))["id"])
            assert (await bob.recv())["id"] == ids[-1]
        parsed = [parse_id(i) for i in ids]
        assert parsed == sorted(parsed) and len(set(parsed)) == len(parsed), ids

        # Carol is not in the room: the next thing she gets is a direct sent after all that.
        await alice.request({"type": "direct", "to": "carol", "content": "psst", "ref": "d"}, "ack")
        assert (await carol.recv())["type"] == "direct"

    run(body)


def test_history_before_and_limit(start_gateway):
    gw = start_gateway("--rate-limit", "1000")

    async def body():
        alice = await gw.connect("alice")
        await alice.join_first("h")
        sent = [await send_and_wait(alice, "h", f"m{i}", i) for i in range(55)]

        # History needs no membership.
        reader = await gw.connect("reader")
        h = await reader.request({"type": "history", "room": "h", "ref": "h1"}, "history")
        assert set(h) == {"type", "ref", "room", "messages", "more"}
        assert h["more"] is False
        assert (h["ref"], h["room"]) == ("h1", "h")
        # Default limit 50: the newest 50, oldest first, identical to the live frames.
        assert h["messages"] == sent[5:]

        h = await reader.request({"type": "history", "room": "h", "limit": 100}, "history")
        assert "ref" not in h
        assert h["messages"] == sent
        h = await reader.request({"type": "history", "room": "h", "limit": 2}, "history")
        assert h["messages"] == sent[53:]
        h = await reader.request(
            {"type": "history", "room": "h", "before": sent[10]["id"], "limit": 3, "ref": 3}, "history"
        )
        assert h["ref"] == 3
        assert h["messages"] == sent[7:10]
        h = await reader.request({"type": "history", "room": "h", "before": sent[2]["id"]}, "history")
        assert h["messages"] == sent[:2]
        h = await reader.request({"type": "history", "room": "h", "before": sent[0]["id"]}, "history")
        assert h["messages"] == []
        h = await reader.request({"type": "history", "room": "h", "before": "0-0"}, "history")
        assert h["messages"] == []
        h = await reader.request({"type": "history", "room": "h", "limit": 1, "before": None}, "history")
        assert h["messages"] == sent[54:]
        h = await reader.request({"type": "history", "room": "empty-room"}, "history")
        assert h == {"type": "history", "room": "empty-room", "messages": [], "more": False}

    run(body)


def test_direct_reaches_every_session_of_the_user(gateway):
    async def body():
        bob1 = await gateway.connect("bob", "Bob")
        bob2 = await gateway.connect("bob", "Bob")
        alice = await gateway.connect("alice", "Alice")
        carol = await gateway.connect("carol", "Carol")

        ack = await alice.request({"type": "direct", "to": "bob", "content": "psst", "ref": "d1"}, "ack")
        assert set(ack) == {"type", "ref", "id"}, ack
        assert ack["ref"] == "d1"
        assert_uuid(ack["id"])
        for bob in (bob1, bob2):
            d = await bob.recv()
            assert set(d) == {"type", "id", "from", "content", "ts"}, d
            assert d["type"] == "direct"
            assert d["id"] == ack["id"]
            assert d["from"] == {"user_id": "alice", "username": "Alice"}
            assert d["content"] == "psst"
            assert_ts(d["ts"])

        # Neither the sender nor a bystander got a copy: the next frame each gets is
        # a direct published afterwards.
        await carol.request({"type": "direct", "to": "alice", "content": "to alice", "ref": 1}, "ack")
        assert (await alice.expect("direct"))["content"] == "to alice"
        await alice.request({"type": "direct", "to": "carol", "content": "to carol", "ref": 2}, "ack")
        assert (await carol.expect("direct"))["content"] == "to carol"

        # No ref: no ack (the reader answers frames in order, so the pong comes next).
        await alice.send({"type": "direct", "to": "bob", "content": "no ref"})
        await alice.ping("after-direct")
        for bob in (bob1, bob2):
            d = await bob.expect("direct")
            assert d["content"] == "no ref"

        # Nobody home: still acknowledged.
        ack = await alice.request({"type": "direct", "to": "nobody", "content": "hello?", "ref": "n"}, "ack")
        assert ack["ref"] == "n"

    run(body)


def test_ping_pong(gateway):
    async def body():
        a = await gateway.connect("alice")
        assert await a.request({"type": "ping", "ref": 5}, "pong") == {"type": "pong", "ref": 5}
        assert await a.request({"type": "ping", "ref": "abc"}, "pong") == {"type": "pong", "ref": "abc"}
        assert await a.request({"type": "ping"}, "pong") == {"type": "pong"}
        # null counts as no ref.
        assert await a.request({"type": "ping", "ref": None}, "pong") == {"type": "pong"}
        # Fields the frame does not define are ignored.
        assert await a.request({"type": "ping", "ref": 1, "extra": [1, 2]}, "pong") == {"type": "pong", "ref": 1}

    run(body)


def test_leave_and_left(gateway):
    async def body():
        alice = await gateway.connect("alice")
        bob = await gateway.connect("bob")
        await alice.join_first("r")
        await bob.join_first("r")
        await alice.expect("presence")

        left = await bob.request({"type": "leave", "room": "r", "ref": 9}, "left")
        assert left == {"type": "left", "ref": 9, "room": "r"}
        assert await alice.recv() == {"type": "presence", "room": "r", "event": "leave", "user": bob.user, "count": 1}

        # Bob no longer gets the room's messages, and cannot send there.
        await send_and_wait(alice, "r", "after bob left", "x")
        await alice.request({"type": "direct", "to": "bob", "content": "barrier", "ref": "d"}, "ack")
        assert (await bob.expect("direct"))["content"] == "barrier"
        await bob.error({"type": "message", "room": "r", "content": "hi", "ref": "m"}, "not_member")
        # Leaving again: not a member.
        await bob.error({"type": "leave", "room": "r", "ref": "l"}, "not_member")
        # Without ref: no ref in left.
        await bob.join_first("r")
        assert (await alice.expect("presence"))["event"] == "join"
        assert await bob.request({"type": "leave", "room": "r"}, "left") == {"type": "left", "room": "r"}

    run(body)
