// client.js and token refresh against a real wsgate (--jwt-secret, short-lived tokens):
// getToken is asked again on `refresh_needed` and the session continues past the first
// token's expiry without reconnecting; a refused refresh reconnects with a fresh token;
// with getToken an expiry (1008) reconnects instead of stopping.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Client, closeAction } from '../../crates/gateway/static/client.js';
import { WebSocket, startGateway, waitFor, nextEvent } from './helpers.mjs';

const SECRET = 'token-refresh-test-secret-0123456789abcdef';
const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}
const nowS = () => Math.floor(Date.now() / 1000);

/** A client whose getToken hands out what `next(call)` says, counting the calls. */
function client(url, next, opts = {}) {
  const calls = [];
  const c = new Client(url, {
    WebSocket,
    backoffBase: 50,
    getToken: async () => { calls.push(Date.now()); return next(calls.length); },
    ...opts,
  });
  cleanups.push(async () => c.close());
  const seen = { state: [], close: [], refreshed: [], needed: [], errors: [], welcome: [] };
  c.on('state', (s) => seen.state.push(s.state));
  c.on('close', (e) => seen.close.push(e.code));
  c.on('refreshed', (f) => seen.refreshed.push(f));
  c.on('refresh_needed', (f) => seen.needed.push(f));
  c.on('error', (e) => seen.errors.push(e));
  c.on('welcome', (w) => seen.welcome.push(w.session_id));
  c.calls = calls;
  c.seen = seen;
  return c;
}

async function gateway(...args) {
  const gw = await startGateway({ args: ['--jwt-secret', SECRET, ...args] });
  cleanups.push(() => gw.stop());
  return gw;
}

test('closeAction: 1008 stops, unless a fresh token can be had', () => {
  assert.equal(closeAction(1008, true), 'stop');
  assert.equal(closeAction(1008, true, { renewable: true }), 'reconnect');
  assert.equal(closeAction(1001, true, { renewable: false }), 'reconnect');
});

test('getToken is asked again on refresh_needed and the session outlives each token', { timeout: 30000 }, async () => {
  const gw = await gateway('--refresh-notice-s', '2');
  // Every token lives 3 s: noticed 2 s before its end, each refresh buys another.
  const c = client(gw.ws, () => jwt({ sub: 'dana', name: 'Dana', exp: nowS() + 3 }));
  const welcome = await nextEvent(c, 'welcome');
  await c.join('r');
  const needed = await nextEvent(c, 'refresh_needed');
  assert.ok(needed.exp >= nowS(), needed);
  // Past the first token's expiry, after two refreshes: the same session, never closed.
  await waitFor(() => c.seen.refreshed.length >= 2 && Date.now() / 1000 > needed.exp + 0.5,
    { timeoutMs: 15000, what: 'two refreshes past the first exp' });
  assert.ok(c.calls.length >= 3, `getToken calls: ${c.calls.length}`);
  assert.ok(c.seen.refreshed.every((f, i) => i === 0 || f.exp >= c.seen.refreshed[i - 1].exp), c.seen.refreshed);
  assert.deepEqual(c.seen.close, []);
  assert.deepEqual(c.seen.welcome, [welcome.session_id]);
  assert.equal(c.state, 'open');
  assert.ok(!c.seen.state.includes('reconnecting'), c.seen.state);
  const ack = await c.send('r', 'still the same session');
  assert.equal(ack.room, 'r');
});

test('a refused refresh reconnects with a fresh token and rejoins', { timeout: 30000 }, async () => {
  const gw = await gateway('--refresh-notice-s', '30');
  // The first token is short (noticed at once); the second is another user's (refused
  // with forbidden); the third is good for long.
  const c = client(gw.ws, (n) => {
    if (n === 1) return jwt({ sub: 'erin', exp: nowS() + 20 });
    if (n === 2) return jwt({ sub: 'mallory', exp: nowS() + 600 });
    return jwt({ sub: 'erin', exp: nowS() + 600 });
  });
  let joined = 0;
  c.on('joined', () => { joined += 1; });
  await c.join('r');
  await waitFor(() => c.seen.welcome.length === 2 && c.state === 'open', { what: 'the reconnect' });
  const failed = c.seen.errors.find((e) => e.code === 'refresh_failed');
  assert.ok(failed, c.seen.errors.map((e) => e.code).join());
  assert.equal(failed.frame?.code, 'forbidden');
  assert.deepEqual(c.seen.close, [4001]);
  assert.notEqual(c.seen.welcome[0], c.seen.welcome[1]);
  assert.equal(c.calls.length, 3);
  // The room was rejoined on the new connection.
  await waitFor(() => joined === 2, { what: 'the rejoin' });
  assert.equal((await c.send('r', 'back')).room, 'r');
});

test('with getToken, an expired session (1008) reconnects with a fresh token', { timeout: 30000 }, async () => {
  const gw = await gateway('--refresh-notice-s', '0');
  const c = client(gw.ws, (n) => jwt({ sub: 'finn', exp: nowS() + (n === 1 ? 1 : 600) }));
  let auth = 0;
  c.on('auth', () => { auth += 1; });
  await nextEvent(c, 'welcome');
  await waitFor(() => c.seen.welcome.length === 2 && c.state === 'open', { what: 'the reconnect after 1008' });
  assert.deepEqual(c.seen.close, [1008]);
  assert.equal(auth, 0);
  assert.equal(c.calls.length, 2);
  assert.deepEqual(c.seen.needed, []);
});
