#!/usr/bin/env node
// Socket.IO 4 comparison peer for wsgate-bench.
//
//   node server.js --port P [--host 127.0.0.1] [--redis redis://127.0.0.1:R]
//
// Without --redis: one node with Socket.IO's default in-memory adapter.
// With --redis: the @socket.io/redis-adapter (Redis pub/sub); any number of nodes
// given the same Redis form one cluster.
//
// Configured the way a user would deploy it for raw throughput: WebSocket transport
// only (no long-polling, so no sticky sessions are needed behind a load balancer),
// per-message deflate off, default ping interval/timeout. Event handlers do nothing
// beyond the work the protocol needs.
//
// Wire protocol (Engine.IO 4 / Socket.IO 5 over one WebSocket), as wsgate-bench speaks it:
//   GET /socket.io/?EIO=4&transport=websocket  -> server sends 0{"sid":..,"pingInterval":..}
//   client 40                                  -> server 40{"sid":..}
//   server 2 (ping)                            -> client 3 (pong)
//   client 42<id>["join","ROOM"]                -> socket.join(ROOM), server 43<id>["ok"]
//   client 42<id>["leave","ROOM"]               -> socket.leave(ROOM), server 43<id>["ok"]
//   client 42["publish",{"room":R,"content":C}] -> every member of R (sender included, on
//                                                 every node) gets 42["message",{"room":R,"content":C}]
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

// Matches wsgate's default frame limit (--max-message-bytes 65536 of content plus
// 4096 bytes of envelope), so both sides refuse the same oversized frames.
const MAX_FRAME_BYTES = 65536 + 4096;

function usage(msg) {
  if (msg) process.stderr.write(`server.js: ${msg}\n`);
  process.stderr.write(
    "usage: node server.js --port P [--host 127.0.0.1] [--redis redis://127.0.0.1:R]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { host: "127.0.0.1", port: null, redis: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf("=");
    const [name, inline] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) usage(`${name} needs a value`);
      return argv[++i];
    };
    switch (name) {
      case "--port":
        opts.port = Number(value());
        break;
      case "--host":
        opts.host = value();
        break;
      case "--redis":
        opts.redis = value();
        break;
      case "-h":
      case "--help":
        usage();
        break;
      default:
        usage(`unknown argument ${a}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    usage("--port must be an integer in 0..65535 (0 picks a free port)");
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));

  const httpServer = http.createServer((req, res) => {
    res.writeHead(404).end();
  });
  const io = new Server(httpServer, {
    transports: ["websocket"],
    perMessageDeflate: false,
    httpCompression: false,
    serveClient: false,
    maxHttpBufferSize: MAX_FRAME_BYTES,
    // pingInterval (25 s) and pingTimeout (20 s) stay at their defaults.
  });

  let redisClients = [];
  if (opts.redis) {
    // As the @socket.io/redis-adapter documentation recommends for the `redis` v4 client:
    // one client publishes, a duplicate subscribes.
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pubClient = createClient({ url: opts.redis });
    const subClient = pubClient.duplicate();
    for (const c of [pubClient, subClient]) {
      c.on("error", (err) => process.stderr.write(`redis error: ${err.message}\n`));
    }
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
    redisClients = [pubClient, subClient];
  }

  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      if (typeof room === "string" && room.length > 0) {
        socket.join(room);
        if (typeof ack === "function") ack("ok");
      } else if (typeof ack === "function") {
        ack("error");
      }
    });
    socket.on("leave", (room, ack) => {
      if (typeof room === "string") socket.leave(room);
      if (typeof ack === "function") ack("ok");
    });
    socket.on("publish", (msg, ack) => {
      if (msg === null || typeof msg !== "object" || typeof msg.room !== "string") {
        if (typeof ack === "function") ack("error");
        return;
      }
      const { room, content } = msg;
      io.to(room).emit("message", { room, content });
      if (typeof ack === "function") ack("ok");
    });
  });

  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(opts.port, opts.host, resolve);
  });
  const { address, port } = httpServer.address();
  process.stdout.write(`listening on ${address}:${port}\n`);

  let stopping = false;
  const shutdown = (signal) => {
    if (stopping) return;
    stopping = true;
    // Bounded: never hang on a stuck connection or an unreachable Redis.
    setTimeout(() => process.exit(0), 3000).unref();
    io.close(async () => {
      await Promise.allSettled(redisClients.map((c) => c.quit()));
      process.stderr.write(`stopped on ${signal}\n`);
      process.exit(0);
    });
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

main().catch((err) => {
  process.stderr.write(`server.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
