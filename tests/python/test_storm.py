"""Storm-safe deploys against real processes, with Python ``websockets`` clients: a
draining node closes its sessions one by one over ``--drain-spread-ms``, each after a
``reconnect`` hint, and every node admits at most ``--accept-rate`` new sessions a
second, refusing the rest with 503 and a jittered ``Retry-After`` so that a storm is
spread rather than refused forever."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Callable

from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import WAIT, Client, Gateway, poll, raw_connect, run


async def read_until_closed(c: Client) -> tuple[list[dict], int | None, float]:
    """Every frame until the server closes, the close code, and when it closed."""
    frames = []
    try:
        while True:
            frames.append(await c.recv(timeout=WAIT * 2))
    except ConnectionClosed as e:
        return frames, (e.rcvd.code if e.rcvd else None), time.monotonic()


def test_a_drain_spreads_its_closes_and_hints_each_client(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--drain-spread-ms", "2000", "--reconnect-window-ms", "700",
                       "--reconnect-url", "ws://127.0.0.1:9/ws")
    n = 100

    async def body() -> None:
        # In no room: each client gets its hint and its close and nothing else, so when
        # this (loaded) process reads a close is when it came, not when a backlog of
        # others' presence leaves let it be read.
        clients = [await gw.connect(f"d{i}") for i in range(n)]
        readers = [asyncio.create_task(read_until_closed(c)) for c in clients]
        await gw.wait_active(n)
        t0 = time.monotonic()
        gw.terminate()
        # While it drains (once it has seen the signal: /readyz says so), a new
        # handshake is refused, not queued.

        async def draining():
            status, _, _ = await asyncio.to_thread(gw.http, "GET", "/readyz")
            return True if status == 503 else None

        await poll(draining, timeout=5, every=0.01)
        refused = None
        try:
            await raw_connect(gw.url("user_id=late"))
        except InvalidStatus as e:
            refused = e.response.status_code
        assert refused == 503
        results = await asyncio.gather(*readers)
        assert gw.wait_exit() == 0
        closes = sorted(at - t0 for _, _, at in results)
        delays = []
        for frames, code, _ in results:
            assert code == 1001, code
            # The hint comes before the close.
            hints = [f for f in frames if f["type"] == "reconnect"]
            assert len(hints) == 1, frames[-3:]
            hint = hints[0]
            assert set(hint) == {"type", "delay_ms", "url", "reason"}, hint
            assert hint["reason"] == "draining" and hint["url"] == "ws://127.0.0.1:9/ws"
            assert 0 <= hint["delay_ms"] <= 700
            delays.append(hint["delay_ms"])
        # 100 sessions at 100 a second at least: spread over about one second, not
        # closed at once.
        assert closes[-1] - closes[0] >= 0.6, f"closed within {closes[-1] - closes[0]:.2f} s"
        busiest = max(sum(1 for t in closes if s <= t < s + 0.2) for s in closes)
        assert busiest <= n // 2, f"{busiest} of {n} closes within 200 ms"
        # The delays are drawn, not one value.
        assert len(set(delays)) > n // 4, sorted(delays)
        await Client.close_all()

    run(body(), timeout=60)


def test_admission_paces_a_storm_and_admits_everyone(start_gateway: Callable[..., Gateway]) -> None:
    rate = 100
    gw = start_gateway("--accept-rate", str(rate))
    n = 250

    async def body() -> None:
        admitted: list[float] = []
        retries: list[int] = []
        clients: list[Client] = []

        async def one(i: int) -> None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    c = await gw.connect(f"s{i}")
                    admitted.append(time.monotonic())
                    clients.append(c)
                    return
                except InvalidStatus as e:
                    res = e.response
                    assert res.status_code == 503, res.status_code
                    assert json.loads(res.body)["error"]["code"] == "unavailable"
                    wait = int(res.headers["Retry-After"])
                    assert 1 <= wait <= 30, wait
                    retries.append(wait)
                    assert time.monotonic() + wait < deadline, "refused for too long"
                    # As the clients shipped here do: the whole seconds asked for,
                    # plus up to one more at random (Retry-After has no fractions).
                    await asyncio.sleep(wait + random.random())

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        took = time.monotonic() - t0
        print(f"admitted {n} in {took:.2f} s with {len(retries)} refusals")
        assert len(clients) == n
        # The node admits at most the rate in any one second (exact, unit-tested in
        # admission.rs). Seen from here, a loaded client may take the answers of two
        # windows in one; without admission all 250 would come at once.
        admitted.sort()
        peak = max(sum(1 for t in admitted if s <= t < s + 1.0) for s in admitted)
        assert peak <= 2 * rate, f"{peak} admitted within one second"
        assert took >= (n - 2 * rate) / rate, f"{n} admitted in {took:.1f} s at {rate}/s"
        # The refused were told to come back at different times.
        assert retries, "a storm over the rate is refused in part"
        if len(retries) >= 20:
            assert len(set(retries)) >= 2, sorted(set(retries))
        status, _, body = gw.http("GET", "/metrics")
        refusals = [line for line in body.decode().splitlines() if line.startswith("wsgate_admission_refusals")]
        assert refusals and float(refusals[0].split()[-1]) == len(retries), refusals
        await Client.close_all()

    run(body(), timeout=90)
