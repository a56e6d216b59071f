"""Publishing through a Redis failover, and what every subscriber must end with: every
acknowledged message once, in order; nothing that was neither acknowledged nor
refused with ``unavailable``. Shared by the Redis Cluster and Sentinel tests."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from harness import Client


async def publish_through_failover(
    pub: Client,
    subs: list[Client],
    room: str,
    *,
    kill: Callable[[], None],
    failed_over: Callable[[], bool],
    restart: Callable[[], None],
    before: int = 20,
    after: int = 20,
    require_refusal: bool = True,
) -> tuple[list[tuple[str, str]], list[str]]:
    """``pub`` publishes to ``room`` one message at a time; after ``before`` are
    acknowledged, ``kill()`` (the room's master); once publishes were refused and
    ``failed_over()``, ``restart()`` (the killed node comes back, as a replica, so
    ``--redis-wait-replicas 1`` can be met again); stops ``after`` acknowledgements
    later (without ``require_refusal``, as soon as it ``failed_over()``, refused or not).
    Then checks every subscriber's view. Returns (acked (content, id), refused)."""
    await pub.join_first(room)
    for s in subs:
        await s.send({"type": "join", "room": room})
        await s.recv_until("joined")
    acked: list[tuple[str, str]] = []
    refused: list[str] = []
    killed_at = None
    restarted = False
    deadline = time.monotonic() + 90
    i = 0
    while time.monotonic() < deadline:
        if killed_at is None and len(acked) == before:
            await asyncio.to_thread(kill)
            killed_at = len(acked)
        if (killed_at is not None and not restarted and (refused or not require_refusal)
                and await asyncio.to_thread(failed_over)):
            await asyncio.to_thread(restart)
            restarted = True
        if restarted and len(acked) >= killed_at + after:
            break
        content = f"m{i}"
        await pub.send({"type": "message", "room": room, "content": content, "ref": i})
        while True:
            f = await pub.recv(timeout=15)
            if f.get("ref") == i:
                break
        if f["type"] == "ack":
            acked.append((content, f["id"]))
        else:
            assert (f["type"], f["code"]) == ("error", "unavailable"), f
            refused.append(content)
            await asyncio.sleep(0.05)
        i += 1
    assert killed_at is not None and len(acked) >= killed_at + after, (len(acked), refused)
    assert refused or not require_refusal
    await check_views(subs, room, acked, refused)
    return acked, refused


async def check_views(subs: list[Client], room: str, acked: list[tuple[str, str]], refused: list[str]) -> None:
    """Each subscriber's view of the room, kept as a client keeps it (live messages
    appended in order; on ``resync``, reloaded from ``history``: the node could not
    vouch for an exact refill because it had delivered a message that was refused and
    then lost with its master), holds every acknowledged message once, in order, and
    nothing else but refused ones."""
    want = {c for c, _ in acked}
    resyncs = 0
    trace: list[str] = []
    for s in subs:
        view: list[dict] = []

        async def everything(s=s, view=view):
            nonlocal resyncs
            while not want <= {m["content"] for m in view}:
                f = await s.recv(timeout=30)
                if f["type"] == "resync":
                    resyncs += 1
                    trace.append(f"resync {f} after {[m['content'] for m in view]}")
                    await s.send({"type": "history", "room": room, "limit": 100, "ref": "h"})
                    live, h = await s.recv_until("history")
                    view[:] = h["messages"]
                    trace.append(f"history {[(m['content'], m['id']) for m in h['messages']]} more {h.get('more')}")
                    for m in live:
                        if m["type"] == "message" and m["id"] not in {v["id"] for v in view}:
                            view.append(m)
                    continue
                assert f["type"] in ("message", "presence", "presence_count"), f
                if f["type"] == "message" and f["id"] not in {m["id"] for m in view}:
                    view.append(f)
            return True

        try:
            await asyncio.wait_for(everything(), 60)
        except TimeoutError:
            have = {m["content"] for m in view}
            raise AssertionError(f"never arrived: {sorted(want - have)} (resyncs {resyncs}, acked {acked}, refused {refused}, {trace})")
        contents = [m["content"] for m in view]
        ids = [tuple(int(x) for x in m["id"].split("-")) for m in view]
        assert ids == sorted(set(ids)), f"out of order or twice: {contents}"
        assert len(contents) == len(set(contents)), contents
        assert [c for c in contents if c in want] == [c for c, _ in acked], contents
        # What else is there was refused (a publish whose answer was lost may have
        # been stored): never one that was neither.
        assert set(contents) - want <= set(refused), contents
    print(f"acked {len(acked)}, refused {len(refused)}, resyncs {resyncs}")
