#!/usr/bin/env node
// uWebSockets.js comparison peer for wsgate-bench, speaking the subset of the wsgate
// protocol the bench uses (so `--target wsgate` drives it unchanged).
//
//   node uws-server.js --port P [--host 127.0.0.1] [--redis redis://127.0.0.1:R] [--node-id ID]
//
// Without --redis: one node; a room is a uWS topic (`ws.subscribe`, `app.publish`), the
// member count a per-process map. With --redis: a small relay, the way a uWS user
// scales out: every node PUBLISHes room messages on one Redis channel per room and
// SUBSCRIBEs (per room, on first local member) to fan them out to its local topic;
// distinct users per room are a Redis hash (HINCRBY/HLEN), one command per join.
//
// uWebSockets.js is not published on npm (its authors ship it from GitHub, and npm's
// `uwebsockets` is an unrelated package); `@trufflesuite/uws-js-unofficial` is a
// published build of it (v20.30) that installs on Node 20.
//
// Wire subset:
//   GET /ws?user_id=U                      -> {"type":"welcome",...}
//   {"type":"join","room":R,"ref":X}       -> {"type":"joined","ref":X,"room":R,"members_count":N,...}
//   {"type":"message","room":R,"content":C} -> every member of R (sender too, every node)
//                                             gets {"type":"message","id":..,"room":R,"user_id":U,...}
//   {"type":"leave","room":R}              -> {"type":"left","room":R}
//   {"type":"ping","ref":X}                -> {"type":"pong","ref":X}
"use strict";

const uWS = require("@trufflesuite/uws-js-unofficial");

function usage(msg) {
  if (msg) process.stderr.write(`uws-server.js: ${msg}\n`);
  process.stderr.write("usage: node uws-server.js --port P [--host 127.0.0.1] [--redis redis://HOST:PORT] [--node-id ID]\n");
  process.exit(2);
}

function parseArgs(argv) {
  const o = { host: "127.0.0.1", port: null, redis: null, nodeId: `uws-${process.pid}` };
  for (let i = 0; i < argv.length; i++) {
    const v = () => (i + 1 < argv.length ? argv[++i] : usage(`${argv[i]} needs a value`));
    switch (argv[i]) {
      case "--port": o.port = Number(v()); break;
      case "--host": o.host = v(); break;
      case "--redis": o.redis = v(); break;
      case "--node-id": o.nodeId = v(); break;
      default: usage(`unknown argument ${argv[i]}`);
    }
  }
  if (!Number.isInteger(o.port) || o.port <= 0 || o.port > 65535) usage("--port must be 1-65535");
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const dec = new TextDecoder();
let seq = 0;
const local = new Map(); // room -> local member sockets count (for relay subscriptions)
const counts = new Map(); // room -> Map(user -> sessions), single-node mode

function nextId() {
  const ms = Date.now();
  seq = (seq + 1) % 1e6;
  return `${ms}-${seq}`;
}

let pub = null; // Redis command client
let sub = null; // Redis subscriber
let app;

async function startRedis() {
  if (!opts.redis) return;
  const { createClient } = require("redis");
  pub = createClient({ url: opts.redis });
  sub = pub.duplicate();
  pub.on("error", (e) => process.stderr.write(`redis: ${e}\n`));
  sub.on("error", (e) => process.stderr.write(`redis sub: ${e}\n`));
  await pub.connect();
  await sub.connect();
}

function relayOn(room) {
  local.set(room, (local.get(room) || 0) + 1);
  if (sub && local.get(room) === 1) {
    // Frames published by any node come back here and go to the local topic.
    return sub.subscribe(`uws:room:${room}`, (frame) => app.publish(room, frame, false));
  }
  return Promise.resolve();
}

function relayOff(room) {
  const n = (local.get(room) || 1) - 1;
  if (n > 0) { local.set(room, n); return; }
  local.delete(room);
  if (sub) sub.unsubscribe(`uws:room:${room}`).catch(() => {});
}

async function countAdd(room, user) {
  if (pub) {
    await pub.hIncrBy(`uws:users:${room}`, user, 1);
    return pub.hLen(`uws:users:${room}`);
  }
  let m = counts.get(room);
  if (!m) counts.set(room, (m = new Map()));
  m.set(user, (m.get(user) || 0) + 1);
  return m.size;
}

async function countOf(room) {
  if (pub) return pub.hLen(`uws:users:${room}`);
  return counts.get(room)?.size ?? 0;
}

function countRemove(room, user) {
  if (pub) {
    pub.hIncrBy(`uws:users:${room}`, user, -1).then((n) => {
      if (n <= 0) pub.hDel(`uws:users:${room}`, user).catch(() => {});
    }).catch(() => {});
    return;
  }
  const m = counts.get(room);
  if (!m) return;
  const n = (m.get(user) || 1) - 1;
  if (n > 0) m.set(user, n); else m.delete(user);
  if (m.size === 0) counts.delete(room);
}

function send(ws, obj) {
  if (!ws.closed) ws.send(JSON.stringify(obj), false);
}

async function onMessage(ws, text) {
  let f;
  try { f = JSON.parse(text); } catch { return send(ws, { type: "error", code: "bad_json", message: "not JSON" }); }
  const d = ws.getUserData();
  const ref = f.ref;
  switch (f.type) {
    case "join": {
      const room = String(f.room || "");
      if (!room) return send(ws, { type: "error", code: "invalid_field", message: "room", ref });
      let n;
      if (d.rooms.has(room)) {
        n = await countOf(room); // a repeated join counts nobody twice
      } else {
        d.rooms.add(room);
        ws.subscribe(room);
        await relayOn(room);
        n = await countAdd(room, d.user);
        // Closed while Redis answered: close() already ran for this room before the
        // count was added; take it back out.
        if (ws.closed) return countRemove(room, d.user);
      }
      send(ws, { type: "joined", ref, room, members: [], members_count: n, members_more: false, presence: "count", last_id: null, epoch: "uws", recovered: true });
      return;
    }
    case "leave": {
      const room = String(f.room || "");
      if (d.rooms.delete(room)) {
        ws.unsubscribe(room);
        relayOff(room);
        countRemove(room, d.user);
      }
      return send(ws, { type: "left", ref, room });
    }
    case "message": {
      const room = String(f.room || "");
      if (!d.rooms.has(room)) return send(ws, { type: "error", code: "not_member", message: "join first", ref });
      const frame = JSON.stringify({ type: "message", id: nextId(), room, user_id: d.user, username: d.user, content: String(f.content), ts: new Date().toISOString() });
      if (pub) pub.publish(`uws:room:${room}`, frame).catch(() => {});
      else app.publish(room, frame, false);
      if (ref !== undefined) send(ws, { type: "ack", ref, room, id: "0-0" });
      return;
    }
    case "ping":
      return send(ws, { type: "pong", ref });
    default:
      return send(ws, { type: "error", code: "unknown_type", message: "unknown type", ref });
  }
}

async function main() {
  await startRedis();
  app = uWS.App();
  app.ws("/ws", {
    compression: uWS.DISABLED,
    maxPayloadLength: 65536 + 4096,
    maxBackpressure: 1024 * 1024,
    closeOnBackpressureLimit: true,
    idleTimeout: 60,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => {
      const q = new URLSearchParams(req.getQuery() || "");
      const user = q.get("user_id") || `anon-${Math.random().toString(16).slice(2, 10)}`;
      res.upgrade(
        { user, rooms: new Set() },
        req.getHeader("sec-websocket-key"),
        req.getHeader("sec-websocket-protocol"),
        req.getHeader("sec-websocket-extensions"),
        context,
      );
    },
    open: (ws) => {
      send(ws, { type: "welcome", protocol: 1, session_id: nextId(), node_id: opts.nodeId, user_id: ws.getUserData().user, username: ws.getUserData().user, heartbeat_ms: 25000 });
    },
    message: (ws, message, isBinary) => {
      if (isBinary) return ws.end(1003, "text only");
      onMessage(ws, dec.decode(message)).catch((e) => process.stderr.write(`message: ${e}\n`));
    },
    close: (ws) => {
      ws.closed = true;
      const d = ws.getUserData();
      for (const room of d.rooms) {
        relayOff(room);
        countRemove(room, d.user);
      }
    },
  });
  app.get("/healthz", (res) => res.end("ok"));
  app.listen(opts.host, opts.port, (token) => {
    if (!token) {
      process.stderr.write(`cannot listen on ${opts.host}:${opts.port}\n`);
      process.exit(1);
    }
    process.stdout.write(`listening on ${opts.host}:${opts.port}${opts.redis ? ` (redis ${opts.redis})` : ""}\n`);
  });
}

for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
main().catch((e) => { process.stderr.write(`uws-server.js: ${e}\n`); process.exit(1); });
