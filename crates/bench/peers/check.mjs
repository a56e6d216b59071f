// Smoke check of the Socket.IO peer: `node check.mjs` (after `./run.sh install`).
//
// Starts redis-server on a free port and three server.js nodes on it through run.sh,
// speaks the raw Engine.IO 4 / Socket.IO wire format that wsgate-bench speaks (ws package),
// puts a client on node 1 and one on node 3 in room "r", a client on node 2 in room
// "other", publishes from node 1 and checks that node 3's client (and the publisher)
// get the message and node 2's does not. Then the same on one node without Redis.
// Counts the Redis commands a publish costs. Stops everything by PID. Exit code 0 = pass.
import { spawn, execFileSync } from "node:child_process";
import { createServer, connect } from "node:net";
import { mkdtempSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const { createClient } = require("redis");

const logDir = mkdtempSync(join(tmpdir(), "wsgate-peer-check-"));
const env = { ...process.env, WSGATE_PEER_LOG_DIR: logDir };
const pids = [];
let failures = 0;

function ok(cond, what) {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) failures++;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function tcpOpen(port) {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/** Bounded poll: resolves when `cond()` is truthy, rejects after `ms`. */
async function eventually(cond, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function runSh(args) {
  return execFileSync(join(here, "run.sh"), args, { env, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
    .split(/\s+/)
    .filter(Boolean)
    .map(Number);
}

function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** A raw Engine.IO 4 client: handshake, pong, acks, and a log of received events. */
class RawClient {
  constructor(port, name) {
    this.name = name;
    this.events = [];
    this.acks = new Map();
    this.nextAck = 1;
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`, {
      perMessageDeflate: false,
    });
    this.ready = new Promise((resolve, reject) => {
      this.ws.once("error", reject);
      this.ws.on("message", (data) => {
        const f = data.toString();
        if (f[0] === "0") this.ws.send("40");
        else if (f === "2") this.ws.send("3");
        else if (f.startsWith("40")) {
          this.sid = JSON.parse(f.slice(2)).sid;
          resolve();
        } else if (f.startsWith("43")) {
          const m = /^43(\d+)(.*)$/.exec(f);
          this.acks.get(Number(m[1]))?.(JSON.parse(m[2]));
        } else if (f.startsWith("42")) this.events.push(JSON.parse(f.slice(2)));
        else if (f.startsWith("44")) reject(new Error(`${name}: connect error ${f}`));
      });
    });
  }
  emitWithAck(...args) {
    const id = this.nextAck++;
    return new Promise((resolve) => {
      this.acks.set(id, resolve);
      this.ws.send(`42${id}${JSON.stringify(args)}`);
    });
  }
  emit(...args) {
    this.ws.send(`42${JSON.stringify(args)}`);
  }
  messages() {
    return this.events.filter((e) => e[0] === "message").map((e) => e[1]);
  }
  close() {
    this.ws.close();
  }
}

async function redisPublishCount(client) {
  const info = await client.info("commandstats");
  const m = /cmdstat_publish:calls=(\d+)/.exec(info);
  return m ? Number(m[1]) : 0;
}

async function main() {
  if (!existsSync(join(here, "node_modules", ".package-lock.json"))) runSh(["install"]);

  // --- cluster: 3 nodes on one Redis -------------------------------------------------
  const redisPort = await freePort();
  const redis = spawn(
    "redis-server",
    ["--bind", "127.0.0.1", "--port", String(redisPort), "--save", "", "--appendonly", "no"],
    { stdio: "ignore" },
  );
  pids.push(redis.pid);
  await eventually(() => tcpOpen(redisPort), 10000, "redis-server accepting connections");
  const rc = createClient({ url: `redis://127.0.0.1:${redisPort}` });
  rc.on("error", (e) => console.error(`redis client: ${e.message}`));
  await rc.connect();
  console.log(`redis-server pid ${redis.pid} on ${redisPort}`);

  const ports = [await freePort(), await freePort(), await freePort()];
  const nodePids = runSh(["cluster", String(redisPort), ...ports.map(String)]);
  pids.push(...nodePids);
  ok(nodePids.length === 3 && nodePids.every((p) => alive(p)), `run.sh cluster printed 3 live PIDs ${nodePids.join(" ")}`);

  const a = new RawClient(ports[0], "a@node1");
  const b = new RawClient(ports[2], "b@node3");
  const c = new RawClient(ports[1], "c@node2");
  await Promise.all([a.ready, b.ready, c.ready]);
  ok(true, "three clients did the Engine.IO/Socket.IO handshake (0{..} / 40 / 40{sid})");
  const acks = await Promise.all([a.emitWithAck("join", "r"), b.emitWithAck("join", "r"), c.emitWithAck("join", "other")]);
  ok(acks.every((x) => JSON.stringify(x) === '["ok"]'), `join acked with 43<id>["ok"]: ${JSON.stringify(acks)}`);

  const before = await redisPublishCount(rc);
  const t0 = process.hrtime.bigint();
  a.emit("publish", { room: "r", content: "hello from node 1" });
  await eventually(() => b.messages().length > 0, 5000, "message at node 3");
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  ok(
    JSON.stringify(b.messages()) === JSON.stringify([{ room: "r", content: "hello from node 1" }]),
    `node 3 client got 42["message",${JSON.stringify(b.messages()[0])}] after ${ms.toFixed(1)} ms`,
  );
  await eventually(() => a.messages().length > 0, 5000, "echo at publisher");
  ok(a.messages().length === 1, "publisher on node 1 got its own message once");
  // Node 2 received the Redis message too; give it the same time to (wrongly) deliver.
  await new Promise((r) => setTimeout(r, 200));
  ok(c.messages().length === 0, "client in another room on node 2 got nothing");
  const publishes = (await redisPublishCount(rc)) - before;
  ok(publishes >= 1, `Redis PUBLISH commands for one room broadcast: ${publishes}`);

  // 100 more, in order, nothing lost or duplicated.
  for (let i = 0; i < 100; i++) a.emit("publish", { room: "r", content: `m${i}` });
  await eventually(() => b.messages().length >= 101, 10000, "100 messages at node 3");
  await new Promise((r) => setTimeout(r, 100));
  const got = b.messages().slice(1).map((m) => m.content);
  ok(
    got.length === 100 && got.every((c, i) => c === `m${i}`),
    `100 more publishes arrived at node 3 in order, no loss/dup (${got.length})`,
  );
  for (const x of [a, b, c]) x.close();
  await rc.quit();

  // --- single node, in-memory adapter ------------------------------------------------
  const sport = await freePort();
  const [spid] = runSh(["single", String(sport)]);
  pids.push(spid);
  const s1 = new RawClient(sport, "s1");
  const s2 = new RawClient(sport, "s2");
  await Promise.all([s1.ready, s2.ready]);
  await Promise.all([s1.emitWithAck("join", "r"), s2.emitWithAck("join", "r")]);
  s1.emit("publish", { room: "r", content: "single" });
  await eventually(() => s2.messages().length > 0 && s1.messages().length > 0, 5000, "single-node delivery");
  ok(s2.messages()[0]?.content === "single", "single node (in-memory adapter) delivers to the room");
  s1.close();
  s2.close();
}

async function cleanup() {
  const nodes = pids.filter((p) => p !== undefined);
  if (nodes.length) {
    try {
      runSh(["stop", ...nodes.map(String)]);
    } catch (e) {
      console.error(`run.sh stop failed: ${e.message}`);
    }
  }
  await eventually(() => nodes.every((p) => !alive(p)), 10000, "all processes gone").then(
    () => ok(true, `stopped every process by PID (${nodes.join(" ")})`),
    (e) => ok(false, e.message),
  );
}

try {
  await main();
} catch (e) {
  ok(false, e.stack || String(e));
} finally {
  await cleanup();
}
console.log(failures === 0 ? "PASS" : `${failures} FAILED (logs in ${logDir})`);
process.exit(failures === 0 ? 0 : 1);
