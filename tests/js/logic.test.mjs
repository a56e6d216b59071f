// Pure logic of client.js: backoff schedule, offline queue, resume bookkeeping, close codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backoffCeiling, backoffDelay, BACKOFF_BASE_MS, BACKOFF_CAP_MS,
  OfflineQueue, ResumeTracker, compareIds, parseId, closeAction,
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
