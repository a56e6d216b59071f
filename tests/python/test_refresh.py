"""Token refresh without reconnecting (issue 19, item 2): `refresh_needed` once per
token at `--refresh-notice-s` before its `exp`, `refresh` answered `refreshed` (the
session outlives the old token), or refused (`forbidden` for another user's token,
`invalid_field` for a bad one) with the old token still in force; a refresh after the
expiry is too late (1008); the new `rooms` claim takes effect at once; RS256 tokens
from a key file; development mode; the rate limit.

Tokens expire on whole seconds, so the tests use tokens a few seconds long and wait
for frames (or for the close) with deadlines, never for a fixed time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import jwt
from websockets.exceptions import ConnectionClosed

from harness import WAIT, Client, binary, now, run, token
from key_provider import SigningKey, hs256_keyed_with

SECRET = "refresh-test-secret-0123456789abcdef-0123456789abcdef"


def tok(sub: str, exp: int, **claims) -> str:
    return token(SECRET, sub=sub, exp=exp, **claims)


def refresh(t: str, ref: str = "rf") -> dict:
    return {"type": "refresh", "token": t, "ref": ref}


async def frames_until(c: Client, wall: float) -> list[dict]:
    """Every frame that arrives before the wall clock reads ``wall`` (the session
    must stay open meanwhile)."""
    got = []
    while (left := wall - time.time()) > 0:
        try:
            got.append(await c.recv(left))
        except asyncio.TimeoutError:
            break
    return got


async def frames_until_closed(c: Client) -> tuple[list[dict], int | None, float]:
    """The frames before the server's close, its code, and when it came."""
    got = []
    deadline = time.monotonic() + WAIT
    try:
        while True:
            got.append(await c.recv(max(deadline - time.monotonic(), 0.001)))
    except ConnectionClosed as e:
        return got, (e.rcvd.code if e.rcvd is not None else None), time.time()


def test_refresh_before_expiry_keeps_the_session_and_each_token_gets_one_notice(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET, "--refresh-notice-s", "2")

    async def body():
        exp1 = now() + 3
        a = await gw.open(f"token={tok('alice', exp1, name='Alice')}")
        # The notice comes by itself, 2 s before `exp`, and before anything else.
        notice = await a.expect("refresh_needed")
        assert notice == {"type": "refresh_needed", "exp": exp1}
        assert exp1 - 2 - 0.05 <= time.time() <= exp1, (time.time(), exp1)

        # A new short token: answered with its exp, and it gets a notice of its own.
        exp2 = exp1 + 1
        assert await a.request(refresh(tok("alice", exp2, name="Renamed"), "r1"), "refreshed") == {
            "type": "refreshed", "ref": "r1", "exp": exp2}
        assert await a.expect("refresh_needed") == {"type": "refresh_needed", "exp": exp2}
        assert time.time() >= exp2 - 2 - 0.05

        exp3 = now() + 600
        assert await a.request(refresh(tok("alice", exp3)), "refreshed") == {
            "type": "refreshed", "ref": "rf", "exp": exp3}
        # Past both earlier tokens' exp: the session stays open and nothing comes (no
        # second notice, no close).
        assert await frames_until(a, exp2 + 0.5) == []
        assert time.time() > exp1 + 1

        # Still served, under the name of the handshake (a refresh does not rename).
        b = await gw.open(f"token={tok('bob', now() + 600)}")
        await a.join_first("r")
        await b.join_first("r")
        assert (await a.expect("presence"))["user"]["user_id"] == "bob"
        await a.send({"type": "message", "room": "r", "content": "still here"})
        got = await b.expect("message")
        assert (got["user_id"], got["username"], got["content"]) == ("alice", "Alice", "still here")

    run(body)


def test_a_refresh_after_the_expiry_is_too_late(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET, "--refresh-notice-s", "1")

    async def body():
        exp = now() + 2
        a = await gw.open(f"token={tok('alice', exp)}")
        assert await a.expect("refresh_needed") == {"type": "refresh_needed", "exp": exp}
        # Not answered: the token is left to expire (nothing comes meanwhile), then a
        # good one is offered once the expiry has passed.
        assert await frames_until(a, exp - 0.3) == []
        await asyncio.sleep(max(0.0, exp - time.time()))
        try:
            await a.send(refresh(tok("alice", now() + 600)))
        except ConnectionClosed:
            pass  # the close came first: too late all the same
        frames, code, at = await frames_until_closed(a)
        assert code == 1008, (frames, code)
        assert frames == [], frames
        assert at >= exp

    run(body)


def test_refused_refreshes_leave_the_old_token_in_force(start_gateway):
    # No notice: the only frames are the answers.
    gw = start_gateway("--jwt-secret", SECRET, "--refresh-notice-s", "0", "--jwt-issuer", "idp")

    async def body():
        exp = now() + 3
        a = await gw.open(f"token={tok('alice', exp, iss='idp', rooms=['private:a'])}")
        later = now() + 600
        # Another user's token, however good: forbidden.
        err = await a.error(refresh(tok("mallory", later, iss="idp"), "sub"), "forbidden")
        assert "another user" in err["message"], err
        bad = {
            "garbage": "not-a-jwt",
            "wrong key": jwt.encode({"sub": "alice", "exp": later, "iss": "idp"}, "another-secret-0123456789abcdef-0123", algorithm="HS256"),
            "expired": tok("alice", now() - 1, iss="idp"),
            "wrong issuer": tok("alice", later, iss="elsewhere"),
            "no issuer": tok("alice", later),
            "alg none": jwt.encode({"sub": "alice", "exp": later, "iss": "idp"}, None, algorithm="none"),
            "not yet valid": tok("alice", later, iss="idp", nbf=later - 60),
        }
        for what, t in bad.items():
            err = await a.error(refresh(t, what), "invalid_field")
            assert err["message"].startswith("token refused"), (what, err)
        for frame in [
            {"type": "refresh", "ref": "none"},
            {"type": "refresh", "token": "", "ref": "empty"},
            {"type": "refresh", "token": 5, "ref": "number"},
            {"type": "refresh", "token": "x" * 8193, "ref": "long"},
        ]:
            await a.error(frame, "invalid_field")
        # The grants are the old token's still.
        await a.request({"type": "join", "room": "private:a", "ref": "j"}, "joined")
        # And so is the expiry: closed with 1008 at the old `exp`, nothing else sent.
        frames, code, at = await frames_until_closed(a)
        assert [f["type"] for f in frames] == ["presence"], frames
        assert code == 1008 and at >= exp, (code, at, exp)

    run(body)


def test_a_refresh_to_an_earlier_exp_closes_the_session_then(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET)

    async def body():
        a = await gw.open(f"token={tok('alice', now() + 600)}")
        exp = now() + 2
        # Less is left than the notice (30 s): refreshed, then noticed at once.
        assert await a.request(refresh(tok("alice", exp)), "refreshed") == {
            "type": "refreshed", "ref": "rf", "exp": exp}
        frames, code, at = await frames_until_closed(a)
        assert frames == [{"type": "refresh_needed", "exp": exp}], frames
        assert code == 1008 and exp <= at < exp + 2, (code, at, exp)

    run(body)


def test_a_refreshed_token_that_no_longer_grants_a_private_room_leaves_it(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET)

    async def body():
        later = now() + 600
        a = await gw.open(f"token={tok('alice', later, rooms=['private:a', 'private:b'])}")
        b = await gw.open(f"token={tok('bob', later, rooms=['private:b'])}")
        for room in ["private:a", "private:b", "lobby"]:
            await a.join_first(room)
        for room in ["private:b", "lobby"]:
            await b.join_first(room)
            assert (await a.expect("presence"))["user"]["user_id"] == "bob"

        # The new token grants private:a only: private:b is left before the answer.
        await a.send(refresh(tok("alice", later + 60, rooms=["private:a"]), "g"))
        assert await a.recv_n(2) == [
            {"type": "left", "room": "private:b", "reason": "revoked"},
            {"type": "refreshed", "ref": "g", "exp": later + 60},
        ]
        leave = await b.expect("presence")
        assert (leave["room"], leave["event"], leave["user"]["user_id"]) == ("private:b", "leave", "alice")
        # The new grants hold from now on.
        await a.error({"type": "join", "room": "private:b", "ref": 1}, "forbidden")
        await a.error({"type": "history", "room": "private:b", "ref": 2}, "forbidden")
        await a.error({"type": "message", "room": "private:b", "content": "x", "ref": 3}, "not_member")
        await a.request({"type": "history", "room": "private:a", "ref": 4}, "history")
        # Nothing of private:b reaches alice any more: bob's message there, then one in
        # the lobby, which is the next thing alice gets (fan-out keeps their order).
        await b.send({"type": "message", "room": "private:b", "content": "secret"})
        await b.send({"type": "message", "room": "lobby", "content": "barrier"})
        got = await a.expect("message")
        assert (got["room"], got["content"]) == ("lobby", "barrier")

    run(body)


def test_rs256_tokens_refresh_against_a_key_file(start_gateway, tmp_path):
    key, stranger = SigningKey("RS256", "k1"), SigningKey("ES256", "k2")
    (tmp_path / "rsa.pem").write_bytes(key.public_pem)
    gw = start_gateway("--jwt-public-key", str(tmp_path / "rsa.pem"))

    async def body():
        exp = now() + 20
        a = await gw.open(f"token={key.token(sub='alice', exp=exp)}")
        # Less is left than the default notice (30 s): noticed at once.
        assert await a.expect("refresh_needed") == {"type": "refresh_needed", "exp": exp}
        later = now() + 600
        assert await a.request(refresh(key.token(sub="alice", exp=later)), "refreshed") == {
            "type": "refreshed", "ref": "rf", "exp": later}
        # What no key here verifies: a key it does not hold; the HS256 forgery whose HMAC
        # key is the public key.
        await a.error(refresh(stranger.token(sub="alice", exp=later), "es"), "invalid_field")
        forged = hs256_keyed_with(key.public_pem, {"sub": "alice", "exp": later})
        await a.error(refresh(forged, "hs"), "invalid_field")
        await a.ping()
        _, _, metrics = await asyncio.to_thread(gw.http, "GET", "/metrics")
        text = metrics.decode()
        for line in ['wsgate_frames_in_total{type="refresh"} 3',
                     'wsgate_frames_out_total{type="refresh_needed"} 1',
                     'wsgate_frames_out_total{type="refreshed"} 1']:
            assert line in text, line

    run(body)


def test_development_mode_has_no_token_to_refresh(start_gateway):
    gw = start_gateway()

    async def body():
        a = await gw.connect("alice")
        err = await a.error(refresh(tok("alice", now() + 600)), "forbidden")
        assert "development mode" in err["message"], err
        await a.ping()

    run(body)


def test_refresh_counts_against_the_rate_limit(start_gateway):
    gw = start_gateway("--jwt-secret", SECRET, "--rate-limit", "1")

    async def body():
        a = await gw.open(f"token={tok('alice', now() + 600)}")
        later = now() + 900
        # The bucket holds two frames (twice the rate): the third is refused.
        for i in range(3):
            await a.send(refresh(tok("alice", later), f"r{i}"))
        answers = await a.recv_n(3)
        assert [f["type"] for f in answers] == ["refreshed", "refreshed", "error"], answers
        assert (answers[2]["code"], answers[2]["ref"]) == ("rate_limited", "r2")

    run(body)


def test_the_notice_flag_is_bounded():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    proc = subprocess.run(
        [str(binary()), "--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--refresh-notice-s", "86401"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=5, env=clean,
    )
    assert proc.returncode == 2 and "--refresh-notice-s" in proc.stderr, proc
