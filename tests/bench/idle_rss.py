"""Quick idle-memory check: N connections each joined to one of 100 rooms; prints the
gateway RSS per connection. Usage: idle_rss.py N HOST:PORT GATEWAY_PID
(a stop-gap until wsgate-bench; see docs/benchmarks.md)."""
import asyncio, json, os, sys, time, subprocess
import websockets
N = int(sys.argv[1]); addr = sys.argv[2]; pid = int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
async def one(i):
    ws = await websockets.connect(f"ws://{addr}/ws?user_id=u{i}", max_size=2**20, ping_interval=None)
    await ws.recv()
    await ws.send(json.dumps({"type":"join","room":f"room{i%100}"}))
    while True:
        f = json.loads(await ws.recv())
        if f["type"] == "joined": break
    return ws
async def main():
    before = rss()
    conns = []
    for start in range(0, N, 200):
        conns += await asyncio.gather(*(one(i) for i in range(start, min(N, start+200))))
    await asyncio.sleep(2)
    after = rss()
    print(f"connections={N} rss_before_kib={before} rss_after_kib={after} per_conn_kib={(after-before)/N:.1f}")
    for c in conns: await c.close()
asyncio.run(main())
