#!/usr/bin/env python3
"""The room-build measurements of docs/benchmarks.md ("Big rooms"), reproducible.

    crates/bench/room_build.py formation [REPS] [KINDS]   # 10,000 users, medians of REPS
    crates/bench/room_build.py joincost [SIZES]           # Redis commands per join vs room size
    crates/bench/room_build.py big [USERS]                # 50,000 users through 3 nodes

Needs release builds (cargo build --release -p wsgate-gateway -p wsgate-bench),
redis-server, and node for the peers. Every process it starts is stopped by PID.
Results: one JSON line per run appended to target/room-build.jsonl, and a summary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GW = ROOT / "target/release/wsgate"
BENCH = ROOT / "target/release/wsgate-bench"
PEERS = ROOT / "crates/bench/peers/run.sh"
OUT = ROOT / "target/room-build.jsonl"
procs: list[subprocess.Popen] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway(*flags: str) -> tuple[int, str]:
    p = subprocess.Popen([str(GW), "--listen", "127.0.0.1:0", "--max-connections", "20000",
                          "--log-format", "json", *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "WSGATE_LOG": "warn"})
    procs.append(p)
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("wsgate listening on "):
            return p.pid, "ws://" + line.split()[-1]
    raise RuntimeError("gateway did not start")


def redis() -> tuple[int, int]:
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return p.pid, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis did not start")


def peer(*args: str) -> list[int]:
    out = subprocess.run([str(PEERS), *args], check=True, capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def stop_all(extra: list[int] = ()) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for pid in extra:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    procs.clear()
    time.sleep(1)


def bench(*args: str) -> dict:
    r = subprocess.run([str(BENCH), *args, "--json", "--no-progress"], capture_output=True, text=True)
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        return {"error": r.stderr[-2000:]}


def record(kind: str, rep: dict) -> dict:
    rep["kind"] = kind
    with OUT.open("a") as f:
        f.write(json.dumps(rep) + "\n")
    return rep


def start(kind: str) -> tuple[list[str], list[int], str | None, list[int]]:
    """URLs, PIDs to measure, Redis URL, and peer PIDs to stop, for a kind."""
    name, n = kind.split(":")
    n = int(n)
    if name == "embedded":
        pid, url = gateway()
        return [url], [pid], None, []
    if name in ("wsgate", "wsgate-count"):
        rpid, rport = redis()
        rurl = f"redis://127.0.0.1:{rport}"
        flags = ["--redis-url", rurl] + (["--presence", "count"] if name == "wsgate-count" else [])
        nodes = [gateway(*flags, "--node-id", f"n{i}") for i in range(n)]
        time.sleep(1)
        return [u for _, u in nodes], [p for p, _ in nodes], rurl, []
    if name in ("uws", "socketio"):
        ports = [free_port() for _ in range(n)]
        if n == 1:
            pids = peer("uws" if name == "uws" else "single", str(ports[0]))
            return [f"ws://127.0.0.1:{ports[0]}"], pids, None, pids
        rport = free_port()
        rp = peer("redis", str(rport))
        pids = peer("uws-cluster" if name == "uws" else "cluster", str(rport), *map(str, ports))
        return [f"ws://127.0.0.1:{p}" for p in ports], pids, f"redis://127.0.0.1:{rport}", pids + rp
    raise SystemExit(f"unknown kind {kind}")


def formation(reps: int, kinds: list[str], users: int = 10_000) -> None:
    for kind in kinds:
        for _ in range(reps):
            urls, pids, rurl, extra = start(kind)
            args = ["build", "--url", ",".join(urls), "--users", str(users), "--connect-concurrency", "200"]
            for p in pids:
                args += ["--pid", str(p)]
            if rurl:
                args += ["--redis-url", rurl]
            if kind.startswith("socketio"):
                args += ["--target", "socketio", "--probe-rate", "0"]
            rep = record(kind, bench(*args))
            stop_all(extra)
            r = rep.get("results", {})
            print(kind, json.dumps({k: r.get(k) for k in ("joined", "failed", "formation_s", "rss_kib_per_joined")}),
                  "cpu/join", (r.get("cpu") or {}).get("gateway_cpu_us_per_join"),
                  "redis/join", (r.get("redis") or {}).get("commands_per_join"),
                  "probe p99", ((r.get("probe") or {}).get("latency_ms") or {}).get("p99"),
                  rep.get("error", "")[:300], flush=True)


def joincost(sizes: list[int], increment: int = 200) -> None:
    """Commands per join into a room that already holds SIZE users (3 nodes)."""
    for size in sizes:
        urls, pids, rurl, _ = start("wsgate:3")
        base = None
        if size > 0:
            # The base room is held by bench processes (at most 15,000 connections each).
            base = []
            per = 15_000
            for k, off in enumerate(range(0, size, per)):
                n = min(per, size - off)
                base.append(subprocess.Popen(
                    [str(BENCH), "build", "--url", ",".join(urls), "--users", str(n), "--user-offset",
                     str(1_000_000 + off), "--hold", "600s", "--probe-rate", "0", "--sources", "3",
                     "--json", "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            for b in base:
                assert b.stderr is not None
                for line in b.stderr:
                    if "holding them" in line:
                        break
        rep = bench("build", "--url", ",".join(urls), "--users", str(increment), "--user-offset", "1",
                    "--redis-url", rurl, "--probe-rate", "0", *sum((["--pid", str(p)] for p in pids), []))
        rep["room_size"] = size
        record("joincost", rep)
        r = rep.get("results", {})
        print("size", size, "joined", r.get("joined"), "failed", r.get("failed"),
              "redis/join", (r.get("redis") or {}).get("commands_per_join"),
              "top", [(t["command"], round(t["per_join"], 2)) for t in (r.get("redis") or {}).get("top", [])][:6],
              flush=True)
        for b in base or []:
            b.send_signal(signal.SIGTERM)
            b.wait()
        stop_all()


def big(users: int) -> None:
    urls, pids, rurl, _ = start("wsgate:3")
    per = -(-users // 3)
    runs = []
    for k in range(3):
        n = min(per, users - k * per)
        args = [str(BENCH), "build", "--url", ",".join(urls), "--users", str(n), "--user-offset",
                str(k * per), "--sources", "3", "--connect-concurrency", "70", "--probe-rate",
                "20" if k == 0 else "0", "--json", "--no-progress", "--settle", "3s"]
        for p in pids:
            args += ["--pid", str(p)]
        if k == 0:
            args += ["--redis-url", rurl]
        runs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    t0 = time.monotonic()
    reps = [json.loads(r.communicate()[0] or "{}") for r in runs]
    wall = time.monotonic() - t0
    for rep in reps:
        rep["users_total"] = users
        record("big", rep)
    rs = [r.get("results", {}) for r in reps]
    print("big", users, "joined", sum(r.get("joined", 0) for r in rs), "failed", sum(r.get("failed", 0) for r in rs),
          "formation (max of 3)", max(r.get("formation_s", 0) for r in rs), "wall", round(wall, 1),
          "max members_count", max(r.get("max_members_count", 0) for r in rs),
          "rss/joined", [r.get("rss_kib_per_joined") for r in rs][:1],
          "probe", ((rs[0].get("probe") or {}).get("latency_ms") or {}),
          "redis/join", (rs[0].get("redis") or {}).get("commands_per_join"), flush=True)
    stop_all()


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "formation"
    try:
        if what == "formation":
            reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
            kinds = (sys.argv[3] if len(sys.argv) > 3 else
                     "embedded:1,wsgate:1,wsgate:3,wsgate-count:3,uws:1,uws:3,socketio:3").split(",")
            formation(reps, kinds)
        elif what == "joincost":
            joincost([int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "100,1000,10000").split(",")])
        elif what == "big":
            big(int(sys.argv[2]) if len(sys.argv) > 2 else 50_000)
        else:
            raise SystemExit(__doc__)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
