// client.js against real processes when the cluster moves: a `resync` after Redis lost
// its data (reloaded in place, on the same connection, with no duplicate and no hole),
// and a draining node's `reconnect` hint (when and where to come back).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Client, compareIds } from '../../crates/gateway/static/client.js';
import { WebSocket, startGateway, startRedis, waitFor, nextEvent, postJson } from './helpers.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

function client(url, opts = {}) {
  const c = new Client(url, { WebSocket, ...opts });
  cleanups.push(async () => c.close());
  c.seen = { publish: [], state: [], resync: [] };
  c.on('publish', (m) => c.seen.publish.push(m));
  c.on('state', (s) => c.seen.state.push(s));
  c.on('resync', (r) => c.seen.resync.push(r));
  return c;
}

test('resync: Redis restarted empty; the client reloads the room in place and misses nothing after it', { timeout: 60000 }, async () => {
  let redis = await startRedis();
  cleanups.push(() => redis.stop());
  const gw = await startGateway({ redisUrl: redis.url });
  cleanups.push(() => gw.stop());
  await waitFor(async () => (await fetch(`${gw.http}/readyz`)).status === 200, { what: 'ready' });
  const alice = client(gw.ws, { userId: 'alice', username: 'Alice' });
  const first = await alice.join('g');
  for (const n of [1, 2]) await postJson(gw.http, '/api/publish', { room: 'g', data: { n } });
  await waitFor(() => alice.seen.publish.length === 2, { what: 'two publishes' });
  const sessionBefore = alice.welcome.session_id;

  const resync = nextEvent(alice, 'resync', (r) => r.reason === 'gap', 30000);
  await redis.stop();
  redis = await startRedis({ port: redis.port });
  cleanups.push(() => redis.stop());
  const r = await resync;
  assert.equal(r.room, 'g');
  assert.notEqual(r.epoch, first.epoch, 'Redis lost its data: a new epoch');
  assert.ok(Array.isArray(r.messages));
  if (r.last_id !== null) for (const m of r.messages) assert.ok(compareIds(m.id, r.last_id) <= 0);
  // the same connection throughout, and the next rejoin would name the new epoch
  assert.equal(alice.welcome.session_id, sessionBefore);
  assert.ok(!alice.seen.state.some((s) => s.state === 'reconnecting'), 'no reconnect');
  assert.equal(alice.tracker.get('g').epoch, r.epoch);
  await waitFor(async () => (await fetch(`${gw.http}/readyz`)).status === 200, { what: 'ready again' });
  const after = await postJson(gw.http, '/api/publish', { room: 'g', data: { n: 3 } });
  await waitFor(() => alice.seen.publish.some((m) => m.id === after.id), { what: 'the publish after the resync' });
  assert.equal(alice.seen.publish.filter((m) => m.id === after.id).length, 1);
  const reloaded = new Set((r.messages || []).map((m) => m.id));
  assert.ok(!reloaded.has(after.id), 'a live message is not also in the reload');
});

test('reconnect hint: a draining node sends the client to --reconnect-url after the hinted delay', { timeout: 60000 }, async () => {
  const g2 = await startGateway();
  cleanups.push(() => g2.stop());
  const g1 = await startGateway({ args: ['--reconnect-url', g2.ws, '--reconnect-window-ms', '400'] });
  cleanups.push(() => g1.stop());
  const bob = client(g1.ws, { userId: 'bob', username: 'Bob' });
  await bob.join('h');
  const node1 = bob.welcome.node_id;
  const hinted = nextEvent(bob, 'reconnect_hint');
  const reconnecting = nextEvent(bob, 'state', (s) => s.state === 'reconnecting');
  g1.stop('SIGTERM');
  const hint = await hinted;
  assert.equal(hint.url, g2.ws);
  assert.equal(hint.reason, 'draining');
  assert.ok(hint.delay >= 0 && hint.delay <= 400, `delay ${hint.delay}`);
  const r = await reconnecting;
  const closedAt = Date.now();
  assert.equal(r.code, 1001);
  assert.equal(r.delay, hint.delay);
  const joined = await nextEvent(bob, 'joined', (j) => j.room === 'h', 20000);
  assert.ok(Date.now() - closedAt >= hint.delay - 20, 'not before the hinted delay');
  assert.notEqual(bob.welcome.node_id, node1, 'on the other node');
  assert.equal(bob.url, g2.ws);
  assert.equal(joined.room, 'h');
});
