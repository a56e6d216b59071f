"""Every error code a single node can produce; a bad frame never ends the session."""

from __future__ import annotations

import time

from harness import poll, run


def test_bad_json(gateway):
    async def body():
        c = await gateway.connect("alice")
        for text in ["not json", "[1,2]", '"a string"', "42", "null", "true", "{", "", "[" * 10_000]:
            await c.send_raw(text)
            err = await c.expect("error")
            assert err["code"] == "bad_json", (text[:20], err)
            assert set(err) == {"type", "code", "message"}, err
            assert err["message"]
        # Still serving.
        await c.ping()

    run(body)


def test_unknown_type(gateway):
    async def body():
        c = await gateway.connect("alice")
        await c.error({"ref": "r0"}, "unknown_type")
        await c.error({"type": "dance", "ref": 1}, "unknown_type")
        await c.error({"type": 5, "ref": "n"}, "unknown_type")
        await c.error({"type": None}, "unknown_type")
        await c.error({"type": "JOIN", "room": "a"}, "unknown_type")
        # Frames of other protocols, and server frame types, are not client frames.
        await c.error({"type": "subscribe", "channel": "a", "ref": "x"}, "unknown_type")
        await c.error({"type": "welcome"}, "unknown_type")
        await c.ping()

    run(body)


def test_invalid_field(start_gateway):
    gw = start_gateway("--max-message-bytes", "1000", "--rate-limit", "1000")

    async def body():
        c = await gw.connect("alice")
        await c.join_first("a")
        cases = [
            # join / leave: room missing, empty, of a bad character, too long, not a string
            {"type": "join"},
            {"type": "join", "room": ""},
            {"type": "join", "room": "has space"},
            {"type": "join", "room": "semi;colon"},
            {"type": "join", "room": "é"},
            {"type": "join", "room": "x" * 129},
            {"type": "join", "room": 5},
            {"type": "join", "room": None},
            {"type": "join", "room": "a", "since": "yesterday"},
            {"type": "join", "room": "a", "since": 12},
            {"type": "join", "room": "a", "since": "1-"},
            {"type": "join", "room": "a", "epoch": "not valid!"},
            {"type": "join", "room": "a", "epoch": ""},
            {"type": "join", "room": "a", "epoch": "e" * 33},
            {"type": "join", "room": "a", "epoch": 7},
            {"type": "leave"},
            {"type": "leave", "room": "bad room"},
            # message: content missing, empty, not a string, too long (in UTF-8 bytes)
            {"type": "message", "room": "a"},
            {"type": "message", "room": "a", "content": ""},
            {"type": "message", "room": "a", "content": 5},
            {"type": "message", "room": "a", "content": "x" * 1001},
            {"type": "message", "room": "a", "content": "é" * 501},
            {"type": "message", "content": "x"},
            # typing: is_typing missing or not a boolean
            {"type": "typing", "room": "a"},
            {"type": "typing", "room": "a", "is_typing": "yes"},
            {"type": "typing", "room": "a", "is_typing": 1},
            # direct: to missing, empty, too long, with a control character; content
            {"type": "direct", "content": "x"},
            {"type": "direct", "to": "", "content": "x"},
            {"type": "direct", "to": "u" * 129, "content": "x"},
            {"type": "direct", "to": "a\nb", "content": "x"},
            {"type": "direct", "to": 5, "content": "x"},
            {"type": "direct", "to": "bob"},
            {"type": "direct", "to": "bob", "content": ""},
            # history: limit out of range or not an integer, before not an id
            {"type": "history", "room": "a", "limit": 0},
            {"type": "history", "room": "a", "limit": 101},
            {"type": "history", "room": "a", "limit": 500},
            {"type": "history", "room": "a", "limit": -1},
            {"type": "history", "room": "a", "limit": 1.5},
            {"type": "history", "room": "a", "limit": "10"},
            {"type": "history", "room": "a", "before": "latest"},
            {"type": "history", "room": "a", "before": 5},
            {"type": "history"},
        ]
        for i, frame in enumerate(cases):
            await c.error({**frame, "ref": f"r{i}"}, "invalid_field")
        # A ref of a type other than string or number is itself invalid (and not echoed).
        for ref in (True, [1], {"a": 1}):
            err = await c.error({"type": "ping", "ref": ref}, "invalid_field")
            assert "ref" not in err
        # The limits are inclusive: exactly 128 characters, 1000 bytes, 32-char epochs.
        joined = await c.request({"type": "join", "room": "x" * 128, "ref": 1}, "joined")
        assert joined["room"] == "x" * 128
        await c.expect("presence")
        joined = await c.request({"type": "join", "room": "Az09_.:-", "epoch": "E" * 32}, "joined")
        await c.expect("presence")
        await c.send({"type": "message", "room": "a", "content": "é" * 500, "ref": "big"})
        got = sorted((await c.recv_n(2)), key=lambda f: f["type"])
        assert [f["type"] for f in got] == ["ack", "message"]
        assert got[1]["content"] == "é" * 500
        assert (await c.request({"type": "history", "room": "a", "limit": 100}, "history"))["messages"] == [got[1]]
        assert (await c.request({"type": "history", "room": "a", "limit": 1}, "history"))["messages"] == [got[1]]

    run(body)


def test_not_member(gateway):
    async def body():
        c = await gateway.connect("alice")
        await c.join_first("mine")
        await c.error({"type": "message", "room": "elsewhere", "content": "x", "ref": 3}, "not_member")
        await c.error({"type": "typing", "room": "elsewhere", "is_typing": True, "ref": "t"}, "not_member")
        await c.error({"type": "typing", "room": "elsewhere", "is_typing": False}, "not_member")
        await c.error({"type": "leave", "room": "elsewhere", "ref": "l"}, "not_member")
        # History needs no membership.
        h = await c.request({"type": "history", "room": "elsewhere"}, "history")
        assert h["messages"] == []
        # The rooms it is in still work.
        await c.send({"type": "message", "room": "mine", "content": "ok", "ref": 1})
        assert sorted(f["type"] for f in await c.recv_n(2)) == ["ack", "message"]

    run(body)


def test_forbidden_in_development_mode(gateway):
    async def body():
        c = await gateway.connect("alice")
        await c.error({"type": "join", "room": "private:x", "ref": "p"}, "forbidden")
        await c.error({"type": "join", "room": "private:", "ref": "p"}, "forbidden")
        await c.error({"type": "history", "room": "private:x", "ref": "h"}, "forbidden")
        # The prefix is case-sensitive and only a prefix.
        await c.join_first("Private:x")
        await c.join_first("not-private:x")
        # Not joined, so not a member either.
        await c.error({"type": "message", "room": "private:x", "content": "x"}, "not_member")

    run(body)


def test_private_room_prefix_flag(start_gateway):
    gw = start_gateway("--private-room-prefix", "secret-")

    async def body():
        c = await gw.connect("alice")
        await c.error({"type": "join", "room": "secret-x", "ref": 1}, "forbidden")
        await c.error({"type": "history", "room": "secret-x", "ref": 2}, "forbidden")
        await c.join_first("private:x")

    run(body)


def test_too_many_rooms(start_gateway):
    gw = start_gateway("--max-rooms-per-connection", "2")

    async def body():
        c = await gw.connect("alice")
        await c.join_first("r1")
        await c.join_first("r2")
        # Re-joining a room already joined is not a third room.
        await c.request({"type": "join", "room": "r2"}, "joined")
        await c.error({"type": "join", "room": "r3", "ref": "x"}, "too_many_rooms")
        await c.error({"type": "join", "room": "r4", "since": "0-0", "ref": 4}, "too_many_rooms")
        # The refused room was not joined.
        await c.error({"type": "message", "room": "r3", "content": "x", "ref": "m"}, "not_member")
        # The limit is per connection: another session of the same user has its own.
        c2 = await gw.connect("alice")
        await c2.join_first("r3")
        await c2.join_first("r4")
        await c2.error({"type": "join", "room": "r5"}, "too_many_rooms")
        # Leaving frees a place.
        await c.request({"type": "leave", "room": "r1"}, "left")
        # (alice is already in r3 through c2: no presence this time)
        joined = await c.request({"type": "join", "room": "r3", "ref": "ok"}, "joined")
        assert joined["ref"] == "ok"
        await c.ping()

    run(body)


def test_rate_limited(start_gateway):
    rate = 5  # tokens per second; the bucket holds twice that
    gw = start_gateway("--rate-limit", str(rate))

    async def body():
        started = time.monotonic()
        c = await gw.connect("alice")
        await c.join_first("r")  # one token of the burst of 10
        n = 40
        for i in range(n):
            await c.send({"type": "message", "room": "r", "content": f"m{i}", "ref": i})
        # The reader answers frames in order: an ack or a rate_limited error per
        # frame, ref by ref (the room's message copies come in between).
        answers: list[str] = []
        copies = 0
        while len(answers) < n or copies < answers.count("ack"):
            f = await c.recv()
            if f["type"] == "message":
                copies += 1
                continue
            assert f["type"] in ("ack", "error"), f
            if f["type"] == "error":
                assert set(f) == {"type", "code", "message", "ref"}, f
                assert f["code"] == "rate_limited", f
            assert f["ref"] == len(answers), f
            answers.append(f["type"])
        elapsed = time.monotonic() - started
        accepted = answers.count("ack")
        # The burst (what the join left of it) is always accepted, then the refill
        # rate bounds the rest.
        assert answers[:9] == ["ack"] * 9, answers
        assert "error" in answers, answers
        assert accepted <= 10 - 1 + rate * elapsed + 1, (accepted, elapsed, answers)

        # Pings stay free and the session is still open.
        for i in range(20):
            assert await c.request({"type": "ping", "ref": i}, "pong") == {"type": "pong", "ref": i}

        # Tokens come back with time: poll until a frame is accepted again.
        async def accepted_again():
            await c.send({"type": "history", "room": "r", "limit": 1, "ref": "again"})
            f = await c.recv()
            if f["type"] == "history":
                return f
            assert f == {"type": "error", "code": "rate_limited", "message": f["message"], "ref": "again"}, f
            return None

        h = await poll(accepted_again, every=0.05)
        assert h["ref"] == "again"

    run(body)


def test_every_frame_type_but_ping_takes_a_token(start_gateway):
    # Half a token per second: the bucket holds one, so after the first frame
    # nothing but ping is served for two seconds.
    gw = start_gateway("--rate-limit", "0.5")

    async def body():
        c = await gw.connect("alice")
        started = time.monotonic()
        await c.join_first("r")
        frames = [
            {"type": "message", "room": "r", "content": "x"},
            {"type": "typing", "room": "r", "is_typing": True},
            {"type": "direct", "to": "bob", "content": "x"},
            {"type": "history", "room": "r"},
            {"type": "leave", "room": "r"},
            {"type": "join", "room": "other"},
        ]
        answers = []
        for i, frame in enumerate(frames):
            await c.send({**frame, "ref": i})
            await c.send({"type": "ping", "ref": f"p{i}"})
            reply, pong = await c.recv_n(2)
            assert pong == {"type": "pong", "ref": f"p{i}"}, (frame, reply, pong)
            answers.append(reply)
        elapsed = time.monotonic() - started
        limited = [a for a in answers if a["type"] == "error" and a["code"] == "rate_limited"]
        # At most one token per two seconds came back since the join took the only one.
        assert len(frames) - len(limited) <= int(elapsed * 0.5), (elapsed, answers)
        for i, a in enumerate(answers):
            if a in limited:
                assert a["ref"] == i, a

    run(body)
