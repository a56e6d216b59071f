#!/usr/bin/env python3
"""The `deploy` benchmark: a rolling restart of a 3-node cluster behind nginx under
load, measured. `deploy/cluster.sh up 3` (release binary), N clients through nginx
from 30 loopback addresses in rooms of 10 (presence in full mode), a back end
publishing through nginx, then `deploy/cluster.sh restart`. Reported: how long the
restart took, when the last client was back, the peak new sessions a second on any
node, messages lost or duplicated (must be 0), latency of room messages during the
restart against before it, presence churn (leave/join seen during the restart).

    python3 crates/bench/deploy.py --clients 3000 --mode spread     # the shipped drain
    python3 crates/bench/deploy.py --clients 3000 --mode at-once    # all closed at once,
                                                                    # no admission control

Each run appends one JSON line to target/deploy.jsonl. The clients are Python
(`websockets`, the test suite's `rolling.py`), so the client process is part of what
is measured: on 2 cores it, not the gateways, limits how many clients one run holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from rolling import Member, RoomPublisher, watch_handshakes  # noqa: E402
from test_launcher import Cluster  # noqa: E402

KEY = "deploy-bench-key"


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000, 1)


async def bench(c: Cluster, clients: int, rooms: int, rate: float) -> dict:
    members = [Member(c, i, rooms) for i in range(clients)]
    tasks = [asyncio.create_task(m.run()) for m in members]
    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(m.ready.wait() for m in members)), 300)
    formed = time.monotonic() - t0
    settle = time.monotonic() + 120
    while not all(len(m.known) == clients // rooms for m in members):
        if time.monotonic() > settle:
            raise SystemExit("the rooms' presence did not settle within 120 s")
        await asyncio.sleep(0.2)
    stop_watch = asyncio.Event()
    watch = asyncio.create_task(watch_handshakes(c, stop_watch))
    pub = RoomPublisher(c.port, KEY, rooms, rate)
    accepted = pub.accepted
    await asyncio.sleep(5.0)
    restart_at = time.monotonic()
    await asyncio.to_thread(c.sh, "restart")
    restart_s = time.monotonic() - restart_at
    await asyncio.sleep(3.0)
    await pub.stop()
    refused = pub.refused
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(set(accepted[m.room]) <= set(m.seen) for m in members):
        await asyncio.sleep(0.2)
    stop_watch.set()
    peaks = await watch
    lost = sum(len(set(accepted[m.room]) - set(pub.sure(m))) for m in members)
    dup = sum(len(m.seen) - len(set(m.seen)) for m in members)
    before = [lat for m in members for (t, lat) in m.latencies if t < restart_at]
    during = [lat for m in members for (t, lat) in m.latencies if restart_at <= t <= restart_at + restart_s]
    churn = sum(1 for m in members for (t, _, _) in m.presence if t >= restart_at)
    for m in members:
        await m.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "clients": clients, "rooms": rooms, "rate": rate,
        "formed_s": round(formed, 2),
        "restart_s": round(restart_s, 1),
        "all_back_s": round(max(m.rejoined_at for m in members) - restart_at, 1),
        "moved": sum(1 for m in members if len(m.nodes) > 1),
        "reconnects": sum(len(m.nodes) - 1 for m in members),
        "peak_new_sessions_per_s_per_node": max(peaks.values()),
        "peaks": peaks,
        "accepted": sum(map(len, accepted.values())), "refused": refused,
        "lost": lost, "duplicated": dup,
        "unrecovered": sum(len(m.unrecovered) for m in members),
        "latency_ms_before": {"p50": pct(before, 50), "p99": pct(before, 99)},
        "latency_ms_during": {"p50": pct(during, 50), "p99": pct(during, 99), "max": pct(during, 100)},
        "presence_events_during": churn,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=3000)
    ap.add_argument("--rooms", type=int, default=None, help="default: clients / 10")
    ap.add_argument("--rate", type=float, default=30.0, help="messages a second over all rooms")
    ap.add_argument("--mode", choices=["spread", "at-once"], default="spread")
    a = ap.parse_args()
    rooms = a.rooms or max(1, a.clients // 10)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ["WSGATE_BIN"] = str(ROOT / "target" / "release" / "wsgate")
    args = f"--api-key {KEY} --rate-limit 1000"
    if a.mode == "at-once":
        args += " --drain-spread-ms 0 --reconnect-window-ms 0"
        os.environ["WSGATE_ACCEPT_RATE"] = "0"
    # SIGTERM ends the run through `finally`, which brings the cluster down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    c = Cluster(3, args)
    try:
        out = asyncio.run(bench(c, a.clients, rooms, a.rate))
    finally:
        c.down()
    out = {"mode": a.mode, **out, "cpu": os.cpu_count(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print(json.dumps(out))
    with open(ROOT / "target" / "deploy.jsonl", "a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
