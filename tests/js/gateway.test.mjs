// client.js against a real wsgate: requests through ref, events, offline queue,
// close codes, reconnect + rejoin with since/epoch, heartbeat, notifications.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Client } from '../../crates/gateway/static/client.js';
import { WebSocket, startGateway, startRedis, freePort, waitFor, nextEvent, postJson } from './helpers.mjs';

const cleanups = [];
after(async () => { for (const c of cleanups.reverse()) await c(); });

/** A WebSocket class (the `ws` package) that records every frame the client sends. */
function recordingWS(log) {
  return class extends WebSocket {
    send(data) { log.push(JSON.parse(data)); super.send(data); }
  };
}

function client(url, opts = {}) {
  const c = new Client(url, { WebSocket, ...opts });
  cleanups.push(async () => c.close());
  const seen = { message: [], state: [], resync: [], errors: [] };
  c.on('message', (m) => seen.message.push(m));
  c.on('state', (s) => seen.state.push(s));
  c.on('resync', (r) => seen.resync.push(r));
  c.on('error', (e) => seen.errors.push(e));
  c.seen = seen;
  return c;
}

const contents = (list, room) => list.filter((m) => m.room === room).map((m) => m.content);

test('requests, events and errors through ref', async () => {
  const gw = await startGateway();
  cleanups.push(() => gw.stop());
  const alice = client(gw.ws, { userId: 'alice', username: 'Alice' });
  const bob = client(gw.ws, { userId: 'bob', username: 'Bob' });
  const joined = await alice.join('lobby');
  assert.equal(joined.room, 'lobby');
  assert.equal(typeof joined.epoch, 'string');
  assert.equal(alice.state, 'open');
  const presence = nextEvent(alice, 'presence', (p) => p.user.user_id === 'bob');
  const bobJoined = await bob.join('lobby');
  assert.deepEqual(bobJoined.members.map((m) => m.user_id), ['alice', 'bob']);
  assert.equal((await presence).event, 'join');

  const typing = nextEvent(alice, 'typing', (t) => t.users.some((u) => u.user_id === 'bob'));
  bob.typing('lobby', true);
  await typing;

  const ack = await bob.send('lobby', 'hello alice');
  assert.match(ack.id, /^\d+-\d+$/);
  await waitFor(() => alice.seen.message.find((m) => m.id === ack.id), { what: 'message at alice' });

  const hist = await alice.history('lobby', { limit: 10 });
  assert.deepEqual(hist.messages.map((m) => m.content), ['hello alice']);

  const direct = nextEvent(bob, 'direct');
  await alice.direct('bob', 'psst');
  const d = await direct;
  assert.equal(d.content, 'psst');
  assert.equal(d.from.user_id, 'alice');

  await assert.rejects(alice.send('elsewhere', 'x'), (e) => e.code === 'not_member');
  await assert.rejects(alice.join('bad room!'), (e) => e.code === 'invalid_field');
  assert.equal(alice.tracker.has('bad room!'), false);
  const pong = await alice.ping();
  assert.equal(pong.type, 'pong');

  // notifications: every tab in step
  const tab2 = client(gw.ws, { userId: 'alice', username: 'Alice' });
  await waitFor(() => tab2.state === 'open', { what: 'tab2 open' });
  const n1 = nextEvent(alice, 'notification');
  const n2 = nextEvent(tab2, 'notification');
  const { ids } = await postJson(gw.http, '/api/notifications', { user_id: 'alice', title: 'Hi', body: 'there', kind: 'success' });
  assert.equal((await n1).unread, 1);
  assert.equal((await n2).notification.id, ids[0]);
  const list = await alice.notifications({ limit: 10 });
  assert.equal(list.items.length, 1);
  assert.equal(list.unread, 1);
  const readElsewhere = nextEvent(tab2, 'notifications_read');
  const marked = await alice.markRead([ids[0]]);
  assert.equal(marked.unread, 0);
  assert.deepEqual((await readElsewhere).ids, [ids[0]]);
  assert.equal(tab2.unread, 0);
  tab2.close();

  const left = await bob.leave('lobby');
  assert.equal(left.type, 'left');
  assert.equal(bob.tracker.has('lobby'), false);
});

test('SIGTERM: 1001, offline queue (ordered, bounded), reconnect to the restarted gateway, rejoin with since and epoch', async () => {
  let gw = await startGateway();
  const port = gw.port;
  cleanups.push(() => gw.stop());
  const sent = [];
  const alice = client(gw.ws, { userId: 'alice', username: 'Alice', WebSocket: recordingWS(sent), queueLimit: 5 });
  const first = await alice.join('q');
  await alice.send('q', 'before');
  await waitFor(() => alice.seen.message.length === 1, { what: 'own message' });
  const lastId = alice.seen.message[0].id;

  const reconnecting = nextEvent(alice, 'state', (s) => s.state === 'reconnecting');
  const hinted = nextEvent(alice, 'reconnect_hint');
  await gw.stop('SIGTERM');
  const hint = await hinted;
  const r = await reconnecting;
  assert.equal(r.code, 1001);
  // the draining node said when to come back (a draw from --reconnect-window-ms, 1 s)
  assert.ok(hint.delay >= 0 && hint.delay <= 1000, `hinted delay ${hint.delay}`);
  assert.equal(r.delay, hint.delay);
  assert.ok(r.retryAt >= Date.now() - 50);

  // offline: frames queue (bounded), in order
  const queued = ['q1', 'q2', 'q3', 'q4', 'q5'].map((c) => alice.send('q', c));
  await assert.rejects(alice.send('q', 'q6'), (e) => e.code === 'queue_full');
  assert.equal(alice.queue.size, 5);

  gw = await startGateway({ port });
  cleanups.push(() => gw.stop());
  const resync = nextEvent(alice, 'resync', (x) => x.room === 'q', 30000);
  const acks = await Promise.all(queued);
  assert.equal(acks.length, 5);
  await resync;
  assert.equal(alice.state, 'open');
  // the rejoin carried since (the last id seen) and the epoch of the previous joined
  const rejoin = sent.filter((f) => f.type === 'join' && f.room === 'q').at(-1);
  assert.equal(rejoin.since, lastId);
  assert.equal(rejoin.epoch, first.epoch);
  // embedded broker: history lost with the process, so recovered:false is surfaced
  assert.equal(alice.seen.resync.length, 1);
  assert.notEqual(alice.seen.resync[0].epoch, first.epoch);
  // the queue went out after the rejoin and in order
  const order = sent.map((f) => (f.type === 'join' ? 'join' : f.content)).filter(Boolean);
  const i = order.lastIndexOf('join');
  assert.deepEqual(order.slice(i), ['join', 'q1', 'q2', 'q3', 'q4', 'q5']);
  const hist = await alice.history('q');
  assert.deepEqual(hist.messages.map((m) => m.content), ['q1', 'q2', 'q3', 'q4', 'q5']);
  // the attempt counter starts afresh after a healthy connection
  assert.equal(alice.seen.errors.filter((e) => e.code !== 'connect_failed').length, 0);
});

test('redis: messages sent while disconnected are delivered once after the reconnect (recovered:true)', async () => {
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  let g1 = await startGateway({ redisUrl: redis.url });
  const g2 = await startGateway({ redisUrl: redis.url });
  cleanups.push(() => g1.stop(), () => g2.stop());
  const sent = [];
  const alice = client(g1.ws, { userId: 'alice', username: 'Alice', WebSocket: recordingWS(sent) });
  const bob = client(g2.ws, { userId: 'bob', username: 'Bob' });
  await alice.join('r');
  await bob.join('r');
  for (const c of ['m1', 'm2']) await bob.send('r', c);
  await waitFor(() => alice.seen.message.length === 2, { what: 'm1, m2 at alice' });

  const down = nextEvent(alice, 'state', (s) => s.state === 'reconnecting');
  await g1.stop('SIGTERM');
  assert.equal((await down).code, 1001);
  for (const c of ['m3', 'm4', 'm5']) await bob.send('r', c);
  g1 = await startGateway({ port: g1.port, redisUrl: redis.url });
  cleanups.push(() => g1.stop());
  const joined = await nextEvent(alice, 'joined', (j) => j.room === 'r', 30000);
  assert.equal(joined.recovered, true);
  const rejoin = sent.filter((f) => f.type === 'join').at(-1);
  assert.equal(rejoin.since, alice.seen.message[1].id);
  await bob.send('r', 'm6');
  await waitFor(() => contents(alice.seen.message, 'r').includes('m6'), { what: 'm6 at alice' });
  assert.deepEqual(contents(alice.seen.message, 'r'), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6']);
  assert.equal(alice.seen.resync.length, 0);
});

function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

test('auth: a refused handshake is retried up to maxAttempts; 1008 stops with an auth event', async () => {
  const secret = 'test-secret-0123456789';
  const gw = await startGateway({ args: ['--jwt-secret', secret] });
  cleanups.push(() => gw.stop());
  // a bad token: the handshake fails before open (the 401 is invisible to a browser)
  const bad = client(gw.ws, { token: 'not-a-jwt', maxAttempts: 2, backoffBase: 20 });
  await waitFor(() => bad.state === 'closed', { what: 'give up' });
  assert.equal(bad.seen.errors.filter((e) => e.code === 'connect_failed').length, 3);
  assert.deepEqual(bad.seen.state.map((s) => s.state),
    ['connecting', 'reconnecting', 'connecting', 'reconnecting', 'connecting', 'closed']);

  // a token (from a provider, asked at every connect) that expires while connected
  let asked = 0;
  const exp = Math.floor(Date.now() / 1000) + 2;
  const c = client(gw.ws, { token: () => { asked++; return jwt(secret, { sub: 'carol', name: 'Carol', exp }); } });
  await c.join('lobby');
  const auth = await nextEvent(c, 'auth', () => true, 20000);
  assert.equal(auth.code, 1008);
  await waitFor(() => c.state === 'closed', { what: 'closed' });
  assert.equal(asked, 1);
  assert.equal(c.seen.state.filter((s) => s.state === 'reconnecting').length, 0);
});

test('heartbeat: ping when idle, reconnect when no pong comes', async () => {
  const port = await freePort();
  const server = new WebSocket.Server({ host: '127.0.0.1', port });
  cleanups.push(() => new Promise((r) => { for (const c of server.clients) c.terminate(); server.close(() => r()); }));
  const pings = [];
  let connections = 0;
  server.on('connection', (sock) => {
    connections++;
    sock.send(JSON.stringify({ type: 'welcome', protocol: 1, session_id: `s${connections}`, node_id: 'fake', user_id: 'u', username: 'u', heartbeat_ms: 25000 }));
    // the first connection goes silent; the second answers pings
    sock.on('message', (d) => {
      const f = JSON.parse(String(d));
      if (f.type === 'ping') { pings.push(connections); if (connections > 1) sock.send(JSON.stringify({ type: 'pong', ref: f.ref })); }
    });
  });
  const c = client(`ws://127.0.0.1:${port}/ws`, { pingIntervalMs: 300, pongTimeoutMs: 300, backoffBase: 20 });
  const closed = await nextEvent(c, 'close');
  assert.equal(closed.code, 4000);
  assert.equal(closed.reason, 'heartbeat timeout');
  await waitFor(() => connections === 2 && c.state === 'open', { what: 'reconnected' });
  // the live connection answers pings and stays up through several intervals
  await waitFor(() => pings.filter((n) => n === 2).length >= 3, { what: 'three answered pings' });
  assert.equal(connections, 2);
});

test('state restore: a client that lost its memory rejoins the rooms of welcome.restore with since', async () => {
  const gw = await startGateway();
  cleanups.push(() => gw.stop());
  const first = client(gw.ws, { userId: 'dora', username: 'Dora' });
  await first.join('kept');
  const ack = await first.send('kept', 'one');
  await waitFor(() => first.seen.message.length === 1, { what: 'own message' });
  first.close();
  // the state is saved when the server has seen that session end
  await waitFor(async () => (await (await fetch(`${gw.http}/api/stats`)).json()).active_connections === 0, { what: 'session closed' });
  const sent = [];
  const again = client(gw.ws, { userId: 'dora', username: 'Dora', WebSocket: recordingWS(sent) });
  const welcome = await nextEvent(again, 'welcome');
  await waitFor(() => again.state === 'open', { what: 'open' });
  assert.deepEqual(welcome.restore?.rooms?.map((r) => [r.room, r.last_id]), [['kept', ack.id]]);
  const [joined] = await again.restore();
  assert.equal(joined.recovered, true);
  const join = sent.find((f) => f.type === 'join');
  assert.equal(join.since, ack.id);
  assert.equal(join.epoch, welcome.restore.rooms[0].epoch);
  assert.deepEqual(again.seen.message, []);
});

/** Opens `n` clients (user ids `${prefix}000`…) and joins each to `room`; resolves the clients. */
async function joinMany(url, room, n, prefix) {
  const out = Array.from({ length: n }, (_, i) => {
    const id = `${prefix}${String(i).padStart(3, '0')}`;
    return client(url, { userId: id, username: `User ${id}`, pingIntervalMs: 0 });
  });
  // in batches, so that the test does not depend on how many handshakes a node takes at once
  for (let i = 0; i < out.length; i += 25) await Promise.all(out.slice(i, i + 25).map((c) => c.join(room)));
  return out;
}

test('big room: joined lists --joined-members users and says members_more; loadAllMembers lists each of 150 once', { timeout: 90000 }, async () => {
  const gw = await startGateway({ args: ['--joined-members', '20'] });
  cleanups.push(() => gw.stop());
  const crowd = await joinMany(gw.ws, 'big', 149, 'u');
  const last = client(gw.ws, { userId: 'u149', username: 'User u149', pingIntervalMs: 0 });
  const rosterEvents = [];
  last.on('roster', (r) => rosterEvents.push(r));
  const joined = await last.join('big');
  assert.equal(joined.presence, 'full');
  assert.equal(joined.members_count, 150);
  assert.equal(joined.members_more, true);
  assert.equal(joined.members.length, 20);
  let state = last.memberState('big');
  assert.deepEqual([state.membersCount, state.presenceMode, state.membersComplete], [150, 'full', false]);
  // the 20 of joined (and perhaps already the presence of this very join)
  assert.ok(joined.members.every((m) => state.members.has(m.user_id)));
  assert.ok(state.members.size <= 21);

  // one page by hand
  const page = await last.members('big', { limit: 7 });
  assert.equal(page.type, 'members');
  assert.equal(page.members.length, 7);
  assert.equal(typeof page.next_cursor, 'string');
  assert.equal(page.count, 150);

  const pagesSeen = [];
  last.on('members', (m) => pagesSeen.push(m));
  const all = await last.loadAllMembers('big', { limit: 20 });
  const expected = Array.from({ length: 150 }, (_, i) => `u${String(i).padStart(3, '0')}`);
  assert.deepEqual(all.members.map((m) => m.user_id).sort(), expected);
  assert.equal(new Set(all.members.map((m) => m.user_id)).size, 150);
  assert.equal(all.complete, true);
  assert.equal(all.next_cursor, null);
  assert.equal(all.count, 150);
  assert.equal(all.pages, 8);
  assert.equal(pagesSeen.length, 8);
  // the raw pages list each user exactly once too (nobody joined or left meanwhile)
  const listed = pagesSeen.flatMap((p) => p.members.map((m) => m.user_id));
  assert.equal(listed.length, 150);
  assert.deepEqual([...listed].sort(), expected);
  // the client's state is now the whole room, and stays current through presence
  state = last.memberState('big');
  assert.deepEqual([state.membersComplete, state.members.size, state.membersCount], [true, 150, 150]);
  assert.ok(rosterEvents.some((r) => r.reason === 'members' && r.completed));
  assert.equal(state.members.get('u042').username, 'User u042');
  const gone = nextEvent(last, 'presence', (p) => p.user.user_id === 'u000' && p.event === 'leave');
  await crowd[0].leave('big');
  assert.equal((await gone).count, 149);
  state = last.memberState('big');
  assert.deepEqual([state.membersComplete, state.members.size, state.membersCount, state.members.has('u000')], [true, 149, 149, false]);

  // bounded by max: stops early, resumable from its cursor
  const some = await last.loadAllMembers('big', { limit: 20, max: 30 });
  assert.deepEqual([some.members.length, some.complete, typeof some.next_cursor], [30, false, 'string']);
  const rest = await last.loadAllMembers('big', { limit: 50, cursor: some.next_cursor });
  assert.equal(rest.complete, true);
  assert.equal(new Set([...some.members, ...rest.members].map((m) => m.user_id)).size, 149);
  // a cursor the server did not make
  await assert.rejects(last.members('big', { cursor: 'zz-not-a-cursor' }), (e) => e.code === 'invalid_field');
  for (const c of [...crowd, last]) c.close();
});

test('count mode: presence_count within 3 s, the count in memberState; room_full rejects the join', { timeout: 60000 }, async () => {
  const gw = await startGateway({ args: ['--presence', 'count', '--max-members', '2'] });
  cleanups.push(() => gw.stop());
  const alice = client(gw.ws, { userId: 'alice', username: 'Alice' });
  const bob = client(gw.ws, { userId: 'bob', username: 'Bob' });
  const carol = client(gw.ws, { userId: 'carol', username: 'Carol' });
  const joined = await alice.join('cr');
  assert.equal(joined.presence, 'count');
  assert.deepEqual(joined.members, []);
  assert.equal(joined.members_count, 1);
  assert.equal(alice.memberState('cr').presenceMode, 'count');
  const presences = [];
  alice.on('presence', (p) => presences.push(p));
  const t0 = Date.now();
  const counted = nextEvent(alice, 'presence_count', (p) => p.room === 'cr' && p.count === 2, 3000);
  await bob.join('cr');
  const pc = await counted;
  assert.ok(Date.now() - t0 <= 3000);
  assert.equal(pc.count, 2);
  assert.equal(alice.memberState('cr').membersCount, 2);
  assert.equal(alice.memberState('cr').presenceMode, 'count');
  assert.deepEqual(presences, []);
  // count rooms can still be paged; the list is never "complete" (no events keep it)
  const all = await alice.loadAllMembers('cr');
  assert.deepEqual(all.members.map((m) => m.user_id).sort(), ['alice', 'bob']);
  assert.equal(alice.memberState('cr').membersComplete, false);
  // a third user: room_full, the room is not kept for a rejoin
  await assert.rejects(carol.join('cr'), (e) => e.code === 'room_full');
  assert.equal(carol.tracker.has('cr'), false);
  assert.equal(carol.memberState('cr'), undefined);
  // a further session of a user already in it is not refused
  const bob2 = client(gw.ws, { userId: 'bob', username: 'Bob' });
  assert.equal((await bob2.join('cr')).members_count, 2);
});

test('a full room over presence_max_members switches to count and back; a rejoin resets the member state', { timeout: 60000 }, async () => {
  const gw = await startGateway({ args: ['--presence-max-members', '3'] });
  cleanups.push(() => gw.stop());
  const sent = [];
  const alice = client(gw.ws, { userId: 'alice', username: 'Alice', WebSocket: recordingWS(sent) });
  await alice.join('m');
  const others = [];
  for (const id of ['bob', 'carol']) {
    const c = client(gw.ws, { userId: id, username: id });
    others.push(c);
    const seen = nextEvent(alice, 'presence', (p) => p.user.user_id === id);
    await c.join('m');
    await seen;
  }
  let s = alice.memberState('m');
  assert.deepEqual([s.presenceMode, s.membersCount, s.membersComplete, s.members.size], ['full', 3, true, 3]);
  const modes = [];
  alice.on('presence_mode', (m) => modes.push(m.mode));
  // a fourth user takes it over the limit: only the count from now on
  const toCount = nextEvent(alice, 'presence_count', (p) => p.count === 4, 5000);
  const dave = client(gw.ws, { userId: 'dave', username: 'dave' });
  const daveJoined = await dave.join('m');
  assert.equal(daveJoined.presence, 'count');
  await toCount;
  s = alice.memberState('m');
  assert.deepEqual([s.presenceMode, s.membersCount, s.membersComplete, s.members.size], ['count', 4, false, 0]);
  assert.deepEqual(modes, ['count']);
  // back to nine tenths of the limit: full again, announced by the leave that did it
  const left = nextEvent(alice, 'presence_count', (p) => p.count === 3, 5000);
  await dave.leave('m');
  await left;
  const backToFull = nextEvent(alice, 'presence', (p) => p.user.user_id === 'carol' && p.event === 'leave', 5000);
  await others[1].leave('m');
  assert.equal((await backToFull).count, 2);
  assert.deepEqual(modes, ['count', 'full']);
  s = alice.memberState('m');
  assert.deepEqual([s.presenceMode, s.membersCount, s.membersComplete], ['full', 2, false]);
  // re-paging completes it again
  await alice.loadAllMembers('m');
  s = alice.memberState('m');
  assert.equal(s.membersComplete, true);
  assert.equal(s.members.size, s.membersCount);

  // a rejoin (after the socket drops) starts the room's state afresh from the new joined
  const rejoined = nextEvent(alice, 'joined', (j) => j.room === 'm', 20000);
  alice.ws.terminate();
  const j = await rejoined;
  s = alice.memberState('m');
  assert.equal(s.membersCount, j.members_count);
  assert.deepEqual([...s.members.keys()].sort(), j.members.map((m) => m.user_id).sort());
  assert.equal(s.membersComplete, !j.members_more && j.presence === 'full');
  assert.ok(sent.filter((f) => f.type === 'join' && f.room === 'm').at(-1).since);
});
