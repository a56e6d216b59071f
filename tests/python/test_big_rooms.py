"""Big rooms against real gateway processes, with a client no one here wrote
(Python ``websockets``): bounded ``joined``, ``members`` paging, count mode with
hysteresis, the presence grace, per-namespace options from a config file, and 2,000
distinct users joining one room through 3 nodes on Redis (exact counts on every node,
paging lists each user once, the reaper keeps them exact after a ``kill -9``)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from typing import Callable

import pytest

from backend_harness import RedisServer, kill
from harness import WAIT, Client, Gateway, poll, run


async def answer(c: Client, frame: dict, kind: str) -> dict:
    """Sends ``frame`` and returns its answer of type ``kind``; presence frames of
    the room may come before it (they are not ordered with answers), nothing else."""
    await c.send(frame)
    before, got = await c.recv_until(kind)
    assert all(f["type"] in ("presence", "presence_count") for f in before), before
    return got


async def error(c: Client, frame: dict, code: str) -> None:
    err = await answer(c, frame, "error")
    assert err["code"] == code, (frame, err)
    assert isinstance(err["message"], str) and err["message"]


async def page_all(c: Client, room: str, limit: int) -> tuple[list[str], int]:
    """Every user id ``members`` lists for ``room`` (pages of ``limit``), and the last
    page's count."""
    ids: list[str] = []
    cursor = None
    count = -1
    for _ in range(10_000):
        frame = {"type": "members", "room": room, "limit": limit}
        if cursor is not None:
            frame["cursor"] = cursor
        page = await answer(c, frame, "members")
        assert len(page["members"]) <= limit
        page_ids = [m["user_id"] for m in page["members"]]
        assert len(set(page_ids)) == len(page_ids), "a user twice in one page"
        ids += page_ids
        count = page["count"]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, count
    raise AssertionError("paging did not end")


async def quiet(c: Client, seconds: float) -> list[dict]:
    """Frames ``c`` receives within ``seconds`` (then a ping barrier proves the
    connection is alive and nothing else is queued)."""
    got: list[dict] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(await c.recv(left))
        except asyncio.TimeoutError:
            break
    await c.send({"type": "ping", "ref": "q"})
    before, _ = await c.recv_until("pong")
    return got + before


def test_joined_is_bounded_and_members_pages_each_user_once(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--joined-members", "5")

    async def body() -> None:
        clients = [await gw.connect(f"u{i:02}") for i in range(30)]
        for c in clients:
            joined = await c.request({"type": "join", "room": "hall"}, "joined")
        assert joined["presence"] == "full"
        assert joined["members_count"] == 30
        assert len(joined["members"]) == 5 and joined["members_more"] is True
        last = clients[-1]
        for limit in (1, 7, 1000):
            ids, count = await page_all(last, "hall", limit)
            assert sorted(ids) == [f"u{i:02}" for i in range(30)], limit
            assert count == 30
        # Bad requests are answered, never a hang or a close.
        await error(last, {"type": "members", "room": "hall", "cursor": "nonsense!"}, "invalid_field")
        await error(last, {"type": "members", "room": "hall", "limit": 0}, "invalid_field")
        await error(last, {"type": "members", "room": "hall", "limit": 1001}, "invalid_field")
        await error(last, {"type": "members", "room": "hall", "cursor": 5}, "invalid_field")
        # The first member saw each later arrival with the count after it.
        first = clients[0]
        counts = [f["count"] for f in await first.recv_n(30) if f["type"] == "presence"]
        assert counts == list(range(1, 31))

    run(body)


def test_a_room_past_presence_max_members_shows_a_count_with_hysteresis(start_gateway: Callable[..., Gateway]) -> None:
    # Past 4 users: count mode; back to full at 3 (nine tenths, rounded down).
    gw = start_gateway("--presence-max-members", "4")

    async def body() -> None:
        a = await gw.connect("a")
        await a.join_first("r")
        others = [await gw.connect(f"u{i}") for i in range(4)]
        for c in others[:3]:
            await c.request({"type": "join", "room": "r"}, "joined")
        joined = await others[3].request({"type": "join", "room": "r"}, "joined")
        assert (joined["presence"], joined["members_count"], joined["members"]) == ("count", 5, [])
        frames = await a.recv_n(3)
        assert [(f["type"], f["count"]) for f in frames] == [("presence", 2), ("presence", 3), ("presence", 4)]
        count = await a.expect("presence_count", timeout=WAIT)
        assert count == {"type": "presence_count", "room": "r", "count": 5}
        # 5 → 4: still over the limit (not down to 3 yet): a count.
        await others[3].close()
        assert (await a.expect("presence_count", timeout=WAIT))["count"] == 4
        # 4 → 3: back to full mode: a leave with its count.
        await others[2].close()
        leave = await a.expect("presence", timeout=WAIT)
        assert (leave["event"], leave["user"]["user_id"], leave["count"]) == ("leave", "u2", 3)
        # The paging still lists everyone, in any mode.
        ids, count = await page_all(a, "r", 2)
        assert sorted(ids) == ["a", "u0", "u1"] and count == 3

    run(body)


def test_a_reconnect_within_the_grace_announces_nothing(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--presence-grace-ms", "1500")

    async def body() -> None:
        a = await gw.connect("alice")
        await a.join_first("g")
        b = await gw.connect("bob")
        await b.request({"type": "join", "room": "g"}, "joined")
        assert (await a.expect("presence"))["event"] == "join"
        # Bob's connection drops and comes back within the grace: no leave, no join.
        await b.close()
        b = await gw.connect("bob")
        joined = await b.request({"type": "join", "room": "g"}, "joined")
        assert joined["members_count"] == 2
        assert [f for f in await quiet(a, 2.5) if f["type"] == "presence"] == []
        # Gone for good: the leave comes once the grace is over.
        t0 = time.monotonic()
        await b.close()
        leave = await a.expect("presence", timeout=WAIT)
        assert (leave["event"], leave["user"]["user_id"], leave["count"]) == ("leave", "bob", 1)
        assert time.monotonic() - t0 >= 1.3, "not before the grace"
        # An explicit leave is not delayed.
        c = await gw.connect("carol")
        await c.request({"type": "join", "room": "g"}, "joined")
        assert (await a.expect("presence"))["event"] == "join"
        t0 = time.monotonic()
        await answer(c, {"type": "leave", "room": "g"}, "left")
        assert (await a.expect("presence"))["event"] == "leave"
        assert time.monotonic() - t0 < 1.0

    run(body)


CONFIG = """
[namespaces.live]
presence = "count"
client_publish = false
max_members = 3

[namespaces.quiet]
presence = "off"

[namespaces.team]
private = true
"""


def test_namespace_options_from_the_config_file(start_gateway: Callable[..., Gateway]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(CONFIG)
    gw = start_gateway("--config", f.name, "--api-key", "k")

    async def body() -> None:
        users = [await gw.connect(f"u{i}") for i in range(4)]
        for c in users[:3]:
            joined = await c.request({"type": "join", "room": "live:final"}, "joined")
            assert joined["presence"] == "count" and joined["members"] == []
        assert joined["members_count"] == 3
        # max_members: a fourth user is refused; nothing was added.
        await error(users[3], {"type": "join", "room": "live:final"}, "room_full")
        await error(users[3], {"type": "message", "room": "live:final", "content": "x"}, "not_member")
        # A second session of a member is not a new user.
        again = await gw.connect("u0")
        assert (await answer(again, {"type": "join", "room": "live:final"}, "joined"))["members_count"] == 3
        # client_publish = false: clients may not write.
        await error(users[0], {"type": "message", "room": "live:final", "content": "hi"}, "forbidden")
        # The count arrives as presence_count, at most once a second; the last says 3.
        async def three():
            f = await users[1].expect("presence_count", timeout=WAIT)
            return True if f["count"] == 3 else None

        await poll(three)
        # presence = off: no count, no list, no paging.
        joined = await answer(users[0], {"type": "join", "room": "quiet:x"}, "joined")
        assert (joined["presence"], joined["members_count"], joined["members"]) == ("off", 0, [])
        await error(users[0], {"type": "members", "room": "quiet:x"}, "forbidden")
        # private = true: joins need a grant (none in development mode).
        await error(users[0], {"type": "join", "room": "team:core"}, "forbidden")
        await error(users[0], {"type": "join", "room": "private:x"}, "forbidden")
        # The default namespace is untouched.
        joined = await answer(users[0], {"type": "join", "room": "lobby"}, "joined")
        assert joined["presence"] == "full" and joined["members_count"] == 1

    run(body)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_two_thousand_users_join_one_room_through_three_nodes(
    redis: RedisServer, start_gateway: Callable[..., Gateway]
) -> None:
    """2,000 distinct users, 200 in flight, over 3 nodes on one Redis: every join is
    answered, each node counts exactly 2,000, paging on each node lists each user
    once, the room (over --presence-max-members 200) sends at most about one
    ``presence_count`` per second, and after one node is killed the reaper brings the
    count on the survivors to exactly the users left."""
    nodes = [
        start_gateway("--redis-url", redis.url, "--node-id", f"n{i}", "--heartbeat-ms", "10000",
                      "--max-connections", "5000", "--presence-max-members", "200")
        for i in (1, 2, 3)
    ]

    async def body() -> None:
        async def ready(gw: Gateway):
            status, _, b = await asyncio.to_thread(gw.http, "GET", "/readyz")
            return True if status == 200 and json.loads(b)["broker"] == "redis" else None

        for gw in nodes:
            await poll(lambda gw=gw: ready(gw))
        n = 2000
        watcher = await nodes[0].connect("watcher")
        await watcher.join_first("big")
        # The watcher reads all along (a member that stops reading is closed as a
        # slow consumer, by design).
        frames: list[dict] = []
        final = asyncio.Event()

        async def watch() -> None:
            while True:
                f = await watcher.recv(60)
                frames.append(f)
                if f["type"] == "presence_count" and f["count"] == n + 1:
                    final.set()
                    return

        gate = asyncio.Semaphore(200)
        drains: list[asyncio.Task] = []
        clients: list[Client | None] = [None] * n

        async def join(i: int) -> None:
            async with gate:
                c = await nodes[i % 3].connect(f"b{i:04}")
                joined = await c.request({"type": "join", "room": "big"}, "joined")
                assert joined["members_count"] >= 2 and len(joined["members"]) <= 100
                clients[i] = c
                # Members keep reading (and answering the heartbeat's pings).
                drains.append(asyncio.create_task(drain(c)))

        async def drain(c: Client) -> None:
            try:
                while True:
                    await c.ws.recv()
            except Exception:  # closed: the test's end, or its node was killed
                return

        watching = asyncio.create_task(watch())
        t0 = time.monotonic()
        await asyncio.gather(*(join(i) for i in range(n)))
        formed = time.monotonic() - t0
        try:
            await asyncio.wait_for(asyncio.shield(final.wait()), 2 * WAIT)
        except asyncio.TimeoutError:
            if watching.done() and watching.exception() is not None:
                raise AssertionError(f"the watcher stopped: {watching.exception()!r}")
            raise AssertionError(f"no final count: {[f for f in frames if f['type'] != 'presence'][-5:]}, {len(frames)} {[f.get('count') for f in frames[::50]]}")
        await watching
        # Exact on every node, and each user once across the pages.
        for gw in nodes:
            probe = await gw.connect(f"probe-{gw.addr}")
            ids, count = await page_all(probe, "big", 1000)
            closed = [(i, c.ws.close_code) for i, c in enumerate(clients) if c is not None and c.ws.close_code]
            assert count == n + 1, f"closed members (index, code): {closed[:20]} of {len(closed)}"
            assert len(ids) == len(set(ids)) == n + 1
            await probe.close()
        # The watcher saw full-mode presence up to the limit, then counts: at most
        # about one per second, the last carrying the final count.
        counts = [f for f in frames if f["type"] == "presence_count"]
        assert counts and counts[-1]["count"] == n + 1, counts[-3:]
        assert len(counts) <= time.monotonic() - t0 + 2, (len(counts), formed)
        assert sum(f["type"] == "presence" for f in frames) <= 200
        # kill -9 of n3: the survivors' count converges to the users left.
        kill(nodes[2])
        left = n + 1 - len(range(2, n, 3))

        async def converged():
            page = await answer(watcher, {"type": "members", "room": "big", "limit": 1}, "members")
            return True if page["count"] == left else None

        await poll(converged, timeout=60)
        ids, count = await page_all(watcher, "big", 1000)
        assert count == left and len(set(ids)) == left
        assert not any(u.startswith("b") and int(u[1:]) % 3 == 2 for u in ids)
        for t in drains:
            t.cancel()

    run(body, timeout=180)
