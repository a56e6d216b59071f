// client.js when the server side moves under it: a `resync` (the node's broker link had
// a gap it could not refill) reloaded in place with no duplicate, a draining node's
// `reconnect` hint (exactly when and where to come back, then the usual backoff again),
// and refused handshakes retried with capped exponential backoff and full jitter.
// Against scripted in-process servers (exact frames, exact timings) and real processes
// (wsgate, redis-server), each started on 127.0.0.1 and stopped by PID.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Client, ResumeTracker, backoffCeiling, backoffDelay } from '../../crates/gateway/static/client.js';
import { WebSocket, startGateway, startRedis, waitFor, nextEvent, postJson } from './helpers.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

/** A WebSocket class recording each socket made ({url, at}) and every frame sent. */
function spyWS(log) {
  return class extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      log.sockets.push({ url: String(url), at: Date.now(), ws: this });
    }
    send(data) { log.sent.push(JSON.parse(data)); super.send(data); }
  };
}

function client(url, opts = {}) {
  const log = { sockets: [], sent: [] };
  const c = new Client(url, { WebSocket: spyWS(log), ...opts });
  cleanups.push(async () => c.close());
  c.log = log;
  c.seen = { message: [], publish: [], state: [], resync: [], hint: [], close: [], errors: [] };
  c.on('message', (m) => c.seen.message.push(m));
  c.on('publish', (m) => c.seen.publish.push(m));
  c.on('state', (s) => c.seen.state.push({ ...s, at: Date.now() }));
  c.on('resync', (r) => c.seen.resync.push(r));
  c.on('reconnect_hint', (h) => c.seen.hint.push(h));
  c.on('close', (e) => c.seen.close.push({ ...e, at: Date.now() }));
  c.on('error', (e) => c.seen.errors.push(e));
  return c;
}

/** An in-process WebSocket server on 127.0.0.1 whose connections `onConnection` scripts. */
async function fakeServer(onConnection) {
  const server = new WebSocket.Server({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => server.once('listening', r));
  cleanups.push(() => new Promise((r) => { for (const s of server.clients) s.terminate(); server.close(() => r()); }));
  let n = 0;
  server.on('connection', (sock) => {
    n += 1;
    const frames = [];
    const waiters = [];
    sock.on('message', (d) => {
      frames.push(JSON.parse(String(d)));
      for (const w of waiters.splice(0)) w();
    });
    /** The next client frame matching `pred` (bounded). */
    const take = (pred, what) => waitFor(() => { const i = frames.findIndex(pred); return i >= 0 ? frames.splice(i, 1)[0] : null; }, { what });
    const put = (f) => sock.send(JSON.stringify(f));
    put({ type: 'welcome', protocol: 1, session_id: `s${n}`, node_id: 'fake', user_id: 'me', username: 'Me', heartbeat_ms: 25000 });
    onConnection({ n, sock, put, take });
  });
  return `ws://127.0.0.1:${server.address().port}/ws`;
}

const msg = (id, room = 'r') => ({ type: 'message', id, room, user_id: 'u', username: 'U', content: `c${id}`, ts: 't' });
const joined = (ref, epoch, lastId) => ({ type: 'joined', ref, room: 'r', members: [], members_count: 1, members_more: false, presence: 'full', last_id: lastId, epoch, recovered: true });
const ids = (list) => list.map((m) => m.id);

test('resync (scripted): reloads up to last_id with limit 100, drops live duplicates, rejoins in the new epoch', async () => {
  const rejoins = [];
  const url = await fakeServer(async ({ n, sock, put, take }) => {
    const join = await take((f) => f.type === 'join', 'join');
    if (n === 1) {
      put(joined(join.ref, 'e1', null));
      // 10-0 is newer than 9-0 (not as strings); the second 9-0 is a duplicate
      for (const id of ['9-0', '10-0', '9-0']) put(msg(id));
      put({ type: 'resync', room: 'r', epoch: 'e2', last_id: '20-1' });
      put(msg('20-0')); // up to last_id: the reload's, not delivered live
      put(msg('20-2')); // after it: live
      const h = await take((f) => f.type === 'history', 'the reload request');
      put({ type: 'history', ref: h.ref, room: 'r', more: true, messages: ['19-0', '20-0', '20-1', '20-2'].map((id) => msg(id)) });
      put(msg('20-2')); // already delivered
      put(msg('21-0'));
    } else {
      rejoins.push(join);
      put(joined(join.ref, 'e2', '21-0'));
      // Redis lost its data again: an empty history in epoch e3; its ids start low
      put({ type: 'resync', room: 'r', epoch: 'e3', last_id: null });
      put(msg('1-0'));
    }
  });
  const c = client(url, { backoffBase: 20 });
  await c.join('r');
  await waitFor(() => c.seen.message.some((m) => m.id === '21-0'), { what: '21-0' });
  assert.deepEqual(ids(c.seen.message), ['9-0', '10-0', '20-2', '21-0'], 'each once, none of the reload');
  const history = c.log.sent.filter((f) => f.type === 'history');
  assert.equal(history.length, 1);
  assert.deepEqual({ ...history[0], ref: undefined }, { type: 'history', room: 'r', limit: 100, ref: undefined });
  assert.equal(c.seen.resync.length, 1);
  const r = c.seen.resync[0];
  assert.deepEqual(
    { room: r.room, epoch: r.epoch, last_id: r.last_id, lastId: r.lastId, reason: r.reason, more: r.more },
    { room: 'r', epoch: 'e2', last_id: '20-1', lastId: '20-1', reason: 'gap', more: true },
  );
  assert.deepEqual(ids(r.messages), ['19-0', '20-0', '20-1'], 'the reload: up to last_id only');
  assert.equal(c.tracker.get('r').epoch, 'e2');
  assert.equal(c.tracker.get('r').lastId, '21-0');

  // the next connection rejoins from there, in the resync's epoch
  c.ws.terminate();
  await waitFor(() => c.seen.message.some((m) => m.id === '1-0'), { what: '1-0 after the second resync' });
  assert.deepEqual(rejoins.map((j) => ({ since: j.since, epoch: j.epoch })), [{ since: '21-0', epoch: 'e2' }]);
  assert.equal(c.seen.resync.length, 2);
  assert.deepEqual(c.seen.resync[1].messages, [], 'an empty history reloads nothing');
  assert.equal(c.seen.resync[1].epoch, 'e3');
  // a new epoch: 1-0 is not compared with 21-0 of e2
  assert.deepEqual(ids(c.seen.message).slice(-1), ['1-0']);
  assert.deepEqual({ epoch: c.tracker.get('r').epoch, lastId: c.tracker.get('r').lastId }, { epoch: 'e3', lastId: '1-0' });
});

test('resync bookkeeping: a new epoch takes the frame\'s position; the same epoch keeps a newer id seen', () => {
  const t = new ResumeTracker();
  t.add('r');
  t.joined({ room: 'r', epoch: 'e1', last_id: '5-0', recovered: true });
  assert.equal(t.accept(msg('8-0')), 'deliver');
  t.resynced({ type: 'resync', room: 'r', epoch: 'e1', last_id: '6-0' });
  assert.deepEqual({ epoch: t.get('r').epoch, lastId: t.get('r').lastId }, { epoch: 'e1', lastId: '8-0' });
  assert.equal(t.accept(msg('7-0')), 'duplicate');
  t.resynced({ type: 'resync', room: 'r', epoch: 'e2', last_id: '3-0' });
  assert.deepEqual({ epoch: t.get('r').epoch, lastId: t.get('r').lastId }, { epoch: 'e2', lastId: '3-0' });
  assert.equal(t.accept(msg('3-0')), 'duplicate');
  assert.equal(t.accept(msg('4-0')), 'deliver');
  assert.deepEqual(t.joinFrame('r'), { type: 'join', room: 'r', since: '4-0', epoch: 'e2' });
});

test('resync (Redis restarted empty): reloaded in place on the same connection, then each message once', { timeout: 90000 }, async (t) => {
  let redis = await startRedis();
  cleanups.push(() => redis.stop());
  const gw = await startGateway({ redisUrl: redis.url });
  cleanups.push(() => gw.stop());
  await waitFor(async () => (await fetch(`${gw.http}/readyz`)).status === 200, { what: 'ready' });
  const alice = client(gw.ws, { userId: 'alice', username: 'Alice' });
  const first = await alice.join('g');
  const before = [];
  for (const n of [1, 2, 3]) before.push((await postJson(gw.http, '/api/publish', { room: 'g', data: { n } })).id);
  await waitFor(() => alice.seen.publish.length === 3, { what: 'three publishes' });
  assert.deepEqual(ids(alice.seen.publish), before);
  const socket = alice.ws;
  const session = alice.welcome.session_id;
  const frames = [];
  alice.on('frame', (f) => { if (f.type === 'resync') frames.push(f); });

  const resync = nextEvent(alice, 'resync', (r) => r.reason === 'gap', 60000);
  await redis.stop();
  redis = await startRedis({ port: redis.port });
  cleanups.push(() => redis.stop());
  // Published as soon as Redis takes it: before the resync (then in the reload) or
  // after it (then live); either way it reaches alice once.
  const during = await waitFor(async () => {
    try { return await postJson(gw.http, '/api/publish', { room: 'g', data: { n: 'during' } }); } catch { return null; }
  }, { timeoutMs: 30000, intervalMs: 50, what: 'a publish after the restart' });
  const r = await resync;

  assert.equal(frames.length, 1, 'one resync frame');
  const frame = frames[0];
  assert.equal(r.room, 'g');
  assert.equal(r.epoch, frame.epoch);
  assert.equal(r.lastId, frame.last_id ?? null);
  assert.notEqual(r.epoch, first.epoch, 'Redis lost its data: a new epoch');
  assert.equal(alice.tracker.get('g').epoch, frame.epoch, 'the remembered epoch is the frame\'s');
  // the same WebSocket throughout: no reconnect
  assert.equal(alice.ws, socket);
  assert.equal(alice.welcome.session_id, session);
  assert.equal(alice.log.sockets.length, 1);
  assert.ok(!alice.seen.state.some((s) => s.state === 'reconnecting'), 'no reconnect');
  // the reload is the room's history after the restart, up to last_id
  assert.ok(Array.isArray(r.messages), `reload failed: ${r.error?.message}`);
  const now = await alice.history('g', { limit: 100 });
  const upTo = frame.last_id === null ? [] : now.messages.filter((m) => compareId(m.id, frame.last_id) <= 0);
  assert.deepEqual(ids(r.messages), ids(upTo));
  if (frame.last_id !== null) {
    assert.ok(alice.log.sent.some((f) => f.type === 'history' && f.room === 'g' && f.limit === 100), 'the client asked for the reload');
  }
  for (const id of before) assert.ok(!ids(r.messages).includes(id), `${id} was lost with Redis`);

  // after the resync: every message once (a later one is the fence for duplicates)
  await waitFor(async () => (await fetch(`${gw.http}/readyz`)).status === 200, { what: 'ready again' });
  const later = await postJson(gw.http, '/api/publish', { room: 'g', data: { n: 'later' } });
  const fence = await postJson(gw.http, '/api/publish', { room: 'g', data: { n: 'fence' } });
  await waitFor(() => alice.seen.publish.some((m) => m.id === fence.id), { what: 'the fence' });
  const live = ids(alice.seen.publish);
  assert.equal(live.filter((id) => id === later.id).length, 1, 'the publish after the resync, once');
  assert.ok(!ids(r.messages).includes(later.id));
  const duringCount = live.filter((id) => id === during.id).length + ids(r.messages).filter((id) => id === during.id).length;
  assert.equal(duringCount, 1, 'the publish around the resync: in the reload or live, once');
  t.diagnostic(`resync last_id ${frame.last_id}; the publish around it came ${ids(r.messages).includes(during.id) ? 'in the reload' : 'live'}`);
  assert.equal(new Set(live).size, live.length, 'no live duplicate');
  assert.equal(alice.ws, socket, 'still the same connection');
});

/** Numeric id comparison written out here (not the client's), for the test's own filter. */
function compareId(a, b) {
  const [x, y] = [a, b].map((s) => s.split('-').map(Number));
  return x[0] !== y[0] ? x[0] - y[0] : x[1] - y[1];
}

test('reconnect hint: after SIGTERM the client waits exactly delay_ms, goes to --reconnect-url, then backs off as usual', { timeout: 90000 }, async () => {
  const g2 = await startGateway({ args: ['--node-id', 'gw-2'] });
  cleanups.push(() => g2.stop('SIGKILL'));
  const g1 = await startGateway({ args: ['--node-id', 'gw-1', '--reconnect-url', g2.ws, '--drain-spread-ms', '300', '--reconnect-window-ms', '1500'] });
  cleanups.push(() => g1.stop());
  const bob = client(g1.ws, { userId: 'bob', username: 'Bob', random: () => 0.5 });
  await bob.join('h');
  assert.equal(bob.welcome.node_id, 'gw-1');

  const hinted = nextEvent(bob, 'reconnect_hint');
  const reconnecting = nextEvent(bob, 'state', (s) => s.state === 'reconnecting');
  const stopped = g1.stop('SIGTERM');
  const hint = await hinted;
  assert.deepEqual({ url: hint.url, reason: hint.reason }, { url: g2.ws, reason: 'draining' });
  assert.ok(Number.isInteger(hint.delay) && hint.delay >= 0 && hint.delay <= 1500, `delay ${hint.delay}`);
  const r = await reconnecting;
  assert.equal(r.code, 1001);
  assert.equal(r.delay, hint.delay, 'exactly the hinted delay: no backoff, no jitter');
  const close = bob.seen.close.find((c) => c.code === 1001);
  assert.ok(close, 'closed with 1001');

  const rejoined = await nextEvent(bob, 'joined', (j) => j.room === 'h', hint.delay + 5000);
  await stopped;
  assert.equal(bob.welcome.node_id, 'gw-2');
  assert.equal(bob.url, g2.ws);
  assert.equal(rejoined.room, 'h');
  // no attempt before the hinted delay; the next one to the hinted URL within delay + 5 s
  assert.equal(bob.log.sockets.length, 2, 'one reconnect');
  const next = bob.log.sockets[1];
  assert.ok(next.url.startsWith(g2.ws), next.url);
  assert.ok(next.at >= close.at + hint.delay - 2, `reconnected ${next.at - close.at} ms after the close, hinted ${hint.delay}`);
  assert.ok(next.at <= close.at + hint.delay + 5000, `reconnected ${next.at - close.at} ms after the close`);

  // the hint was for one reconnect: a plain drop is backed off as usual (random 0.5)
  const again = nextEvent(bob, 'state', (s) => s.state === 'reconnecting');
  await g2.stop('SIGKILL');
  const b = await again;
  assert.equal(b.code, 1006);
  assert.equal(b.delay, backoffDelay(b.attempt - 1, { random: () => 0.5 }));
  assert.equal(b.delay, Math.floor(0.5 * backoffCeiling(b.attempt - 1)));
});

test('refused handshakes (503, as a browser sees them: 1006 before open): capped exponential backoff with full jitter', { timeout: 30000 }, async () => {
  const upgrades = [];
  const server = createServer((req, res) => { res.writeHead(404); res.end(); });
  server.on('upgrade', (req, socket) => {
    upgrades.push(Date.now());
    socket.end('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }));
  const draws = [0.999, 0.25, 0.999, 0.5, 0];
  let i = 0;
  const c = client(`ws://127.0.0.1:${server.address().port}/ws`, {
    backoffBase: 20, backoffCap: 80, maxAttempts: draws.length, random: () => draws[i++],
  });
  await waitFor(() => c.state === 'closed', { what: 'gave up after maxAttempts' });
  const delays = c.seen.state.filter((s) => s.state === 'reconnecting');
  // ceilings 20, 40, 80 (the cap), 80, 80; each delay a draw in [0, ceiling)
  assert.deepEqual(delays.map((s) => s.delay), [19, 10, 79, 40, 0]);
  assert.deepEqual(delays.map((s) => s.code), [1006, 1006, 1006, 1006, 1006]);
  assert.equal(upgrades.length, draws.length + 1, 'the first attempt and one per delay');
  for (let k = 1; k < upgrades.length; k++) {
    assert.ok(upgrades[k] - upgrades[k - 1] >= delays[k - 1].delay - 2, `attempt ${k} came ${upgrades[k] - upgrades[k - 1]} ms after the previous, before its ${delays[k - 1].delay} ms`);
  }
  assert.equal(c.seen.errors.filter((e) => e.code === 'connect_failed').length, draws.length + 1);
  assert.ok(!c.seen.close.some((e) => e.opened));
});
