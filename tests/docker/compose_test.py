#!/usr/bin/env python3
"""The scenarios of tests/docker/compose_test.sh, run against a compose project it started.

Standard library only: every WebSocket client runs in a tests/docker/ws_agent.py process,
either on the host (clients reaching nginx through its published port: nginx sees them all
as one address) or in a container on the compose network with an address of its own. The
container addresses are chosen with the balancing function of nginx/nginx.conf's upstream
(`ip_hash`, which keys on the first three octets, or `hash $binary_remote_addr`) so that
the clients cover every replica, which makes the spreading and stickiness checks exact.

Prints one `PASS name` or `FAIL name: why` line per check and, last, a JSON line
`{"passed": N, "failed": M}` for the shell script; exits 1 when a check failed.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib

ARGS = None
RESULTS = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(name, ok, detail=""):
    RESULTS.append((name, bool(ok)))
    if ok:
        print(f"PASS {name}", flush=True)
    else:
        print(f"FAIL {name}: {detail}", flush=True)
    return ok


def id_key(i):
    ms, seq = i.split("-")
    return (int(ms), int(seq))


# --- docker and HTTP helpers -------------------------------------------------------------


def run(argv, timeout=60, check_rc=True):
    p = subprocess.run(argv, cwd=ARGS.root, capture_output=True, text=True, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()[-800:]}")
    return p.stdout


def compose(*args, timeout=60):
    return run(ARGS.compose.split() + ["-p", ARGS.project] + list(args), timeout=timeout)


def http(method, url, body=None, headers=None, timeout=5):
    """(status, parsed JSON or text); status 0 when no answer came."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read().decode(errors="replace"), e.code
    except (OSError, urllib.error.URLError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def gateways():
    """node_id -> {id, ip, health} for every running gateway container of the project."""
    out = {}
    ids = compose("ps", "-q", "gateway").split()
    for cid in ids:
        info = json.loads(run(["docker", "inspect", cid]))[0]
        if not info["State"]["Running"]:
            continue
        nets = info["NetworkSettings"]["Networks"]
        ip = next(iter(nets.values()))["IPAddress"]
        status, stats = http("GET", f"http://{ip}:8080/api/stats", timeout=3)
        node = stats.get("node_id") if status == 200 and isinstance(stats, dict) else None
        health = (info["State"].get("Health") or {}).get("Status")
        out[node or f"?{cid[:12]}"] = {"id": cid, "ip": ip, "health": health}
    return out


async def wait_until(pred, timeout, what, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        v = await asyncio.to_thread(pred)
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def nginx_balancing():
    """The balancing method of the `wsgate` upstream in nginx/nginx.conf."""
    text = open(os.path.join(ARGS.root, "nginx/nginx.conf")).read()
    text = re.sub(r"#[^\n]*", "", text)
    m = re.search(r"upstream\s+wsgate\s*\{([^}]*)\}", text)
    body = m.group(1) if m else ""
    if re.search(r"(^|;)\s*ip_hash\s*;", body):
        return "ip_hash"
    m = re.search(r"(^|;)\s*hash\s+(\S+)(\s+consistent)?\s*;", body)
    if m:
        return f"hash {m.group(2)}" + (" consistent" if m.group(3) else "")
    return "round-robin"


def peer_index(ip, n):
    """The peer (0..n-1, in nginx's order) that nginx's balancing picks for client address
    ip among n equal peers; None when the method does not stick to an address."""
    method = ARGS.balancing
    if method == "ip_hash":  # ngx_http_upstream_get_ip_hash_peer: the first 3 octets
        h = 89
        for octet in ip.packed[:3]:
            h = (h * 113 + octet) % 6271
        return h % n
    if method in ("hash $binary_remote_addr", "hash $remote_addr"):  # ngx_http_upstream_get_hash_peer
        key = ip.packed if "binary" in method else str(ip).encode()
        return ((zlib.crc32(key) >> 16) & 0x7FFF) % n
    # `hash … consistent` places its points by server *name*: the replicas behind the one
    # name `gateway` share them and are picked round-robin. Others are not sticky either.
    return None


USED_OCTETS = set()


def pick_addresses(n, per_index):
    """Client addresses in the compose subnet (third octets 1-254, so never in the /24 of
    the services), per_index of them for each peer index nginx will pick."""
    net = ipaddress.ip_network(ARGS.subnet)
    base = int(net.network_address)
    chosen, counts = [], {r: 0 for r in range(n)}
    for k in range(1, 255):
        if k in USED_OCTETS:
            continue
        ip = ipaddress.ip_address(base + k * 256 + 10)
        if ip not in net:
            break
        r = peer_index(ip, n)
        if r is None:  # not predictable: any distinct addresses
            chosen.append(ip)
            USED_OCTETS.add(k)
            if len(chosen) == n * per_index:
                return chosen
            continue
        if counts[r] < per_index:
            counts[r] += 1
            chosen.append(ip)
            USED_OCTETS.add(k)
        if all(c == per_index for c in counts.values()):
            return chosen
    raise RuntimeError(f"subnet {net} too small for {n}x{per_index} client addresses")


# --- client agents -----------------------------------------------------------------------


class Agent:
    def __init__(self, name, argv):
        self.name, self.argv = name, argv
        self.conns = {}
        self.ready = asyncio.Event()
        self.proc = None

    async def start(self):
        errlog = open(os.path.join(ARGS.logdir, f"agent-{self.name}.log"), "wb")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errlog,
            limit=1 << 24,
        )
        self.reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(self.ready.wait(), 60)
        except asyncio.TimeoutError:
            raise RuntimeError(f"agent {self.name} did not start (see agent-{self.name}.log)")

    async def _read(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            ev = json.loads(line)
            if ev.get("ev") == "ready":
                self.ready.set()
                continue
            conn = self.conns.get(ev.get("cid"))
            if conn is not None:
                conn.on_event(ev)
        for c in self.conns.values():
            c.on_event({"n": c.gen, "ev": "closed", "code": -1, "reason": "agent exited"})

    def send(self, obj):
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    async def stop(self):
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self.proc.stdin.close()
            await asyncio.wait_for(self.proc.wait(), 20)
        except (asyncio.TimeoutError, OSError):
            self.proc.kill()
            await self.proc.wait()


class Conn:
    """One client: its WebSocket connections (attempts) and everything it received."""

    def __init__(self, agent, cid, url):
        self.agent, self.cid, self.url = agent, cid, url
        agent.conns[cid] = self
        self.gen = 0
        self.state = "new"
        self.node = None
        self.nodes = []  # node_id of each welcome
        self.closes = []  # close codes, in order
        self.ids = {}  # room -> ids of message/publish frames, in arrival order
        self.epoch = {}
        self.replies = {}  # ref -> frame
        self.errors = []
        self.refs = 0
        self.changed = asyncio.Event()

    def on_event(self, ev):
        if ev.get("n") != self.gen:
            return
        kind = ev["ev"]
        if kind == "open":
            self.state = "open"
        elif kind == "open_failed":
            self.state = "failed"
            self.last_error = ev.get("error")
        elif kind == "closed":
            if self.state != "closed":
                self.state = "closed"
                self.closes.append(ev.get("code"))
        elif kind == "frame":
            d = ev["data"]
            t = d.get("type")
            if t == "welcome":
                self.node = d.get("node_id")
                self.nodes.append(self.node)
            elif t in ("message", "publish") and "room" in d and "id" in d:
                self.ids.setdefault(d["room"], []).append(d["id"])
            elif t == "joined":
                self.epoch[d["room"]] = d.get("epoch")
            if t == "error":
                self.errors.append(d)
            if d.get("ref") is not None:
                self.replies[d["ref"]] = d
        self.changed.set()

    async def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            self.changed.clear()
            if pred():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.cid}: timed out after {timeout:.0f}s waiting for {what}")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def connect(self, timeout=10):
        """One attempt; True when the welcome came."""
        self.gen += 1
        self.state = "connecting"
        welcomes = len(self.nodes)
        self.agent.send({"op": "open", "cid": self.cid, "n": self.gen, "url": self.url, "timeout": timeout})
        await self.wait(
            lambda: len(self.nodes) > welcomes or self.state in ("failed", "closed"),
            timeout + 5,
            "open",
        )
        return len(self.nodes) > welcomes and self.state == "open"

    async def connect_retry(self, total=45):
        deadline = time.monotonic() + total
        while True:
            if await self.connect(timeout=10):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.cid}: no connection within {total}s ({getattr(self, 'last_error', '')})")
            await asyncio.sleep(0.5)

    async def request(self, frame, timeout=10):
        self.refs += 1
        ref = f"{self.cid}-{self.gen}-{self.refs}"
        self.agent.send({"op": "send", "cid": self.cid, "data": dict(frame, ref=ref)})
        await self.wait(lambda: ref in self.replies or self.state != "open", timeout, f"reply to {frame}")
        if ref not in self.replies:
            raise RuntimeError(f"{self.cid}: connection closed before the reply to {frame}")
        return self.replies[ref]

    async def join(self, room, since=None, epoch=None):
        f = {"type": "join", "room": room}
        if since is not None:
            f["since"] = since
        if epoch is not None:
            f["epoch"] = epoch
        r = await self.request(f, timeout=15)
        if r.get("type") != "joined":
            raise RuntimeError(f"{self.cid}: join {room} answered {r}")
        return r

    async def say(self, room, content):
        return await self.request({"type": "message", "room": room, "content": content})

    async def rejoin(self, room):
        """Reconnect through nginx and rejoin with since+epoch; the `joined` frame."""
        since = self.ids.get(room, ["0-0"])[-1] if self.ids.get(room) else "0-0"
        await self.connect_retry()
        return await self.join(room, since=since, epoch=self.epoch.get(room))


def agent_argv_host():
    return [ARGS.host_python, "-u", os.path.join(ARGS.root, "tests/docker/ws_agent.py")]


def agent_argv_container(ip):
    return [
        "docker", "run", "-i", "--rm",
        "--network", f"{ARGS.project}_wsgate", "--ip", str(ip),
        "--label", f"wsgate-compose-test={ARGS.project}",
        "-v", f"{ARGS.root}/tests/docker/ws_agent.py:/agent.py:ro",
        ARGS.client_image, "python3", "-u", "/agent.py",
    ]  # fmt: skip


class Ctx:
    def __init__(self):
        self.agents = []
        self.conns = []
        self.room = f"lobby-{uuid.uuid4().hex[:8]}"
        self.expected = []  # every id acked or published in self.room, in id order
        self.host_url = f"ws://127.0.0.1:{ARGS.port}/ws"
        self.container_url = "ws://nginx:8080/ws"
        self.api = f"http://127.0.0.1:{ARGS.port}/api/publish"

    async def add_agents(self, specs):
        """specs: [(name, argv, [(cid, url)])] -> the new conns, connected."""
        new_agents = [Agent(name, argv) for name, argv, _ in specs]
        self.agents += new_agents
        await asyncio.gather(*(a.start() for a in new_agents))
        conns = []
        for a, (_, _, cids) in zip(new_agents, specs):
            for cid, url in cids:
                conns.append(Conn(a, cid, f"{url}?user_id={cid}&username={cid}"))
        await asyncio.gather(*(c.connect_retry(30) for c in conns))
        self.conns += conns
        return conns

    async def add_container_clients(self, n, per_residue, prefix):
        ips = pick_addresses(n, per_residue)
        specs = [(f"{prefix}{i}", agent_argv_container(ip), [(f"{prefix}{i}", self.container_url)]) for i, ip in enumerate(ips)]
        conns = await self.add_agents(specs)
        for c, ip in zip(conns, ips):
            c.ip = ip
        return conns

    def note(self, ids):
        self.expected = sorted(set(self.expected) | set(ids), key=id_key)

    async def chat_round(self, senders, tag):
        acks = []
        for s in senders:
            r = await s.say(self.room, f"{tag} from {s.cid}")
            if r.get("type") != "ack":
                raise RuntimeError(f"{s.cid}: message answered {r}")
            acks.append(r["id"])
        self.note(acks)
        return acks

    async def all_have_everything(self, conns, timeout=15, unanswered=0):
        """Wait until each conn holds exactly self.expected for the room; (ok, detail).
        `unanswered`: publishes refused (then retried) that may have been stored anyway
        (a node's exit cut their answer off): that many extra ids are allowed."""
        want = list(self.expected)
        bad = []
        for c in conns:
            try:
                await c.wait(lambda c=c: set(want) <= set(c.ids.get(self.room, [])), timeout, f"{len(want)} messages")
            except TimeoutError:
                pass
            got = c.ids.get(self.room, [])
            extra_ids = set(got) - set(want)
            if len(extra_ids) <= unanswered and [i for i in got if i not in extra_ids] == want:
                continue
            if got != want:
                missing = sorted(set(want) - set(got), key=id_key)
                dups = len(got) - len(set(got))
                extra = sorted(set(got) - set(want), key=id_key)
                order = got == sorted(got, key=id_key)
                bad.append(f"{c.cid}@{c.node}: {len(got)}/{len(want)} missing={missing[:3]} dups={dups} extra={extra[:3]} ordered={order}")
        return (not bad), "; ".join(bad)


class Publisher:
    """Publishes into the room through nginx's back-end API every `every` seconds."""

    def __init__(self, ctx, every=0.25):
        self.ctx, self.every = ctx, every
        self.ids, self.refused = [], 0
        self.stop_ev = asyncio.Event()

    async def run(self):
        n = 0
        while not self.stop_ev.is_set():
            n += 1
            status, body = await asyncio.to_thread(
                http, "POST", self.ctx.api, {"room": self.ctx.room, "data": {"n": n}},
                {"Authorization": f"Bearer {ARGS.api_key}"}, 10,
            )  # fmt: skip
            if status == 200 and isinstance(body, dict) and "id" in body:
                self.ids.append(body["id"])
            else:
                self.refused += 1
            try:
                await asyncio.wait_for(self.stop_ev.wait(), self.every)
            except asyncio.TimeoutError:
                pass

    def start(self):
        self.task = asyncio.create_task(self.run())

    async def stop(self):
        self.stop_ev.set()
        await self.task
        self.ctx.note(self.ids)


# --- scenarios ----------------------------------------------------------------------------


async def same_after_reconnects(conns, times=2):
    for _ in range(times):
        for c in conns:
            c.agent.send({"op": "close", "cid": c.cid})
            await c.wait(lambda c=c: c.state == "closed", 10, "close")
            await c.connect_retry(20)
    return all(len(set(c.nodes)) == 1 for c in conns)


async def scenario_spread(ctx):
    log(f"nginx balancing: {ARGS.balancing}")
    log("start: 2 host clients, 6 container clients (2 per replica that nginx should pick)")
    nodes = await asyncio.to_thread(gateways)
    check("3 gateway replicas running, healthy, distinct node ids",
          len(nodes) == 3 and all(v["health"] == "healthy" for v in nodes.values()) and not any(k.startswith("?") for k in nodes),
          f"{nodes}")  # fmt: skip
    host = await ctx.add_agents([("host", agent_argv_host(), [("h1", ctx.host_url), ("h2", ctx.host_url)])])
    ctx.host_conns = host
    cont = await ctx.add_container_clients(3, 2, "a")
    ctx.first_containers = cont
    check("host clients all land on one replica (nginx sees one address)",
          len({c.node for c in host}) == 1, f"{[(c.cid, c.node) for c in host]}")  # fmt: skip
    seen = {c.node for c in cont}
    check("container clients are spread over all 3 replicas", seen == set(nodes), f"saw {sorted(seen)} of {sorted(nodes)}")
    by_index = {}
    for c in cont:
        by_index.setdefault(peer_index(c.ip, 3), set()).add(c.node)
    why = ""
    if ARGS.balancing.endswith("consistent"):
        why = (f"nginx.conf has `{ARGS.balancing}`: nginx's consistent hash places its points by server name, "
               "and the replicas behind the one name `gateway` share them, so it picks them round-robin; "
               "`hash $binary_remote_addr;` (not consistent) or `ip_hash;` stick to an address. ")  # fmt: skip
    check(f"sticky ({ARGS.balancing}): clients nginx should send to the same replica get the same replica",
          None not in by_index and len(by_index) == 3 and all(len(v) == 1 for v in by_index.values()),
          f"{why}peer index -> replicas: {by_index}")  # fmt: skip
    # Stickiness across reconnects: one client closes and comes back to the same replica.
    c0 = cont[0]
    before = c0.node
    c0.agent.send({"op": "close", "cid": c0.cid})
    await c0.wait(lambda: c0.state == "closed", 10, "close")
    await c0.connect_retry(20)
    check("sticky: a reconnecting client returns to its replica", c0.node == before, f"{before} -> {c0.node}")
    check("sticky: host clients (one address) reconnecting stay on their replica",
          await same_after_reconnects(host), f"{[(c.cid, c.nodes) for c in host]}")  # fmt: skip

    log(f"chat across replicas in {ctx.room}")
    everyone = host + cont
    for c in everyone:
        await c.join(ctx.room)
    await ctx.chat_round(everyone, "round 1")
    await ctx.chat_round(everyone, "round 2")
    ok, detail = await ctx.all_have_everything(everyone)
    check(f"chat across replicas: {len(everyone)} clients on {len(seen | {host[0].node})} replicas each get all {len(ctx.expected)} messages in order", ok, detail)


async def scenario_kill(ctx):
    nodes = await asyncio.to_thread(gateways)
    host_node = ctx.host_conns[0].node
    counts = {}
    for c in ctx.conns:
        counts[c.node] = counts.get(c.node, 0) + 1
    victim = max((n for n in nodes if n != host_node), key=lambda n: counts.get(n, 0))
    victims = [c for c in ctx.conns if c.node == victim]
    survivors = [c for c in ctx.conns if c.node != victim]
    closes_before = {c.cid: len(c.closes) for c in ctx.conns}
    log(f"docker kill {victim} ({nodes[victim]['id'][:12]}), which holds {len(victims)} clients")
    await asyncio.to_thread(run, ["docker", "kill", nodes[victim]["id"]], 30)
    # The room goes on while they are away.
    publisher = survivors[0]
    await ctx.chat_round([publisher] * 5, "while a replica is down")
    for c in victims:
        await c.wait(lambda c=c: c.state == "closed", 15, "the killed replica's connection to drop")
    check("clients of the killed replica see their connection drop",
          all(c.closes and c.closes[-1] != 1000 for c in victims), f"{[(c.cid, c.closes) for c in victims]}")  # fmt: skip
    t0 = time.monotonic()
    joined = await asyncio.gather(*(c.rejoin(ctx.room) for c in victims))
    log(f"{len(victims)} clients reconnected through nginx and rejoined in {time.monotonic() - t0:.1f}s")
    check("they reconnect through nginx to a surviving replica",
          all(c.node != victim and c.node in nodes for c in victims), f"{[(c.cid, c.node) for c in victims]}")  # fmt: skip
    check("rejoin with since+epoch answers recovered:true",
          all(j.get("recovered") is True for j in joined), f"{joined}")  # fmt: skip
    await ctx.chat_round([publisher, victims[0]], "after the kill")
    ok, detail = await ctx.all_have_everything(ctx.conns)
    check("after the kill every client has every message exactly once, in order", ok, detail)
    check("clients of the other replicas stayed connected",
          all(len(c.closes) == closes_before[c.cid] and c.state == "open" for c in survivors),
          f"{[(c.cid, c.closes) for c in survivors if len(c.closes) != closes_before[c.cid]]}")  # fmt: skip


def scale(n):
    """``deploy/compose-scale.sh N`` (or ``restart``): exit code, seconds, output tail."""
    env = dict(os.environ, COMPOSE=ARGS.compose, COMPOSE_PROJECT_NAME=ARGS.project)
    t0 = time.monotonic()
    p = subprocess.run(
        [os.path.join(ARGS.root, "deploy/compose-scale.sh"), str(n)],
        cwd=ARGS.root, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    with open(os.path.join(ARGS.logdir, f"compose-scale-{n}.log"), "w") as f:
        f.write(p.stdout + p.stderr)
    return p.returncode, time.monotonic() - t0, (p.stdout + p.stderr).strip()[-600:]


async def scenario_scale(ctx):
    closes_before = {c.cid: len(c.closes) for c in ctx.conns}
    pub = Publisher(ctx)
    pub.start()
    log("deploy/compose-scale.sh 5 (while the back end publishes every 250 ms)")
    rc, took, out = await asyncio.to_thread(scale, 5)
    check(f"compose-scale.sh 5 succeeds ({took:.0f}s)", rc == 0, out)
    nodes = await asyncio.to_thread(gateways)
    check("5 replicas running and healthy after scaling up",
          len(nodes) == 5 and all(v["health"] == "healthy" for v in nodes.values()), f"{nodes}")  # fmt: skip
    check("scaling up disconnects nobody",
          all(len(c.closes) == closes_before[c.cid] and c.state == "open" for c in ctx.conns),
          f"{[(c.cid, c.closes) for c in ctx.conns if len(c.closes) != closes_before[c.cid]]}")  # fmt: skip
    new = await ctx.add_container_clients(5, 1, "b")
    seen = {c.node for c in new}
    check("after the nginx reload new clients reach all 5 replicas", seen == set(nodes), f"saw {sorted(seen)} of {sorted(nodes)}")
    for c in new:
        await c.join(ctx.room, since="0-0")
    await ctx.chat_round(new, "from the new replicas")

    log("deploy/compose-scale.sh 3")
    closes_before = {c.cid: len(c.closes) for c in ctx.conns}
    rc, took, out = await asyncio.to_thread(scale, 3)
    check(f"compose-scale.sh 3 succeeds ({took:.0f}s)", rc == 0, out)
    after = await asyncio.to_thread(gateways)
    removed = set(nodes) - set(after)
    check("3 replicas after scaling down", len(after) == 3 and len(removed) == 2, f"before {sorted(nodes)} after {sorted(after)}")
    moved = [c for c in ctx.conns if c.node in removed]
    stayed = [c for c in ctx.conns if c.node not in removed]
    log(f"{len(moved)} clients were on the removed replicas {sorted(removed)}")
    for c in moved:
        await c.wait(lambda c=c: c.state == "closed", 30, "the drained replica's close")
    check("clients of removed replicas were drained with close 1001",
          all(c.closes and c.closes[-1] == 1001 for c in moved), f"{[(c.cid, c.closes) for c in moved]}")  # fmt: skip
    joined = await asyncio.gather(*(c.rejoin(ctx.room) for c in moved))
    check("they reconnect to a remaining replica and recover exactly (recovered:true)",
          all(j.get("recovered") is True for j in joined) and all(c.node in after for c in moved),
          f"{[(c.cid, c.node, j.get('recovered')) for c, j in zip(moved, joined)]}")  # fmt: skip
    check("clients of the remaining replicas stayed connected through both scalings",
          all(len(c.closes) == closes_before[c.cid] and c.state == "open" for c in stayed),
          f"{[(c.cid, c.closes) for c in stayed if len(c.closes) != closes_before[c.cid]]}")  # fmt: skip
    await pub.stop()
    log(f"the back end published {len(pub.ids)} times during the scaling ({pub.refused} refused and retried)")
    await ctx.chat_round([stayed[0]], "after scaling down")
    ok, detail = await ctx.all_have_everything(ctx.conns, timeout=20)
    check(f"no client lost or duplicated any of the {len(ctx.expected)} messages through the scaling", ok, detail)
    check("the back end could publish during the scaling", len(pub.ids) >= 5, f"{len(pub.ids)} published")


async def scenario_restart(ctx):
    before = await asyncio.to_thread(gateways)
    pub = Publisher(ctx)
    pub.start()
    log("deploy/compose-scale.sh restart (while the back end publishes every 250 ms)")
    rc, took, out = await asyncio.to_thread(scale, "restart")
    check(f"compose-scale.sh restart succeeds ({took:.0f}s)", rc == 0, out)
    after = await asyncio.to_thread(gateways)
    check("every replica is running and healthy after the rolling restart",
          len(after) == len(before) and all(v["health"] == "healthy" for v in after.values()), f"{after}")  # fmt: skip
    # Every client's replica was restarted: each was drained (1001) and comes back.
    for c in ctx.conns:
        await c.wait(lambda c=c: c.state == "closed", 30, "the drain's close")
    check("every client was drained with close 1001",
          all(c.closes and c.closes[-1] == 1001 for c in ctx.conns), f"{[(c.cid, c.closes) for c in ctx.conns]}")  # fmt: skip
    joined = await asyncio.gather(*(c.rejoin(ctx.room) for c in ctx.conns))
    check("they reconnect and recover exactly (recovered:true)",
          all(j.get("recovered") is True for j in joined), f"{[(c.cid, j.get('recovered')) for c, j in zip(ctx.conns, joined)]}")  # fmt: skip
    await pub.stop()
    log(f"the back end published {len(pub.ids)} times during the restart ({pub.refused} refused and retried)")
    await ctx.chat_round([ctx.conns[0]], "after the rolling restart")
    ok, detail = await ctx.all_have_everything(ctx.conns, timeout=20, unanswered=pub.refused)
    check(f"no client lost or duplicated any of the {len(ctx.expected)} messages through the restart", ok, detail)


async def scenario_redis(ctx):
    senders = [ctx.host_conns[0], ctx.first_containers[1]]
    senders = [c for c in senders if c.state == "open"] or [c for c in ctx.conns if c.state == "open"][:2]
    log("docker compose stop redis")
    await asyncio.to_thread(compose, "stop", "redis", timeout=60)
    nodes = await asyncio.to_thread(gateways)
    check("the gateways keep running while Redis is stopped", len(nodes) == 3, f"{nodes}")
    # Messages are refused with `unavailable` (and not accepted) until Redis is back.
    got_unavailable, accepted = set(), []
    deadline = time.monotonic() + 30
    while len(got_unavailable) < len(senders) and time.monotonic() < deadline:
        for s in senders:
            if s.cid in got_unavailable:
                continue
            r = await s.say(ctx.room, "while redis is down")
            if r.get("type") == "error" and r.get("code") == "unavailable":
                got_unavailable.add(s.cid)
            elif r.get("type") == "ack":
                accepted.append(r["id"])
        await asyncio.sleep(0.3)
    check("while Redis is down, messages are answered `unavailable`", len(got_unavailable) == len(senders),
          f"only {sorted(got_unavailable)} of {[s.cid for s in senders]}")  # fmt: skip
    check("while Redis is down, no message is accepted", not accepted, f"acked {accepted}")

    def all_unready():
        return all(http("GET", f"http://{v['ip']}:8080/readyz", timeout=3)[0] == 503 for v in nodes.values())

    try:
        await wait_until(all_unready, 20, "/readyz 503")
        ok = True
    except TimeoutError:
        ok = False
    check("while Redis is down, /readyz answers 503 on every replica", ok)
    status, _ = await asyncio.to_thread(http, "POST", ctx.api, {"room": ctx.room, "data": {}}, {"Authorization": f"Bearer {ARGS.api_key}"})
    check("while Redis is down, the back-end publish API answers 503", status == 503, f"status {status}")
    check("connections stay open while Redis is down", all(c.state == "open" for c in ctx.conns),
          f"{[(c.cid, c.closes) for c in ctx.conns if c.state != 'open']}")  # fmt: skip

    log("docker compose start redis")
    await asyncio.to_thread(compose, "start", "redis", timeout=60)

    def all_ready():
        return all(http("GET", f"http://{v['ip']}:8080/readyz", timeout=3)[0] == 200 for v in nodes.values())

    try:
        await wait_until(all_ready, 45, "/readyz 200 on every replica")
        ok = True
    except TimeoutError:
        ok = False
    check("after Redis is back every replica is ready again", ok)
    # Full service: every client can send again and every client gets every new message.
    marks = {c.cid: len(c.ids.get(ctx.room, [])) for c in ctx.conns}
    after = []
    for s in ctx.conns:
        deadline = time.monotonic() + 30
        while True:
            r = await s.say(ctx.room, f"after redis from {s.cid}")
            if r.get("type") == "ack":
                after.append(r["id"])
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{s.cid}: still refused after Redis came back: {r}")
            await asyncio.sleep(0.5)
    want = sorted(after, key=id_key)
    bad = []
    for c in ctx.conns:
        try:
            await c.wait(lambda c=c: len(c.ids.get(ctx.room, [])) - marks[c.cid] >= len(want), 20, "new messages")
        except TimeoutError:
            pass
        got = c.ids.get(ctx.room, [])[marks[c.cid]:]
        if got != want:
            bad.append(f"{c.cid}@{c.node}: {len(got)}/{len(want)}")
    check(f"after Redis is back all {len(ctx.conns)} clients send, and each gets all {len(want)} new messages", not bad, "; ".join(bad))
    # Redis kept nothing (no persistence): a rejoin with the old epoch is told to reload.
    c = ctx.conns[-1]
    old_epoch = c.epoch.get(ctx.room)
    j = await c.join(ctx.room, since=want[0], epoch=old_epoch)
    check("history was lost with Redis: a rejoin with the old epoch gets recovered:false and a new epoch",
          j.get("recovered") is False and j.get("epoch") != old_epoch, f"{j}")  # fmt: skip
    fresh = await ctx.add_agents([("fresh", agent_argv_host(), [("fresh", ctx.host_url)])])
    r = await fresh[0].join(ctx.room + "-fresh")
    check("a new client connects and joins after Redis is back", r.get("type") == "joined", f"{r}")


async def main():
    ctx = Ctx()
    try:
        for name, fn in [
            ("spread and chat", scenario_spread),
            ("kill a replica", scenario_kill),
            ("scale 3 -> 5 -> 3", scenario_scale),
            ("rolling restart", scenario_restart),
            ("stop and start Redis", scenario_redis),
        ]:
            log(f"=== {name}")
            try:
                await asyncio.wait_for(fn(ctx), 240)
            except Exception as e:  # noqa: BLE001 - a broken scenario is one failed check
                check(f"scenario '{name}' ran to its end", False, f"{type(e).__name__}: {e}")
                if name == "spread and chat":
                    break
    finally:
        log("stopping the client agents")
        await asyncio.gather(*(a.stop() for a in ctx.agents), return_exceptions=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--project", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--subnet", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--compose", default="docker compose")
    ap.add_argument("--root", required=True)
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--client-image", required=True)
    ap.add_argument("--host-python", required=True)
    ARGS = ap.parse_args()
    ARGS.balancing = nginx_balancing()
    asyncio.run(main())
    passed = sum(1 for _, ok in RESULTS if ok)
    failed = len(RESULTS) - passed
    print(json.dumps({"passed": passed, "failed": failed}), flush=True)
    sys.exit(1 if failed else 0)
