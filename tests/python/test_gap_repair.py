"""Gaps repaired in place, against real processes: 3 gateway nodes on one
``redis-server``, members of one room on every node (Python ``websockets``), and a
back end publishing into the room at about 200 messages a second through every node.
While it publishes, Redis drops the nodes' Pub/Sub links (``CLIENT KILL TYPE pubsub``,
five times) or restarts, with or without persistence. Every member must end with
every accepted message exactly once, in order, on the connection it started with; when
Redis lost its data, every member is told ``resync`` and nothing is missing silently.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from typing import Any, Callable

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from backend_harness import (
    API_KEY,
    RedisServer,
    key_flags,
    open_sse,
    parse_cursor_epochs,
    publish_room,
    run_backend,
)
from harness import WAIT, Client, Gateway, poll, run

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

ROOM = "gap"
#: The publishing rate asked for (messages per second).
RATE = 200


class Member:
    """One member of the room: a task reads everything it gets."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.session = client.welcome["session_id"]
        self.frames: list[dict[str, Any]] = []
        self.closed: str | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.client.recv(timeout=3600)
                if frame["type"] in ("publish", "resync"):
                    self.frames.append(frame)
        except ConnectionClosed as e:
            self.closed = f"closed: {e}"
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.closed = f"reader failed: {e!r}"

    def ids(self, ambiguous: set[int] = frozenset()) -> list[str]:
        """Ids of the messages received, less those whose publish was answered 503."""
        return [f["id"] for f in self.frames if f["type"] == "publish" and f["data"]["n"] not in ambiguous]

    def resyncs(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "resync"]


class Publisher:
    """Publishes ``{"n": i}`` into the room at ``RATE`` a second, through each node in
    turn; records the ids of accepted messages and counts refusals (503)."""

    def __init__(self, nodes: list[Gateway]) -> None:
        self.nodes = nodes
        self.accepted: list[tuple[str, int]] = []
        #: Publishes answered 503. One sent while Redis shut down may still have been
        #: stored (its reply was lost with the connection): members may get those.
        self.refused: set[int] = set()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(WAIT)) as http:
            n = 0
            start = time.monotonic()
            while not self.stop.is_set():
                gw = self.nodes[n % len(self.nodes)]
                res = await http.post(f"http://{gw.addr}/api/publish", headers=headers,
                                      json={"room": ROOM, "data": {"n": n}})
                if res.status_code == 200:
                    self.accepted.append((res.json()["id"], n))
                else:
                    assert res.status_code == 503, (res.status_code, res.text)
                    assert res.json()["error"]["code"] == "unavailable", res.text
                    self.refused.add(n)
                n += 1
                # Paced to RATE, without catching up in bursts after a slow answer.
                ahead = start + n / RATE - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                else:
                    start = time.monotonic() - n / RATE

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, WAIT)


def metric(gw: Gateway, name: str) -> float:
    status, _, body = gw.http("GET", "/metrics")
    assert status == 200
    m = re.search(rf"^wsgate_{name}(?:_total)? ([0-9.e+]+)$", body.decode(), re.M)
    assert m, f"no {name} in /metrics"
    return float(m.group(1))


def start_cluster(redis: RedisServer, start_gateway: Callable[..., Gateway]) -> list[Gateway]:
    return [start_gateway("--redis-url", redis.url, "--node-id", f"g{i}", *key_flags()) for i in (1, 2, 3)]


async def members_on(nodes: list[Gateway], per_node: int = 2) -> list[Member]:
    out = []
    for i, gw in enumerate(nodes):
        for j in range(per_node):
            c = await gw.connect(f"m{i}{j}")
            await c.request({"type": "join", "room": ROOM}, "joined")
            out.append(Member(c))
    return out


async def wait_ready(gw: Gateway) -> None:
    async def ready():
        status, _, _ = await asyncio.to_thread(gw.http, "GET", "/readyz")
        return True if status == 200 else None

    await poll(ready, timeout=WAIT * 2)


async def settle(members: list[Member], expected: list[str], ambiguous: set[int] = frozenset()) -> None:
    """Waits until every member holds every id of ``expected`` (a message whose publish
    was answered 503 may come too, and must not count towards it)."""
    want = set(expected)

    async def done():
        return True if all(want <= set(m.ids(ambiguous)) or m.closed for m in members) else None

    try:
        await poll(done, timeout=WAIT * 2)
    except (AssertionError, TimeoutError, asyncio.TimeoutError):
        pass  # the exact comparison below says what is missing


def assert_exact(members: list[Member], expected: list[str], ambiguous: set[int] = frozenset()) -> None:
    for m in members:
        assert m.closed is None, f"{m.session}: {m.closed}"
        every = m.ids()
        assert len(every) == len(set(every)) and every == sorted(every, key=_key), f"{m.session}: duplicates or disorder"
        got = m.ids(ambiguous)
        assert m.resyncs() == [], f"{m.session}: unexpected {m.resyncs()}"
        if got != expected:
            missing = sorted(set(expected) - set(got))
            dup = len(got) - len(set(got))
            raise AssertionError(
                f"{m.session}: {len(got)} of {len(expected)} messages, {len(missing)} missing "
                f"(first {missing[:5]}), {dup} duplicated, in order: {got == sorted(got, key=_key)}"
            )


def _key(msg_id: str) -> tuple[int, int]:
    ms, seq = msg_id.split("-")
    return int(ms), int(seq)


def test_pubsub_kills_are_refilled_in_place(redis: RedisServer, start_gateway: Callable[..., Gateway]) -> None:
    nodes = start_cluster(redis, start_gateway)

    async def body() -> None:
        for gw in nodes:
            await wait_ready(gw)
        members = await members_on(nodes)
        refills_before = sum(metric(gw, "gap_refills") for gw in nodes)
        pub = Publisher(nodes)
        kills = 0
        for _ in range(5):
            await asyncio.sleep(0.7)
            killed = int(await asyncio.to_thread(redis.cmd, "CLIENT", "KILL", "TYPE", "pubsub"))
            assert killed >= 3, f"killed {killed} pub/sub links, expected one per node"
            kills += 1
            # The next kill hits the re-established links, not the reconnecting ones.
            await asyncio.to_thread(_wait_pubsub, redis, 3)
        await asyncio.sleep(0.7)
        await pub.finish()
        expected = [i for i, _ in pub.accepted]
        assert not pub.refused, "Redis itself stayed up: every publish is accepted"
        assert len(expected) >= 400, f"only {len(expected)} published"
        await settle(members, expected)
        assert_exact(members, expected)
        refills = sum(metric(gw, "gap_refills") for gw in nodes) - refills_before
        assert refills >= kills * len(nodes), f"{refills} rooms refilled for {kills} kills"
        assert sum(metric(gw, "gap_resyncs") for gw in nodes) == 0
        await Client.close_all()

    run(body(), timeout=120)


def _wait_pubsub(redis: RedisServer, n: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        listing = redis.cmd("CLIENT", "LIST", "TYPE", "pubsub")
        if len([line for line in listing.splitlines() if line.strip()]) >= n:
            return
        time.sleep(0.02)
    raise AssertionError("the nodes did not resubscribe in time")


def test_a_redis_restart_with_persistence_is_refilled_in_place(
    redis: RedisServer, start_gateway: Callable[..., Gateway]
) -> None:
    redis.persist = True
    redis.stop()
    redis.start()
    nodes = start_cluster(redis, start_gateway)

    async def body() -> None:
        for gw in nodes:
            await wait_ready(gw)
        members = await members_on(nodes)
        pub = Publisher(nodes)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(redis.start)
        for gw in nodes:
            await wait_ready(gw)
        await asyncio.sleep(1.0)
        await pub.finish()
        expected = [i for i, _ in pub.accepted]
        assert pub.refused, "publishes while Redis was down are refused, not lost"
        await settle(members, expected, pub.refused)
        assert_exact(members, expected, pub.refused)
        assert sum(metric(gw, "gap_refills") for gw in nodes) >= len(nodes)
        await Client.close_all()

    run(body(), timeout=120)


def test_a_redis_that_lost_its_data_tells_every_member_to_resync(
    redis: RedisServer, start_gateway: Callable[..., Gateway]
) -> None:
    nodes = start_cluster(redis, start_gateway)

    async def body() -> None:
        for gw in nodes:
            await wait_ready(gw)
        members = await members_on(nodes)
        pub = Publisher(nodes)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(redis.stop)
        before = len(pub.accepted)
        await asyncio.to_thread(redis.start)
        for gw in nodes:
            await wait_ready(gw)
        await asyncio.sleep(1.0)
        await pub.finish()
        old = [i for i, _ in pub.accepted[:before]]
        new = [i for i, _ in pub.accepted[before:]]
        assert new, "publishing went on after the restart"
        # The newest accepted message comes live (it is after any resync's last_id), and
        # a room's messages come in order: once it is there, everything is.
        await settle(members, new[-1:], pub.refused)
        for m in members:
            assert m.closed is None, f"{m.session}: {m.closed}"
            kinds = [f["type"] for f in m.frames]
            assert kinds.count("resync") == 1, f"{m.session}: {kinds.count('resync')} resyncs"
            at = kinds.index("resync")
            resync = m.frames[at]
            assert resync["room"] == ROOM and isinstance(resync["epoch"], str) and resync["epoch"]
            sure = [f["id"] if f["data"]["n"] not in pub.refused else None for f in m.frames[:at]]
            got_before = [i for i in sure if i is not None]
            got_after = [f["id"] for f in m.frames[at + 1:] if f["data"]["n"] not in pub.refused]
            # Before the resync: what arrived is in order, once, and was accepted.
            assert got_before == [i for i in old if i in set(got_before)], f"{m.session}: out of order"
            # After it: everything accepted since, once, in order, except what the
            # reload (history from `last_id` back) covers.
            last = resync["last_id"]
            assert got_after == [i for i in new if last is None or _key(i) > _key(last)], (
                f"{m.session}: after resync {len(got_after)} of {len(new)}"
            )
        assert sum(metric(gw, "gap_resyncs") for gw in nodes) >= len(nodes)
        # The reload works: the room's history answers in the new epoch.
        members[0].task.cancel()
        await asyncio.gather(members[0].task, return_exceptions=True)
        c = members[0].client
        hist = await c.request({"type": "history", "room": ROOM, "limit": 100}, "history")
        held = [f["id"] for f in hist["messages"] if f["data"]["n"] not in pub.refused]
        assert held == new[-len(held):] and len(held) == min(len(new), 100 - (len(hist["messages"]) - len(held)))
        await Client.close_all()

    run(body(), timeout=120)


def test_sse_streams_are_told_reset_and_their_cursor_names_the_epoch(
    redis: RedisServer, start_gateway: Callable[..., Gateway]
) -> None:
    """SSE: a live stream whose gap cannot be refilled gets ``reset`` in place (its
    cursor moves to the new epoch); a resume with a cursor of the lost epoch gets
    ``reset`` first, even though the new history holds ids after the cursor's."""
    gw = start_gateway("--redis-url", redis.url, *key_flags())

    async def body() -> None:
        await wait_ready(gw)
        sse, start = await open_sse(gw, "rooms=feed&user_id=s")
        first = await publish_room(gw, "feed", "before")
        [e] = await sse.events(1)
        assert e.data["id"] == first
        old_cursor = e.id
        (_, old_epoch) = parse_cursor_epochs(old_cursor)["feed"]
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(redis.start)
        await wait_ready(gw)
        reset = await sse.next_event()
        assert (reset.event, reset.data) == ("reset", {"type": "reset", "room": "feed"}), reset
        (at, new_epoch) = parse_cursor_epochs(reset.id)["feed"]
        assert at == "0-0" and new_epoch != old_epoch
        after = await publish_room(gw, "feed", "after")
        assert _key(after) > _key(first)
        [e] = await sse.events(1)
        assert (e.data["id"], parse_cursor_epochs(e.id)["feed"]) == (after, (after, new_epoch))
        await sse.close()
        # The old cursor's id is behind the new history's: without the epoch this
        # would resume "exactly" and skip nothing visible; with it, reset first.
        back, _ = await open_sse(gw, "rooms=feed&user_id=s", {"Last-Event-ID": old_cursor})
        reset = await back.next_event()
        assert reset.event == "reset", reset
        [e] = await back.events(1)
        assert e.data["id"] == after
        await back.close()

    run_backend(body, timeout=60)
