// Pure logic of client.js: backoff schedule, offline queue, resume bookkeeping, close codes,
// member bookkeeping (counts, modes, lists) and member paging.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backoffCeiling, backoffDelay, BACKOFF_BASE_MS, BACKOFF_CAP_MS,
  OfflineQueue, ResumeTracker, compareIds, parseId, closeAction,
  MemberTracker, pageMembers, collectMembers, MEMBERS_LIMIT_MAX,
} from '../../crates/gateway/static/client.js';

test('backoff: exponential ceilings from 500 ms, capped at 20 s', () => {
  assert.equal(BACKOFF_BASE_MS, 500);
  assert.equal(BACKOFF_CAP_MS, 20000);
  const ceilings = Array.from({ length: 9 }, (_, i) => backoffCeiling(i));
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000]);
  assert.equal(backoffCeiling(5000), 20000); // no overflow
  assert.equal(backoffCeiling(3, 100, 700), 700);
});

test('backoff: full jitter, uniformly in [0, ceiling)', () => {
  assert.equal(backoffDelay(0, { random: () => 0 }), 0);
  assert.equal(backoffDelay(0, { random: () => 0.999999 }), 499);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 2000);
  assert.equal(backoffDelay(20, { random: () => 0.5 }), 10000);
  for (let a = 0; a < 12; a++) {
    let max = 0; let min = Infinity;
    for (let i = 0; i < 400; i++) {
      const d = backoffDelay(a);
      assert.ok(Number.isInteger(d) && d >= 0 && d < backoffCeiling(a), `attempt ${a}: ${d}`);
      max = Math.max(max, d); min = Math.min(min, d);
    }
    // jitter spreads over the whole range, not only near the ceiling
    assert.ok(min < backoffCeiling(a) * 0.25 && max > backoffCeiling(a) * 0.75, `attempt ${a}: ${min}..${max}`);
  }
});

test('offline queue: FIFO order, bounded, the newest refused when full', () => {
  const q = new OfflineQueue(3);
  assert.ok(q.push('a') && q.push('b') && q.push('c'));
  assert.equal(q.push('d'), false);
  assert.equal(q.size, 3);
  assert.deepEqual(q.drain(), ['a', 'b', 'c']);
  assert.equal(q.size, 0);
  q.push('x'); q.push('y'); q.push('z');
  assert.deepEqual(q.remove((s) => s === 'y'), ['y']);
  assert.deepEqual(q.drain(), ['x', 'z']);
  const zero = new OfflineQueue(0);
  assert.equal(zero.push(1), false);
});

test('ids compare numerically, not as strings', () => {
  assert.deepEqual(parseId('1700000000000-12'), [1700000000000, 12]);
  assert.equal(parseId('nope'), null);
  assert.ok(compareIds('1700000000000-10', '1700000000000-9') > 0);
  assert.ok(compareIds('999-0', '1000-0') < 0);
  assert.equal(compareIds('5-5', '5-5'), 0);
});

const msg = (room, id) => ({ type: 'message', room, id, content: id });

test('resume: first join without since, rejoin with since and epoch', () => {
  const t = new ResumeTracker();
  assert.deepEqual(t.joinFrame('lobby'), { type: 'join', room: 'lobby' });
  // joined of an empty room: resume from "0-0"
  let r = t.joined({ type: 'joined', room: 'lobby', last_id: null, epoch: 'E1', recovered: true });
  assert.equal(r.recovered, true);
  assert.deepEqual(t.joinFrame('lobby'), { type: 'join', room: 'lobby', since: '0-0', epoch: 'E1' });
  t.joined({ type: 'joined', room: 'lobby', last_id: null, epoch: 'E1', recovered: true });
  // live messages advance the position; duplicates are recognised
  assert.equal(t.accept(msg('lobby', '10-0')), 'deliver');
  assert.equal(t.accept(msg('lobby', '10-1')), 'deliver');
  assert.equal(t.accept(msg('lobby', '10-0')), 'duplicate');
  assert.equal(t.accept(msg('other', '1-0')), 'ignore');
  assert.deepEqual(t.joinFrame('lobby'), { type: 'join', room: 'lobby', since: '10-1', epoch: 'E1' });
  // joining a room with history: the position starts at its last_id
  t.joinFrame('news');
  t.joined({ type: 'joined', room: 'news', last_id: '7-3', epoch: 'E1', recovered: true });
  assert.deepEqual(t.joinFrame('news'), { type: 'join', room: 'news', since: '7-3', epoch: 'E1' });
});

test('resume: replay is held until joined, then delivered once (recovered:true)', () => {
  const t = new ResumeTracker();
  t.joinFrame('lobby');
  t.joined({ room: 'lobby', last_id: '5-0', epoch: 'E1', recovered: true });
  t.accept(msg('lobby', '6-0'));
  const f = t.joinFrame('lobby');
  assert.equal(f.since, '6-0');
  assert.equal(t.accept(msg('lobby', '6-0')), 'buffer');
  assert.equal(t.accept(msg('lobby', '7-0')), 'buffer');
  assert.equal(t.accept(msg('lobby', '8-0')), 'buffer');
  const r = t.joined({ room: 'lobby', last_id: '8-0', epoch: 'E1', recovered: true });
  assert.equal(r.recovered, true);
  assert.deepEqual(r.deliver.map((m) => m.id), ['7-0', '8-0']);
  assert.equal(t.accept(msg('lobby', '8-0')), 'duplicate');
  assert.equal(t.accept(msg('lobby', '9-0')), 'deliver');
});

test('resume: recovered:false hands the replay back and adopts the new epoch', () => {
  const t = new ResumeTracker();
  t.restore('lobby', '100-0', 'OLD');
  assert.deepEqual(t.joinFrame('lobby'), { type: 'join', room: 'lobby', since: '100-0', epoch: 'OLD' });
  t.accept(msg('lobby', '3-0'));
  const r = t.joined({ room: 'lobby', last_id: '3-0', epoch: 'NEW', recovered: false });
  assert.equal(r.recovered, false);
  assert.deepEqual(r.deliver, []);
  assert.deepEqual(r.dropped.map((m) => m.id), ['3-0']);
  assert.deepEqual(t.joinFrame('lobby'), { type: 'join', room: 'lobby', since: '3-0', epoch: 'NEW' });
  // a disconnect in the middle of a rejoin forgets the half-received replay
  t.accept(msg('lobby', '4-0'));
  t.disconnected();
  assert.equal(t.get('lobby').pending, false);
  assert.equal(t.accept(msg('lobby', '4-0')), 'deliver');
  t.remove('lobby');
  assert.equal(t.has('lobby'), false);
});

test('close codes: 1008 stops, everything else reconnects; a failed handshake retries', () => {
  assert.equal(closeAction(1008, true), 'stop');
  for (const c of [1000, 1001, 1006, 1011, 1013, 4000]) assert.equal(closeAction(c, true), 'reconnect');
  assert.equal(closeAction(1006, false), 'reconnect');
  assert.equal(closeAction(1008, false), 'reconnect');
});

const u = (id) => ({ user_id: id, username: id.toUpperCase() });
const ids = (state) => [...state.members.keys()].sort();

test('members: joined sets count, mode and list; complete only when a full room listed everyone', () => {
  const t = new MemberTracker();
  let s = t.joined({ type: 'joined', room: 'a', members: [u('x'), u('y')], members_count: 2, members_more: false, presence: 'full' });
  assert.deepEqual([s.membersCount, s.presenceMode, s.membersComplete], [2, 'full', true]);
  assert.deepEqual(ids(s), ['x', 'y']);
  s = t.joined({ type: 'joined', room: 'b', members: [u('x')], members_count: 150, members_more: true, presence: 'full' });
  assert.deepEqual([s.membersCount, s.membersComplete, s.members.size], [150, false, 1]);
  s = t.joined({ type: 'joined', room: 'c', members: [], members_count: 48211, members_more: false, presence: 'count' });
  assert.deepEqual([s.membersCount, s.presenceMode, s.membersComplete], [48211, 'count', false]);
  s = t.joined({ type: 'joined', room: 'd', members: [], members_count: 0, members_more: false, presence: 'off' });
  assert.deepEqual([s.membersCount, s.presenceMode, s.membersComplete], [0, 'off', false]);
  // an older server without the new fields: the list is the room, as before
  s = t.joined({ type: 'joined', room: 'e', members: [u('x'), u('y'), u('z')] });
  assert.deepEqual([s.membersCount, s.presenceMode, s.membersComplete], [3, 'full', true]);
  assert.equal(t.get('zzz'), undefined);
});

test('members: presence events keep the list and take their count', () => {
  const t = new MemberTracker();
  t.joined({ room: 'a', members: [u('x')], members_count: 1, members_more: false, presence: 'full' });
  let r = t.presence({ type: 'presence', room: 'a', event: 'join', user: u('y'), count: 2 });
  assert.equal(r.modeChanged, false);
  assert.deepEqual([r.state.membersCount, ids(r.state), r.state.membersComplete], [2, ['x', 'y'], true]);
  r = t.presence({ type: 'presence', room: 'a', event: 'leave', user: u('x'), count: 1 });
  assert.deepEqual([r.state.membersCount, ids(r.state)], [1, ['y']]);
  // the server's count wins over the list's size (a big room lists only some)
  t.joined({ room: 'b', members: [u('x')], members_count: 500, members_more: true, presence: 'full' });
  r = t.presence({ room: 'b', event: 'join', user: u('new'), count: 501 });
  assert.deepEqual([r.state.membersCount, r.state.members.size, r.state.membersComplete], [501, 2, false]);
  // without count (an older server): +1 / -1
  t.joined({ room: 'c', members: [u('x')] });
  t.presence({ room: 'c', event: 'join', user: u('y') });
  t.presence({ room: 'c', event: 'join', user: u('y') });
  assert.equal(t.get('c').membersCount, 2);
  t.presence({ room: 'c', event: 'leave', user: u('x') });
  assert.equal(t.get('c').membersCount, 1);
  // a room not joined is not tracked
  assert.equal(t.presence({ room: 'nope', event: 'join', user: u('x'), count: 1 }), null);
  assert.equal(t.presenceCount({ room: 'nope', count: 1 }), null);
});

test('members: presence_count sets the count; a full room over its limit switches to count and back', () => {
  const t = new MemberTracker();
  t.joined({ room: 'c', members: [], members_count: 10, members_more: false, presence: 'count' });
  let r = t.presenceCount({ type: 'presence_count', room: 'c', count: 11 });
  assert.deepEqual([r.modeChanged, r.state.membersCount, r.state.presenceMode], [false, 11, 'count']);

  t.joined({ room: 'f', members: [u('a'), u('b')], members_count: 2, members_more: false, presence: 'full' });
  r = t.presenceCount({ type: 'presence_count', room: 'f', count: 1001 });
  assert.equal(r.modeChanged, true);
  assert.deepEqual([r.state.presenceMode, r.state.membersCount, r.state.membersComplete, r.state.members.size], ['count', 1001, false, 0]);
  // back under the limit: presence events resume, the list is incomplete until re-paged
  r = t.presence({ type: 'presence', room: 'f', event: 'leave', user: u('zz'), count: 899 });
  assert.equal(r.modeChanged, true);
  assert.deepEqual([r.state.presenceMode, r.state.membersCount, r.state.membersComplete], ['full', 899, false]);
  r = t.presence({ type: 'presence', room: 'f', event: 'join', user: u('q'), count: 900 });
  assert.deepEqual([r.modeChanged, ids(r.state), r.state.membersComplete], [false, ['q'], false]);
});

test('members: paging from the first page to the last completes the list, minding joins and leaves meanwhile', () => {
  const t = new MemberTracker();
  t.joined({ room: 'a', members: [u('a0'), u('a1')], members_count: 5, members_more: true, presence: 'full' });
  const scan = t.request('a', undefined);
  let r = t.page('a', undefined, { type: 'members', room: 'a', members: [u('a0'), u('a1')], next_cursor: 'c1', count: 5 }, scan);
  assert.equal(r.completed, false);
  // a2 leaves and a5 joins while the scan goes on
  t.presence({ room: 'a', event: 'leave', user: u('a2'), count: 4 });
  t.presence({ room: 'a', event: 'join', user: u('a5'), count: 5 });
  assert.equal(t.request('a', 'c1'), scan);
  // this page was read before a2 left: a2 must not come back
  r = t.page('a', 'c1', { type: 'members', room: 'a', members: [u('a2'), u('a3')], next_cursor: 'c2', count: 5 }, scan);
  assert.equal(r.state.members.has('a2'), false);
  r = t.page('a', 'c2', { type: 'members', room: 'a', members: [u('a4')], next_cursor: null, count: 5 }, scan);
  assert.equal(r.completed, true);
  assert.deepEqual(ids(r.state), ['a0', 'a1', 'a3', 'a4', 'a5']);
  assert.deepEqual([r.state.membersComplete, r.state.membersCount], [true, 5]);
  // kept complete by presence events afterwards
  t.presence({ room: 'a', event: 'leave', user: u('a0'), count: 4 });
  assert.deepEqual([ids(t.get('a')), t.get('a').membersComplete], [['a1', 'a3', 'a4', 'a5'], true]);
});

test('members: a page out of sequence, a reset or count mode does not complete the list', () => {
  const t = new MemberTracker();
  const big = { room: 'a', members: [u('x')], members_count: 3, members_more: true, presence: 'full' };
  t.joined(big);
  // a page that starts in the middle adds what it lists but completes nothing
  let r = t.page('a', 'c9', { room: 'a', members: [u('y')], next_cursor: null, count: 3 }, t.request('a', 'c9'));
  assert.deepEqual([r.completed, r.state.membersComplete, ids(r.state)], [false, false, ['x', 'y']]);
  // a rejoin in the middle of a scan: its later pages do not complete the new state
  let scan = t.request('a');
  t.page('a', undefined, { room: 'a', members: [u('x')], next_cursor: 'c1', count: 3 }, scan);
  t.joined(big);
  r = t.page('a', 'c1', { room: 'a', members: [u('y'), u('z')], next_cursor: null, count: 3 }, scan);
  assert.deepEqual([r.completed, r.state.membersComplete], [false, false]);
  // a disconnect ends the scan and the completeness
  t.joined({ room: 'b', members: [u('x')], members_count: 1, members_more: false, presence: 'full' });
  scan = t.request('b');
  t.disconnected();
  assert.equal(t.get('b').membersComplete, false);
  r = t.page('b', undefined, { room: 'b', members: [u('x')], next_cursor: null, count: 1 }, scan);
  assert.equal(r.completed, false);
  // count mode: pages are known members, never a complete list
  t.joined({ room: 'c', members: [], members_count: 2, members_more: false, presence: 'count' });
  scan = t.request('c');
  r = t.page('c', undefined, { room: 'c', members: [u('x'), u('y')], next_cursor: null, count: 2 }, scan);
  assert.deepEqual([r.completed, r.state.membersComplete, ids(r.state)], [false, false, ['x', 'y']]);
  // a room not joined: nothing kept
  assert.equal(t.request('zz'), null);
  assert.equal(t.page('zz', undefined, { room: 'zz', members: [u('x')], next_cursor: null, count: 1 }), null);
  t.remove('a');
  assert.equal(t.has('a'), false);
});

/** A fake room of `n` users paged like the server: cursor = index of the next user. */
function fakeRoom(n, { log = [], emptyEvery = 0 } = {}) {
  const users = Array.from({ length: n }, (_, i) => u(`u${String(i).padStart(4, '0')}`));
  let calls = 0;
  const fetchPage = async (cursor, limit) => {
    calls++;
    log.push({ cursor, limit });
    assert.ok(limit >= 1 && limit <= MEMBERS_LIMIT_MAX, `limit ${limit}`);
    const at = cursor === null ? 0 : Number(cursor.split('.')[0]);
    // like an HSCAN batch, a page may come back empty with a cursor to go on
    if (emptyEvery && calls % emptyEvery === 0 && at < n) return { type: 'members', room: 'r', members: [], next_cursor: `${at}.${calls}`, count: n };
    const end = Math.min(n, at + limit);
    return { type: 'members', room: 'r', members: users.slice(at, end), next_cursor: end >= n ? null : String(end), count: n };
  };
  return { users, fetchPage };
}

test('paging: stops at the null cursor; each user once; empty pages go on', async () => {
  const log = [];
  const { users, fetchPage } = fakeRoom(150, { log });
  const pages = [];
  for await (const p of pageMembers(fetchPage, { limit: 20 })) pages.push(p);
  assert.equal(pages.length, 8);
  assert.equal(pages.at(-1).next_cursor, null);
  assert.deepEqual(log.map((l) => l.cursor), [null, '20', '40', '60', '80', '100', '120', '140']);
  const all = await collectMembers(fetchPage, { limit: 20 });
  assert.equal(all.complete, true);
  assert.equal(all.next_cursor, null);
  assert.equal(all.count, 150);
  assert.deepEqual(all.members.map((x) => x.user_id), users.map((x) => x.user_id));
  const withGaps = await collectMembers(fakeRoom(150, { emptyEvery: 3 }).fetchPage, { limit: 20 });
  assert.equal(withGaps.members.length, 150);
  assert.equal(withGaps.complete, true);
  // an empty room: one page
  const none = await collectMembers(fakeRoom(0).fetchPage);
  assert.deepEqual([none.members, none.complete, none.pages], [[], true, 1]);
  // duplicates across pages (a room that changed during the scan) are listed once
  let n = 0;
  const dup = await collectMembers(async () => (++n === 1
    ? { members: [u('a'), u('b')], next_cursor: 'x', count: 3 }
    : { members: [u('b'), u('c')], next_cursor: null, count: 3 }));
  assert.deepEqual(dup.members.map((x) => x.user_id), ['a', 'b', 'c']);
});

test('paging: bounded by max (never asks for more than is left), resumable from its cursor', async () => {
  const log = [];
  const { fetchPage } = fakeRoom(150, { log });
  const some = await collectMembers(fetchPage, { limit: 20, max: 50 });
  assert.equal(some.members.length, 50);
  assert.equal(some.complete, false);
  assert.equal(some.next_cursor, '50');
  assert.deepEqual(log.map((l) => l.limit), [20, 20, 10]);
  const rest = await collectMembers(fetchPage, { limit: 1000, cursor: some.next_cursor });
  assert.equal(rest.members.length, 100);
  assert.equal(rest.complete, true);
  // max exactly the room: complete
  assert.equal((await collectMembers(fetchPage, { limit: 50, max: 150 })).complete, true);
  // max 0: nothing asked
  log.length = 0;
  const zero = await collectMembers(fetchPage, { max: 0 });
  assert.deepEqual([zero.members.length, zero.complete, log.length], [0, false, 0]);
  // limit above the protocol's bound is clamped
  log.length = 0;
  await collectMembers(fetchPage, { limit: 5000 });
  assert.equal(log[0].limit, MEMBERS_LIMIT_MAX);
  // a server that sends more than asked is cut at max
  const greedy = await collectMembers(async () => ({ members: [u('a'), u('b'), u('c')], next_cursor: 'x', count: 9 }), { max: 2 });
  assert.deepEqual([greedy.members.length, greedy.complete], [2, false]);
});

test('paging: rate_limited is retried after a pause; other errors and cursor loops end it', async () => {
  const slept = [];
  let calls = 0;
  const flaky = async (cursor) => {
    calls++;
    if (calls === 2) throw Object.assign(new Error('slow down'), { code: 'rate_limited' });
    return cursor === null ? { members: [u('a')], next_cursor: 'c', count: 2 } : { members: [u('b')], next_cursor: null, count: 2 };
  };
  const all = await collectMembers(flaky, { sleep: async (ms) => { slept.push(ms); }, retryDelayMs: 7 });
  assert.deepEqual([all.members.length, all.complete, slept], [2, true, [7]]);
  await assert.rejects(collectMembers(async () => { throw Object.assign(new Error('no'), { code: 'forbidden' }); }), (e) => e.code === 'forbidden');
  await assert.rejects(
    collectMembers(async () => { throw Object.assign(new Error('x'), { code: 'rate_limited' }); }, { retries: 2, sleep: async () => {} }),
    (e) => e.code === 'rate_limited');
  await assert.rejects(collectMembers(async () => ({ members: [], next_cursor: 'same', count: 1 })), (e) => e.code === 'cursor_loop');
  // a cursor that comes back with users is bounded by max, not an error
  const again = await collectMembers(async () => ({ members: [u('a')], next_cursor: 'same', count: 1 }), { max: 3 });
  assert.deepEqual([again.members.length, again.pages, again.complete], [1, 3, false]);
});
