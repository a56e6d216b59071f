"""Counts the Redis commands a published message costs in a cluster: 30 subscribers
on each of three nodes (ports 18081-18083, Redis on 6390, see docs/benchmarks.md), a
publisher sends 1,000 messages one at a time; prints INFO commandstats for that window.
A stop-gap until wsgate-bench."""
import asyncio, json, subprocess, websockets
NODES=["127.0.0.1:18081","127.0.0.1:18082","127.0.0.1:18083"]
def rcli(*a): return subprocess.run(["redis-cli","-p","6390",*a],capture_output=True,text=True).stdout
async def sub(addr,i):
    ws=await websockets.connect(f"ws://{addr}/ws?user_id=s{addr[-1]}-{i}", ping_interval=None); await ws.recv()
    await ws.send(json.dumps({"type":"join","room":"cmd"}))
    while json.loads(await ws.recv())["type"]!="joined": pass
    return ws
async def drain(ws, n):
    got=0
    while got<n:
        if json.loads(await ws.recv())["type"]=="message": got+=1
async def main():
    subs=[]
    for a in NODES:
        subs += await asyncio.gather(*(sub(a,i) for i in range(30)))
    pub=await websockets.connect(f"ws://{NODES[0]}/ws?user_id=pub", ping_interval=None); await pub.recv()
    await pub.send(json.dumps({"type":"join","room":"cmd"}))
    while json.loads(await pub.recv())["type"]!="joined": pass
    await asyncio.sleep(0.5)
    rcli("CONFIG","RESETSTAT")
    N=1000
    tasks=[asyncio.create_task(drain(w,N)) for w in subs]
    for i in range(N):
        await pub.send(json.dumps({"type":"message","room":"cmd","content":f"m{i}","ref":i}))
        while json.loads(await pub.recv())["type"]!="ack": pass
    await asyncio.gather(*tasks)
    stats=rcli("INFO","commandstats"); total=[l for l in rcli("INFO","stats").splitlines() if l.startswith("total_commands_processed")]
    print("messages",N,"members",len(subs)+1,"nodes",3)
    print("\n".join(l for l in stats.splitlines() if l.startswith("cmdstat")))
    print(total)
asyncio.run(main())
