"""Clients and probes of a rolling restart through nginx, shared by the test
(test_rolling_restart.py) and the benchmark (crates/bench/deploy.py): a member that
honours the ``reconnect`` hint and ``Retry-After`` and rejoins exactly, and a watcher of
each node's new sessions per second."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import urllib.request
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

SOURCES = 30


class Member:
    """One client: reconnects after a drain as the hint says, rejoins exactly."""

    def __init__(self, c: Any, i: int, rooms: int) -> None:
        self.c = c
        self.user = f"u{i}"
        self.src = f"127.0.0.{2 + i % SOURCES}"
        self.room = f"r{i % rooms}"
        self.seen: list[str] = []
        self.numbers: dict[str, Any] = {}  # id → the publisher's `n`
        self.latencies: list[tuple[float, float]] = []  # (received, seconds since sent)
        self.epoch: str | None = None
        self.nodes: list[str] = []
        self.closes: list[int | None] = []
        self.unrecovered: list[dict] = []
        self.presence: list[tuple[float, str, str]] = []  # (when, event, user)
        self.known: set[str] = set()  # the room's users as this member sees them
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.ws: Any = None
        self.rejoined_at = 0.0
        self.closed_at = 0.0
        self.away: list[float] = []  # seconds from each close to the next `joined`

    async def open(self) -> dict:
        while True:
            try:
                self.ws = await websockets.connect(
                    self.c.url(f"user_id={self.user}"), local_addr=(self.src, 0), open_timeout=20,
                    ping_interval=None, proxy=None, compression=None, max_queue=None, close_timeout=2)
                return json.loads(await asyncio.wait_for(self.ws.recv(), 20))
            except InvalidStatus as e:
                # 503: a node over its accept rate (or draining) said when; 502/504:
                # nginx found no node answering in time (one is restarting).
                assert e.response.status_code in (502, 503, 504), e.response.status_code
                retry = int(e.response.headers.get("Retry-After", "1"))
                await asyncio.sleep(retry + random.random())
            except (OSError, ConnectionClosed, asyncio.TimeoutError):
                await asyncio.sleep(0.2 + random.random() * 0.3)

    async def run(self) -> None:
        delay = 0.0
        while not self.done.is_set():
            await asyncio.sleep(delay)
            welcome = await self.open()
            self.nodes.append(welcome["node_id"])
            join: dict[str, Any] = {"type": "join", "room": self.room}
            if self.epoch is not None:
                join.update(since=self.seen[-1] if self.seen else "0-0", epoch=self.epoch)
            delay = 0.0
            try:
                await self.ws.send(json.dumps(join))
                # Ends without an exception on a 1000/1001 close.
                async for raw in self.ws:
                    f = json.loads(raw)
                    t = f["type"]
                    if t == "publish":
                        self.seen.append(f["id"])
                        if isinstance(f["data"], dict):
                            self.numbers[f["id"]] = f["data"].get("n")
                        sent = f["data"].get("t") if isinstance(f["data"], dict) else None
                        if sent is not None:
                            self.latencies.append((time.monotonic(), time.time() - sent))
                    elif t == "presence":
                        who = f["user"]["user_id"]
                        self.presence.append((time.monotonic(), f["event"], who))
                        (self.known.add if f["event"] == "join" else self.known.discard)(who)
                    elif t == "joined":
                        self.known |= {u["user_id"] for u in f["members"]}
                        if self.epoch is not None and f["recovered"] is not True:
                            self.unrecovered.append(f)
                        self.epoch = f["epoch"]
                        self.rejoined_at = time.monotonic()
                        if self.closed_at:
                            self.away.append(self.rejoined_at - self.closed_at)
                            self.closed_at = 0.0
                        self.ready.set()
                    elif t == "reconnect":
                        delay = f["delay_ms"] / 1000
            except ConnectionClosed:
                pass
            if not self.done.is_set():
                self.closes.append(self.ws.close_code)
                self.closed_at = time.monotonic()

    async def stop(self) -> None:
        self.done.set()
        if self.ws is not None:
            await self.ws.close()


def connections_total(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^wsgate_connections_total(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else None


async def watch_handshakes(c: Any, stop: asyncio.Event) -> dict[int, float]:
    """Per node, the most new sessions admitted within any one second (polled every
    250 ms; a restarted node starts a new count)."""
    series: dict[int, list[tuple[float, float]]] = {i: [] for i in (1, 2, 3)}
    while not stop.is_set():
        for i in (1, 2, 3):
            v = await asyncio.to_thread(connections_total, c.node_port(i))
            if v is not None:
                series[i].append((time.monotonic(), v))
        await asyncio.sleep(0.25)
    peaks = {}
    for i, points in series.items():
        best = 0.0
        for j, (t, v) in enumerate(points):
            for t2, v2 in points[j + 1:]:
                if t2 - t > 1.0:
                    break
                if v2 >= v:
                    best = max(best, v2 - v)
        peaks[i] = best
    return peaks


class RoomPublisher:
    """A back end publishing ``{"n", "t"}`` round-robin into rooms ``r0…`` through
    ``port``'s ``/api/publish`` at ``rate`` a second; ``accepted`` holds each room's
    accepted ids in order, ``refused`` counts the rest."""

    def __init__(self, port: int, key: str, rooms: int, rate: float) -> None:
        self.port, self.key, self.rooms, self.rate = port, key, rooms, rate
        self.accepted: dict[str, list[str]] = {f"r{k}": [] for k in range(rooms)}
        self.refused = 0
        #: `n` of publishes not answered 200. One cut off by a node's exit may have been
        #: stored all the same (its answer was lost): members may get those.
        self.unanswered: set[int] = set()
        self.stopped = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        import httpx

        n = 0
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            t0 = time.monotonic()
            while not self.stopped.is_set():
                room = f"r{n % self.rooms}"
                try:
                    res = await http.post(f"http://127.0.0.1:{self.port}/api/publish",
                                          headers={"Authorization": f"Bearer {self.key}"},
                                          json={"room": room, "data": {"n": n, "t": time.time()}})
                    if res.status_code == 200:
                        self.accepted[room].append(res.json()["id"])
                    else:
                        self.refused += 1
                        self.unanswered.add(n)
                except httpx.HTTPError:
                    self.refused += 1
                    self.unanswered.add(n)
                n += 1
                ahead = t0 + n / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)

    async def stop(self) -> None:
        self.stopped.set()
        await self.task

    def sure(self, member: "Member") -> list[str]:
        """What ``member`` received, less the publishes whose answer was not a 200."""
        return [i for i in member.seen if member.numbers.get(i) not in self.unanswered]
