"""The front door under reloads: ``deploy/cluster.sh`` (Redis, nodes, nginx with the
shipped ``nginx/nginx.conf``), 300 WebSocket clients through nginx from 60 loopback
source addresses. nginx is reloaded twice under them: once as it is
(``cluster.sh reload``) and once to add a node (``cluster.sh scale 3``). No client is
dropped: each one is still open on the node it was on, answers a ping through nginx and
gets a room message published on the new node. Stickiness (``hash
$binary_remote_addr``) holds throughout: every connection lands on the node nginx's
hash names for its address among the nodes of the moment, so a reconnect after the
plain reload lands where it was, and after the scale wherever the hash over three
nodes says (the same node for the addresses whose hash falls the same way)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import websockets
from websockets.protocol import State

from harness import run
from test_launcher import cluster  # noqa: F401 - the fixture

ADDRESSES = [f"127.0.0.{i}" for i in range(2, 62)]
PER_ADDRESS = 5  # 300 clients
ROOM = "door"
WAIT = 20.0


def hashed_node(src: str, nodes: int) -> str:
    """The node nginx's ``hash $binary_remote_addr`` picks for ``src`` among ``gw-1`` …
    ``gw-N`` listed in that order (ngx_http_upstream_get_hash_peer's first try; it tries
    again elsewhere only for a node that is down, failed or answered 503)."""
    key = ipaddress.ip_address(src).packed
    return f"gw-{((zlib.crc32(key) >> 16) & 0x7FFF) % nodes + 1}"


def nginx_workers(c: Any) -> dict[int, str]:
    """nginx's workers: PID → "serving" (takes new connections) or "retiring" (a worker
    of the configuration before a reload, holding the connections it had)."""
    master = c.pid("nginx")
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rfind(")") + 2:].split()[1])
            if ppid != master:
                continue
            title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if "shutting down" in title:
            found[int(d.name)] = "retiring"
        elif "worker process" in title:
            found[int(d.name)] = "serving"
    return found


def active(c: Any, i: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{c.node_port(i)}/api/stats", timeout=5) as r:
        return json.loads(r.read())["active_connections"]


async def until(check, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def next_of(ws: Any, kind: str) -> dict:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if frame["type"] == kind:
            return frame


async def open_from(c: Any, src: str, user: str) -> tuple[Any, str]:
    """A WebSocket through nginx from ``src``; the node its ``welcome`` names."""
    ws = await websockets.connect(
        c.url(f"user_id={user}"), local_addr=(src, 0), open_timeout=WAIT, ping_interval=None,
        proxy=None, compression=None, max_queue=None, close_timeout=2)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert welcome["type"] == "welcome", welcome
    return ws, welcome["node_id"]


async def probe(c: Any) -> dict[str, list[str]]:
    """Two fresh connections from every address, closed again: the nodes they reached."""
    async def one(src: str) -> list[str]:
        reached = []
        for k in range(2):
            ws, node = await open_from(c, src, f"probe-{src}-{k}")
            reached.append(node)
            await ws.close()
        return reached

    got = await asyncio.gather(*(one(src) for src in ADDRESSES))
    return dict(zip(ADDRESSES, got))


def test_reloads_under_300_clients_drop_none_and_keep_them_sticky(cluster):  # noqa: F811
    # No accept-rate 503s (nginx would pass such a client on to the next node), no
    # presence (300 joins announced to 300 members would only slow the test down) and
    # no presence grace (a node's exit at the end would wait it out).
    c = cluster(2, "--accept-rate 0 --presence off --presence-grace-ms 0 --rate-limit 1000")

    async def body() -> None:
        t0 = time.monotonic()
        gate = asyncio.Semaphore(50)

        async def member(i: int) -> tuple[str, Any, str]:
            src = ADDRESSES[i % len(ADDRESSES)]
            async with gate:
                ws, node = await open_from(c, src, f"m{i}")
                await ws.send(json.dumps({"type": "join", "room": ROOM}))
                await next_of(ws, "joined")
            return src, ws, node

        members = await asyncio.gather(*(member(i) for i in range(len(ADDRESSES) * PER_ADDRESS)))
        wrong = [(src, node) for src, _, node in members if node != hashed_node(src, 2)]
        assert not wrong, f"{len(wrong)} clients not on their address's node: {wrong[:5]}"
        on = {f"gw-{i}": sum(1 for _, _, n in members if n == f"gw-{i}") for i in (1, 2)}
        assert min(on.values()) > 0, on
        connected_s = time.monotonic() - t0

        # 1. A reload with the node set unchanged: every address reconnects to the node
        #    it was on; the clients stay on the old workers.
        workers = int(re.search(r"^worker_processes (\d+);", (c.dir / "nginx.conf").read_text(),
                                re.M).group(1))
        first = nginx_workers(c)
        assert sorted(first.values()) == ["serving"] * workers, first
        await asyncio.to_thread(c.sh, "reload")
        after_reload = nginx_workers(c)
        assert set(first) & {p for p, s in after_reload.items() if s == "serving"} == set(), (
            "a worker of the old configuration still takes connections", first, after_reload)
        assert [p for p in first if after_reload.get(p) == "retiring"], (
            "the old workers that hold the clients should still be running", first, after_reload)
        again = await probe(c)
        moved = {src: nodes for src, nodes in again.items() if nodes != [hashed_node(src, 2)] * 2}
        assert not moved, f"reconnects after a plain reload landed elsewhere: {moved}"

        # 2. Scale to 3 nodes (gw-3 started, then nginx reloaded with it).
        await asyncio.to_thread(c.sh, "scale", "3")
        after_scale = nginx_workers(c)
        holders = [p for p in first if after_scale.get(p) == "retiring"]
        assert holders, ("the first workers, holding the 300 clients, were stopped", first, after_scale)
        dropped = [src for src, ws, _ in members if ws.state is not State.OPEN]
        assert not dropped, f"{len(dropped)} clients were disconnected by the reloads"

        # Stickiness under the new node list: exactly where the hash over 3 nodes says.
        third = await probe(c)
        off = {src: nodes for src, nodes in third.items() if nodes != [hashed_node(src, 3)] * 2}
        assert not off, f"reconnects after the scale off their address's node: {off}"
        kept = [src for src in ADDRESSES if third[src][0] == again[src][0]]
        assert len(kept) == sum(1 for s in ADDRESSES if hashed_node(s, 2) == hashed_node(s, 3))
        assert {nodes[0] for nodes in third.values()} == {"gw-1", "gw-2", "gw-3"}

        # 3. Every client is still served: a ping through nginx (both directions) and a
        #    message published by a client on the new node.
        async def ping(ws: Any, ref: int) -> None:
            await ws.send(json.dumps({"type": "ping", "ref": ref}))
            assert (await next_of(ws, "pong"))["ref"] == ref

        pings = await asyncio.gather(*(ping(ws, i) for i, (_, ws, _) in enumerate(members)),
                                     return_exceptions=True)
        lost = [repr(e) for e in pings if e is not None]
        assert not lost, f"{len(lost)} of {len(members)} clients lost after the reloads: {lost[:3]}"
        src3 = next(s for s in ADDRESSES if hashed_node(s, 3) == "gw-3")
        sender, node = await open_from(c, src3, "sender")
        assert node == "gw-3"
        await sender.send(json.dumps({"type": "join", "room": ROOM}))
        await next_of(sender, "joined")
        await sender.send(json.dumps({"type": "message", "room": ROOM, "content": "still here?",
                                      "ref": 1}))
        sent = (await next_of(sender, "ack"))["id"]
        got = await asyncio.gather(*(next_of(ws, "message") for _, ws, _ in members))
        assert [(m["id"], m["content"]) for m in got] == [(sent, "still here?")] * len(members)
        await sender.close()

        # The nodes hold exactly the 300 clients where they were (probes and sender gone).
        want = {1: on["gw-1"], 2: on["gw-2"], 3: 0}

        async def settled() -> bool:
            return {i: await asyncio.to_thread(active, c, i) for i in (1, 2, 3)} == want

        await until(settled, f"active connections per node {want}")
        assert all(ws.state is State.OPEN for _, ws, _ in members)
        await asyncio.gather(*(ws.close() for _, ws, _ in members))
        print(f"300 clients connected in {connected_s:.1f} s; held through a reload and a "
              f"scale to 3 ({len(kept)} of {len(ADDRESSES)} addresses kept their node for "
              f"new connections); whole test {time.monotonic() - t0:.1f} s")

    run(body, timeout=150)
