"""Tokens (JWT mode): refused before the upgrade with 401, private rooms need a grant,
a token that expires while connected ends the session with 1008."""

from __future__ import annotations

import json

import jwt
import pytest
from websockets.exceptions import InvalidStatus

from harness import Client, now, run, token

SECRET = "py-test-secret-0123456789abcdef-0123456789abcdef-0123456789abcdef"


async def refused(url: str, status: int, **kwargs) -> dict:
    """Connecting to ``url`` fails before the upgrade with ``status``; the JSON body."""
    with pytest.raises(InvalidStatus) as ei:
        await Client.open(url, **kwargs)
    response = ei.value.response
    assert response.status_code == status, (url[:80], response.status_code, response.body)
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = json.loads(bytes(response.body))
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str), body
    return body


def test_missing_bad_or_expired_tokens_get_401_before_the_upgrade(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET)

    async def body():
        bad_tokens = {
            "missing": None,
            "empty": "",
            "garbage": "garbage",
            "wrong secret": token("another-secret-0123456789abcdef-0123456789abcdef-012345", sub="alice", exp=now() + 600),
            "expired": token(SECRET, sub="alice", exp=now() - 600),
            "no sub": token(SECRET, exp=now() + 600),
            "no exp": token(SECRET, sub="alice"),
            "empty sub": token(SECRET, sub="", exp=now() + 600),
            "sub not a string": token(SECRET, sub=42, exp=now() + 600),
            "alg none": jwt.encode({"sub": "alice", "exp": now() + 600}, None, algorithm="none"),
            "HS512": jwt.encode({"sub": "alice", "exp": now() + 600}, SECRET, algorithm="HS512"),
            "tampered": token(SECRET, sub="alice", exp=now() + 600)[:-2] + "xx",
        }
        for what, tok in bad_tokens.items():
            query = "" if tok is None else f"token={tok}"
            body = await refused(gw.url(query), 401)
            assert body["error"]["code"] == "unauthorized", (what, body)
        # Development-mode identity parameters do not count in token mode.
        await refused(gw.url("user_id=alice"), 401)
        # The same rules hold for the Authorization header.
        await refused(gw.url(), 401, additional_headers={"Authorization": "Bearer garbage"})
        expired = token(SECRET, sub="alice", exp=now() - 600)
        body = await refused(gw.url(), 401, additional_headers={"Authorization": f"Bearer {expired}"})
        assert body["error"]["code"] == "unauthorized"

        # After all those refusals, a good token still gets in.
        ok = await gw.open(f"token={token(SECRET, sub='alice', exp=now() + 600)}")
        assert ok.welcome["user_id"] == "alice"

    run(body)


def test_good_tokens_by_query_or_header(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET)

    async def body():
        tok = token(SECRET, sub="alice", name="Alice Liddell", exp=now() + 600)
        a = await gw.open(f"token={tok}")
        assert (a.welcome["user_id"], a.welcome["username"]) == ("alice", "Alice Liddell")

        b = await gw.open("", additional_headers={"Authorization": f"Bearer {token(SECRET, sub='bob', exp=now() + 600)}"})
        # No name claim: the user id is the name.
        assert (b.welcome["user_id"], b.welcome["username"]) == ("bob", "bob")

        # The token decides the identity, whatever the query says.
        c = await gw.open(f"token={token(SECRET, sub='carol', exp=now() + 600)}&user_id=mallory&username=M")
        assert (c.welcome["user_id"], c.welcome["username"]) == ("carol", "carol")

    run(body)


def test_private_rooms_need_a_grant_in_the_token(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET)

    async def body():
        granted = token(
            SECRET, sub="alice", name="Alice", exp=now() + 600,
            rooms=["private:ops", "private:team-*"],
        )
        a = await gw.open(f"token={granted}")
        await a.join_first("private:ops")
        await a.join_first("private:team-blue")
        await a.join_first("private:team-")
        await a.join_first("public")
        await a.error({"type": "join", "room": "private:finance", "ref": "f"}, "forbidden")
        # An exact grant is not a prefix.
        await a.error({"type": "join", "room": "private:ops2", "ref": 2}, "forbidden")
        await a.error({"type": "join", "room": "private:team", "ref": 3}, "forbidden")
        await a.error({"type": "history", "room": "private:finance", "ref": "h"}, "forbidden")
        h = await a.request({"type": "history", "room": "private:ops", "ref": "ok"}, "history")
        assert h["messages"] == []

        # A token whose rooms claim lacks the room, or that has no rooms claim.
        other = token(SECRET, sub="bob", exp=now() + 600, rooms=["private:elsewhere"])
        b = await gw.open(f"token={other}")
        await b.error({"type": "join", "room": "private:ops", "ref": "b"}, "forbidden")
        await b.error({"type": "history", "room": "private:ops"}, "forbidden")
        none = token(SECRET, sub="carol", exp=now() + 600)
        c = await gw.open(f"token={none}")
        await c.error({"type": "join", "room": "private:ops", "ref": "c"}, "forbidden")
        await c.join_first("public")
        assert (await a.expect("presence"))["user"]["user_id"] == "carol"

    run(body)


def test_a_token_expiring_while_connected_closes_with_1008(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET)

    async def body():
        long = token(SECRET, sub="bob", exp=now() + 600)
        b_long = await gw.open(f"token={long}")
        short = token(SECRET, sub="bob", exp=now() + 2)
        b = await gw.open(f"token={short}")
        assert await b.closed(timeout=15) == 1008
        # Another session of the same user, with a longer token, is unaffected.
        await b_long.ping()

    run(body)


def test_a_token_that_just_expired_is_refused_with_401(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET)

    async def body():
        expired = token(SECRET, sub="alice", exp=now() - 2)  # expired 2-3 s ago
        try:
            c = await Client.open(gw.url(f"token={expired}"))
        except InvalidStatus as e:
            assert e.response.status_code == 401
            return
        welcome = json.loads(await c.ws.recv())
        code = await c.closed()
        raise AssertionError(f"upgraded with an expired token: {welcome['type']}, then close {code}")

    run(body)
