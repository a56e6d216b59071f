"""A WebSocket client agent driven through standard input and output, one JSON object a line.

tests/docker/compose_test.py runs one agent per client address: on the host (clients that
reach nginx through its published port) and in containers on the compose network (each
container is its own address, so nginx's ip_hash spreads them over the replicas). Only
the standard library and Debian's python3-websockets (10.x) are needed.

Commands (stdin):
    {"op": "open", "cid": ID, "n": N, "url": URL, "timeout": S}
                                  open connection ID, attempt N (after the previous one closed)
    {"op": "send", "cid": ID, "data": OBJ}                 send OBJ as one text frame
    {"op": "close", "cid": ID}                             close with 1000
Events (stdout), each connection event with the "n" of its attempt:
    {"ev": "ready"}
    {"cid": ID, "ev": "open"} | {"cid": ID, "ev": "open_failed", "error": STR}
    {"cid": ID, "ev": "frame", "data": OBJ}
    {"cid": ID, "ev": "closed", "code": INT, "reason": STR}
    {"cid": ID, "ev": "send_failed", "error": STR}
The agent exits when its standard input ends.
"""

import asyncio
import json
import sys

import websockets

conns = {}  # cid -> websocket


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def run_conn(cid, n, url, timeout):
    try:
        ws = await asyncio.wait_for(
            websockets.connect(url, open_timeout=timeout, max_size=None, ping_interval=None),
            timeout + 1,
        )
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        emit({"cid": cid, "n": n, "ev": "open_failed", "error": f"{type(e).__name__}: {e}"})
        return
    conns[cid] = ws
    emit({"cid": cid, "n": n, "ev": "open"})
    try:
        async for raw in ws:
            try:
                data = json.loads(raw)
            except ValueError:
                data = {"_raw": str(raw)}
            emit({"cid": cid, "n": n, "ev": "frame", "data": data})
    except websockets.ConnectionClosed:
        pass
    except Exception:  # noqa: BLE001
        pass
    if conns.get(cid) is ws:
        del conns[cid]
    code = ws.close_code if ws.close_code is not None else 1006
    emit({"cid": cid, "n": n, "ev": "closed", "code": code, "reason": ws.close_reason or ""})


async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()
    emit({"ev": "ready"})
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op, cid = cmd.get("op"), cmd.get("cid")
        if op == "open":
            old = conns.pop(cid, None)
            if old is not None:
                await old.close()
            t = asyncio.create_task(
                run_conn(cid, cmd.get("n", 0), cmd["url"], float(cmd.get("timeout", 10)))
            )
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        elif op == "send":
            ws = conns.get(cid)
            try:
                if ws is None:
                    raise RuntimeError("not connected")
                await ws.send(json.dumps(cmd["data"]))
            except Exception as e:  # noqa: BLE001
                emit({"cid": cid, "ev": "send_failed", "error": f"{type(e).__name__}: {e}"})
        elif op == "close":
            ws = conns.get(cid)
            if ws is not None:
                await ws.close()
    for ws in list(conns.values()):
        await ws.close()


if __name__ == "__main__":
    asyncio.run(main())
