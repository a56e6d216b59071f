"""The cluster in front of users: deploy/cluster.sh (Redis, wsgate nodes, nginx),
reached through nginx by clients bound to different loopback source addresses."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from harness import binary, run

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "deploy" / "cluster.sh"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WAIT = 20.0


def free_base(span: int = 8) -> int:
    """A port such that base..base+span are all free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        socks = []
        try:
            for p in range(base, base + span):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


class Cluster:
    """A cluster made by the launcher; `down` (and a PID sweep) when the test ends."""

    def __init__(self, nodes: int, node_args: str = "") -> None:
        self.port = free_base()
        self.dir = Path(tempfile.mkdtemp(prefix="wsgate-cluster-"))
        self.env = {
            **os.environ,
            "CLUSTER_PORT": str(self.port),
            "CLUSTER_DIR": str(self.dir),
            "WSGATE_BIN": str(binary()),
            "WSGATE_NODE_ARGS": node_args,
        }
        self.sh("up", str(nodes))

    def sh(self, *args: str) -> str:
        out = subprocess.run(
            [str(LAUNCHER), *args], env=self.env, capture_output=True, text=True, timeout=180
        )
        assert out.returncode == 0, f"cluster.sh {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def url(self, query: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?{query}"

    def node_port(self, i: int) -> int:
        return self.port + 1 + i

    def pid(self, name: str) -> int:
        return int((self.dir / f"{name}.pid").read_text())

    def down(self) -> None:
        subprocess.run([str(LAUNCHER), "down"], env=self.env, capture_output=True, timeout=120)
        # Whatever survived `down` (a failed test may have left it half-way) goes by PID.
        for pidfile in self.dir.glob("*.pid"):
            try:
                os.kill(int(pidfile.read_text()), 9)
            except (ValueError, ProcessLookupError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster():
    made: list[Cluster] = []

    def make(nodes: int = 3, node_args: str = "") -> Cluster:
        c = Cluster(nodes, node_args)
        made.append(c)
        return c

    yield make
    for c in made:
        c.down()


async def connect(url: str, src: str = "127.0.0.1") -> tuple[Any, dict]:
    ws = await websockets.connect(
        url,
        local_addr=(src, 0),
        open_timeout=5,
        ping_interval=None,
        proxy=None,
        compression=None,
        # Frames a test does not read must not stall the connection (or its close).
        max_queue=None,
        close_timeout=2,
    )
    welcome = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert welcome["type"] == "welcome"
    return ws, welcome


async def next_of(ws: Any, kind: str) -> dict:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if frame["type"] == kind:
            return frame


class Reader:
    """A room member that reconnects through nginx (from its own source address) and
    rejoins with `since` and `epoch` whenever its connection drops."""

    def __init__(self, c: Cluster, src: str, room: str) -> None:
        self.c, self.src, self.room = c, src, room
        self.seen: list[str] = []
        self.nodes: list[str] = []
        self.closes: list[int | None] = []
        self.epoch: str | None = None
        self.ready = asyncio.Event()
        self.ws: Any = None

    async def run(self, expected: asyncio.Future) -> None:
        while True:
            try:
                self.ws, welcome = await connect(self.c.url(f"user_id=r-{self.src}"), self.src)
            except (OSError, ConnectionClosed, asyncio.TimeoutError, websockets.InvalidStatus):
                await asyncio.sleep(0.1)
                continue
            self.nodes.append(welcome["node_id"])
            join: dict[str, Any] = {"type": "join", "room": self.room}
            if self.epoch is not None:
                join.update(since=self.seen[-1] if self.seen else "0-0", epoch=self.epoch)
            try:
                await self.ws.send(json.dumps(join))
                while True:
                    if expected.done() and len(self.seen) >= len(expected.result()):
                        await self.ws.close()
                        return
                    try:
                        frame = json.loads(await asyncio.wait_for(self.ws.recv(), 0.5))
                    except asyncio.TimeoutError:
                        continue  # the caller's deadline bounds the whole run
                    if frame["type"] == "joined":
                        if self.epoch is not None:
                            assert frame["recovered"] is True, frame
                        self.epoch = frame["epoch"]
                        self.ready.set()
                    elif frame["type"] == "message":
                        self.seen.append(frame["id"])
            except ConnectionClosed as e:
                self.closes.append(e.rcvd.code if e.rcvd is not None else None)


async def publish(c: Cluster, node: int, room: str, n: int, pause: float = 0.01,
                  during: Any = None) -> list[str]:
    """Publishes `n` messages straight to node `node` (not through nginx), one at a time;
    calls `during()` once, halfway. Returns the acked ids."""
    ws, _ = await connect(f"ws://127.0.0.1:{c.node_port(node)}/ws?user_id=publisher")
    await ws.send(json.dumps({"type": "join", "room": room}))
    await next_of(ws, "joined")
    ids = []
    for i in range(n):
        await ws.send(json.dumps({"type": "message", "room": room, "content": f"m{i}", "ref": i}))
        ids.append((await next_of(ws, "ack"))["id"])
        if during is not None and i == n // 2:
            await during()
        await asyncio.sleep(pause)
    await ws.close()
    return ids


def test_nginx_accepts_the_shipped_and_the_generated_config(cluster):
    c = cluster(1)
    gen = subprocess.run([NGINX, "-t", "-p", f"{c.dir}/", "-c", str(c.dir / "nginx.conf")],
                         capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    # The shipped file names the compose service `gateway`, which only Docker's DNS
    # resolves; on the host it is checked with that one name pointed at loopback.
    with tempfile.TemporaryDirectory() as d:
        shipped = (REPO / "nginx" / "nginx.conf").read_text()
        assert "server gateway:8080" in shipped
        conf = Path(d) / "nginx.conf"
        conf.write_text(shipped.replace("server gateway:8080", "server 127.0.0.1:8080"))
        out = subprocess.run([NGINX, "-t", "-p", f"{d}/", "-c", str(conf)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_sticky_by_address_spread_across_nodes_and_chat_across_them(cluster):
    c = cluster(3)

    async def body():
        same = [await connect(c.url("user_id=a")) for _ in range(4)]
        assert len({w["node_id"] for _, w in same}) == 1, "one source address, one node"
        members = []
        for i in range(2, 40):
            members.append(await connect(c.url(f"user_id=u{i}"), f"127.0.0.{i}"))
        nodes = {w["node_id"] for _, w in members}
        assert len(nodes) == 3, f"40 addresses should reach all 3 nodes: {nodes}"
        # Stickiness holds per address: reconnecting from the same one lands on the same node.
        ws, w = await connect(c.url("user_id=again"), "127.0.0.7")
        assert w["node_id"] == members[5][1]["node_id"]
        await ws.close()
        for ws, _ in members:
            await ws.send(json.dumps({"type": "join", "room": "chat"}))
            await next_of(ws, "joined")
        sender = members[0][0]
        await sender.send(json.dumps({"type": "message", "room": "chat", "content": "hello", "ref": 1}))
        ids = set()
        for ws, _ in members:
            ids.add((await next_of(ws, "message"))["id"])
        assert len(ids) == 1, "every member on every node got the same message"
        await asyncio.gather(*(ws.close() for ws, _ in same + members))

    run(body, timeout=120)


def test_a_killed_node_s_clients_come_back_through_nginx_and_miss_nothing(cluster):
    c = cluster(3, "--heartbeat-ms 2000 --rate-limit 1000")

    async def body():
        readers = [Reader(c, f"127.0.0.{i}", "r") for i in range(2, 26)]
        expected: asyncio.Future = asyncio.get_running_loop().create_future()
        tasks = [asyncio.create_task(r.run(expected)) for r in readers]
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in readers)), WAIT)
        by_node: dict[str, list[Reader]] = {}
        for r in readers:
            by_node.setdefault(r.nodes[0], []).append(r)
        # Kill the node holding the most readers that is not node 1 (the publisher's).
        victim = max((n for n in by_node if n != "gw-1"), key=lambda n: len(by_node[n]))
        assert by_node[victim], by_node

        async def kill() -> None:
            os.kill(c.pid(victim), 9)

        ids = await publish(c, 1, "r", 200, during=kill)
        expected.set_result(ids)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for r in readers:
            assert r.seen == ids, f"{r.src} on {r.nodes}: {len(r.seen)} seen, duplicates or gaps"
        moved = [r for r in by_node[victim]]
        assert all(len(r.nodes) >= 2 and r.nodes[-1] != victim for r in moved), [r.nodes for r in moved]

    run(body, timeout=150)


def test_scaling_up_and_down_loses_nothing(cluster):
    c = cluster(3, "--rate-limit 1000")

    async def body():
        readers = [Reader(c, f"127.0.0.{i}", "s") for i in range(2, 14)]
        expected: asyncio.Future = asyncio.get_running_loop().create_future()
        tasks = [asyncio.create_task(r.run(expected)) for r in readers]
        await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in readers)), WAIT)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, c.sh, "scale", "4")
        # New connections may now land on gw-4: add readers until one does.
        late = []
        for i in range(14, 120):
            r = Reader(c, f"127.0.0.{i}", "s")
            late.append(r)
            tasks.append(asyncio.create_task(r.run(expected)))
            await asyncio.wait_for(r.ready.wait(), WAIT)
            if r.nodes[0] == "gw-4":
                break
        on_4 = [r for r in late if r.nodes[0] == "gw-4"]
        assert on_4, "no address hashed to the new node"

        async def scale_down() -> None:
            await loop.run_in_executor(None, c.sh, "scale", "3")

        ids = await publish(c, 1, "s", 120, during=scale_down)
        expected.set_result(ids)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for r in readers + late:
            assert r.seen == ids, f"{r.src} on {r.nodes}: {len(r.seen)} of {len(ids)}"
        for r in readers:
            assert r.closes == [], f"{r.src} on a surviving node was disconnected: {r.closes}"
        for r in on_4:
            assert r.closes == [1001], r.closes
            assert r.nodes[-1] != "gw-4"

    run(body, timeout=180)


def test_an_sse_stream_resumes_through_nginx_after_its_node_is_killed(cluster):
    from backend_harness import SseStream

    c = cluster(3, "--heartbeat-ms 2000 --rate-limit 1000")

    class Door:  # what SseStream needs of a gateway: its address (here: nginx)
        addr = f"127.0.0.1:{c.port}"

    async def opening(stream: SseStream) -> None:
        # nginx consumes the gateway's X-Accel-Buffering header (it is meant for
        # nginx), so the opening is checked here without it.
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert (await stream.next_block()).fields == {"retry": "3000"}
        assert set((await stream.next_block()).fields) == {"id"}

    async def body():
        # Host clients all come from 127.0.0.1: this WebSocket shows the SSE's node.
        probe, w = await connect(c.url("user_id=probe"))
        node = w["node_id"]
        await probe.close()
        other = next(i for i in (1, 2, 3) if f"gw-{i}" != node)
        sse = await SseStream.open(Door, "rooms=feed&user_id=ticker")
        await opening(sse)
        first = await publish(c, other, "feed", 10)
        got = await sse.events(10)
        assert [b.data["id"] for b in got] == first
        cursor = got[-1].id
        await sse.close()
        os.kill(c.pid(node), 9)
        missed = await publish(c, other, "feed", 10)
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            again = await SseStream.open(Door, "rooms=feed&user_id=ticker", {"Last-Event-ID": cursor})
            if again.status == 200:
                break
            await again.close()
            assert asyncio.get_running_loop().time() < deadline, "no node took the stream back"
            await asyncio.sleep(0.2)
        await opening(again)
        resumed = await again.events(10)
        assert [b.event for b in resumed] == ["message"] * 10
        assert [b.data["id"] for b in resumed] == missed, "exactly the missed events, in order"
        await again.close()

    run(body, timeout=120)
