"""Node loss against real processes: 3 gateway nodes on one ``redis-server``, users
of one room on every node (Python ``websockets``), a back end publishing into the room.
A node killed with ``kill -9`` leaves presence cluster-wide within the documented bound
(1.5 heartbeat intervals, then one reap), each of its users announced ``leave`` once;
a node restarted at once under the same id clears what its previous life left before
it takes a join, so it never shows a member who is not connected anywhere."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Callable

import pytest

from backend_harness import RedisServer, kill, key_flags
from harness import WAIT, Client, Gateway, run
from test_gap_repair import Publisher, wait_ready

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

ROOM = "gap"  # the room the shared Publisher writes to
HEARTBEAT_MS = 2000
#: The documented bound (docs/operations.md): a dead node's alive key expires at most
#: one heartbeat after its last renewal, a survivor looks every half interval.
BOUND_S = 1.5 * HEARTBEAT_MS / 1000
#: What the reap itself and this machine's noise may add.
SLACK_S = 3.0
PER_NODE = 8


class Watcher:
    """A member on one node that pages ``members`` and keeps every presence event."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[dict] = []

    async def members(self) -> set[str]:
        ids: set[str] = set()
        cursor = None
        while True:
            frame = {"type": "members", "room": ROOM, "limit": 100}
            if cursor is not None:
                frame["cursor"] = cursor
            await self.client.send(frame)
            while True:
                f = await self.client.recv()
                if f["type"] == "members":
                    break
                if f["type"] == "presence":
                    self.events.append(f)
            ids |= {m["user_id"] for m in f["members"]}
            cursor = f["next_cursor"]
            if cursor is None:
                return ids

    def leaves(self) -> list[str]:
        return [e["user"]["user_id"] for e in self.events if e["event"] == "leave"]

    async def leaves_after(self, expected: list[str], within: float = WAIT) -> list[str]:
        """The leaves seen, sorted, once ``expected`` all arrived (a page can show a
        member gone before the `leave` published after it is read)."""
        deadline = time.monotonic() + within
        while not set(expected) <= set(self.leaves()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            f = await self.client.recv(timeout=left)
            if f["type"] == "presence":
                self.events.append(f)
        return sorted(self.leaves())


def node(redis: RedisServer, start: Callable[..., Gateway], i: int) -> Gateway:
    return start("--redis-url", redis.url, "--node-id", f"n{i}", "--heartbeat-ms", str(HEARTBEAT_MS),
                 *key_flags())


#: Readers that keep the members' sockets drained (held so they are not collected).
_drains: set[asyncio.Task] = set()


async def _drain(c: Client) -> None:
    """Reads and drops what a member gets: a member that never read would be closed as
    a slow consumer once the publisher's messages filled its buffers (a slow machine
    makes the test long enough), and leave the room for a reason not under test."""
    try:
        while True:
            await c.ws.recv()
    except Exception:
        return


async def users_on(gw: Gateway, prefix: str) -> list[Client]:
    out = []
    for j in range(PER_NODE):
        c = await gw.connect(f"{prefix}{j}")
        await c.request({"type": "join", "room": ROOM}, "joined")
        task = asyncio.create_task(_drain(c))
        _drains.add(task)
        task.add_done_callback(_drains.discard)
        out.append(c)
    return out


async def converge(watchers: list[Watcher], expected: set[str], within: float) -> float:
    """Seconds until every watcher pages exactly ``expected``; fails past ``within``."""
    t0 = time.monotonic()
    while True:
        seen = [await w.members() for w in watchers]
        if all(s == expected for s in seen):
            return time.monotonic() - t0
        if time.monotonic() - t0 > within:
            extra = [sorted(s - expected) for s in seen]
            missing = [sorted(expected - s) for s in seen]
            raise AssertionError(f"not converged in {within:.1f} s: extra {extra}, missing {missing}")
        await asyncio.sleep(0.1)


def test_killed_nodes_leave_presence_within_the_bound_and_a_same_id_restart_shows_no_stale_member(
    redis: RedisServer, start_gateway: Callable[..., Gateway]
) -> None:
    nodes = [node(redis, start_gateway, i) for i in (1, 2, 3)]

    async def body() -> None:
        for gw in nodes:
            await wait_ready(gw)
        groups = [await users_on(gw, f"u{i}-") for i, gw in enumerate(nodes, 1)]
        watchers = [Watcher(await nodes[i].connect(f"w{i + 1}")) for i in range(2)]
        for w in watchers:
            await w.client.request({"type": "join", "room": ROOM}, "joined")
        everyone = {f"u{i}-{j}" for i in (1, 2, 3) for j in range(PER_NODE)} | {"w1", "w2"}
        await converge(watchers, everyone, WAIT)
        pub = Publisher(nodes[:1])

        # kill -9 of n3, and n3 back at once under the same id: before it serves a
        # join, its previous life's members are gone.
        kill(nodes[2])
        t0 = time.monotonic()
        n3 = node(redis, start_gateway, 3)
        await wait_ready(n3)
        fresh = Watcher(await n3.connect("x3"))
        joined = await fresh.client.request({"type": "join", "room": ROOM}, "joined")
        alive = everyone - {f"u3-{j}" for j in range(PER_NODE)} | {"x3"}
        listed = {m["user_id"] for m in joined["members"]}
        assert listed <= alive, f"stale members on the restarted node: {sorted(listed - alive)}"
        assert await fresh.members() == alive
        await converge(watchers, alive, BOUND_S + SLACK_S)
        print(f"n3's old members gone everywhere {time.monotonic() - t0:.2f} s after kill -9 and restart")
        gone = sorted(f"u3-{j}" for j in range(PER_NODE))
        for w in watchers:
            leaves = await w.leaves_after(gone)
            assert leaves == gone, f"leaves: {leaves}"

        # kill -9 of n2, not restarted: the survivors (n1 and the new n3) reap it
        # within the bound.
        for w in watchers[:1] + [fresh]:
            w.events.clear()
        kill(nodes[1])
        t1 = time.monotonic()
        alive -= {f"u2-{j}" for j in range(PER_NODE)} | {"w2"}
        took = await converge([watchers[0], fresh], alive, BOUND_S + SLACK_S)
        print(f"n2's members gone on the survivors {time.monotonic() - t1:.2f} s after kill -9 "
              f"(bound {BOUND_S:.1f} s + reap)")
        assert took <= BOUND_S + SLACK_S
        gone = sorted([f"u2-{j}" for j in range(PER_NODE)] + ["w2"])
        assert await watchers[0].leaves_after(gone) == gone
        pub.stop.set()
        await asyncio.wait_for(pub.task, WAIT)
        assert pub.accepted, "the back end published throughout"
        del groups
        await Client.close_all()

    run(body(), timeout=120)
