"""Typing indicators: broadcast to the room, cleared at once or by the server ~5 s later."""

from __future__ import annotations

import time

from harness import run


def test_typing_broadcast_stop_and_server_side_expiry(gateway):
    async def body():
        alice = await gateway.connect("alice", "Alice")
        bob = await gateway.connect("bob", "Bob")
        await alice.join_first("t")
        await bob.join_first("t")
        await alice.expect("presence")
        alice_typing = {"type": "typing", "room": "t", "users": [{"user_id": "alice", "username": "Alice"}]}
        nobody = {"type": "typing", "room": "t", "users": []}

        # The room, sender included, gets the list.
        await alice.send({"type": "typing", "room": "t", "is_typing": True})
        assert await bob.recv() == alice_typing
        assert await alice.recv() == alice_typing

        # Two typists.
        await bob.send({"type": "typing", "room": "t", "is_typing": True})
        both = await alice.recv()
        assert both["type"] == "typing" and both["room"] == "t"
        assert sorted(both["users"], key=lambda u: u["user_id"]) == [
            {"user_id": "alice", "username": "Alice"},
            {"user_id": "bob", "username": "Bob"},
        ]
        assert await bob.recv() == both

        # An explicit stop is announced at once.
        await bob.send({"type": "typing", "room": "t", "is_typing": False})
        assert await alice.recv() == alice_typing
        assert await bob.recv() == alice_typing
        await alice.send({"type": "typing", "room": "t", "is_typing": False})
        assert await alice.recv() == nobody
        assert await bob.recv() == nobody

        # Nobody clears it this time: the server does, about 5 s after the last
        # `is_typing: true`.
        sent = time.monotonic()
        await alice.send({"type": "typing", "room": "t", "is_typing": True})
        assert await bob.recv() == alice_typing
        assert await alice.recv() == alice_typing
        expired = await bob.recv(timeout=15)
        elapsed = time.monotonic() - sent
        assert expired == nobody
        assert await alice.recv(timeout=5) == nobody
        assert 4.9 <= elapsed <= 9.0, f"typing expired after {elapsed:.2f} s"

    run(body)


def test_typing_entries_go_when_the_typist_leaves_or_disconnects(gateway):
    async def body():
        alice = await gateway.connect("alice")
        bob = await gateway.connect("bob")
        carol = await gateway.connect("carol")
        await alice.join_first("t")
        await bob.join_first("t")
        await carol.join_first("t")
        for _ in range(2):
            await alice.expect("presence")
        await bob.expect("presence")

        def typing(*users):
            return {"type": "typing", "room": "t", "users": [u.user for u in users]}

        await bob.send({"type": "typing", "room": "t", "is_typing": True})
        assert await alice.recv() == typing(bob)
        await carol.send({"type": "typing", "room": "t", "is_typing": True})
        assert (await alice.expect("typing"))["users"] in ([bob.user, carol.user], [carol.user, bob.user])

        # (the typists got both lists too)
        for c in (bob, carol):
            assert [f["type"] for f in await c.recv_n(2)] == ["typing", "typing"]
        await carol.ping()
        # Leaving the room clears the entry at once, before the presence leave.
        await bob.request({"type": "leave", "room": "t"}, "left")
        assert await alice.recv() == typing(carol)
        assert await alice.recv() == {"type": "presence", "room": "t", "event": "leave", "user": bob.user, "count": 2}

        # So does a disconnect.
        await carol.close()
        assert await alice.recv() == typing()
        assert await alice.recv() == {"type": "presence", "room": "t", "event": "leave", "user": carol.user, "count": 1}

    run(body)
