// wsgate browser client: a plain ES module with no dependencies.
//
//   import { Client } from '/client.js';
//   const client = new Client('/ws', { userId: 'alice', username: 'Alice' });
//   client.on('message', (m) => console.log(m.username, m.content));
//   client.on('state', (s) => console.log(s.state, s.delay));
//   await client.join('lobby');
//   await client.send('lobby', 'hello');
//   client.memberState('lobby');             // {membersCount, presenceMode, members, membersComplete}
//   // With tokens: getToken is asked at connect, before the token expires (the client
//   // refreshes the session without reconnecting) and at every reconnect.
//   new Client('/ws', { getToken: async () => (await fetch('/my-token')).text() });
//   await client.loadAllMembers('lobby');    // pages `members` to the end (bounded by max)
//
// Protocol: docs/protocol.md (version 1). Documentation: docs/clients.md.
// The pure parts (backoff schedule, offline queue, resume and member bookkeeping, member
// paging) are exported on their own so that they can be tested without a network.

/** Reconnect delays: exponential backoff with full jitter. */
export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 20000;

/**
 * The upper bound of the delay before reconnect attempt `attempt` (0-based):
 * min(cap, base * 2^attempt).
 */
export function backoffCeiling(attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS) {
  const n = Math.max(0, Math.floor(attempt));
  // 2^n overflows to Infinity for big n; min() then gives cap.
  return Math.min(cap, base * Math.pow(2, n));
}

/**
 * "Full jitter": a delay drawn uniformly from [0, min(cap, base * 2^attempt)].
 * `random` returns a number in [0, 1) (Math.random by default; injectable for tests).
 */
export function backoffDelay(attempt, { base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS, random = Math.random } = {}) {
  return Math.floor(random() * backoffCeiling(attempt, base, cap));
}

/** Parses a message id "<ms>-<seq>" into [ms, seq] (numbers), or null. */
export function parseId(id) {
  if (typeof id !== 'string') return null;
  const m = /^(\d+)-(\d+)$/.exec(id);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** Compares two message ids numerically (not as strings): <0, 0 or >0. */
export function compareIds(a, b) {
  const x = parseId(a);
  const y = parseId(b);
  if (!x || !y) throw new TypeError(`not a message id: ${!x ? a : b}`);
  return x[0] !== y[0] ? x[0] - y[0] : x[1] - y[1];
}

/**
 * A bounded FIFO of frames waiting for a connection. `push` returns false (and keeps
 * nothing) when the queue is full: the newest frame is refused, never an older one, so
 * what does get sent keeps its order.
 */
export class OfflineQueue {
  constructor(limit = 100) {
    if (!(limit >= 0)) throw new RangeError('limit must be >= 0');
    this.limit = limit;
    this.items = [];
  }
  get size() { return this.items.length; }
  push(item) {
    if (this.items.length >= this.limit) return false;
    this.items.push(item);
    return true;
  }
  /** Removes and returns every item, oldest first. */
  drain() {
    const out = this.items;
    this.items = [];
    return out;
  }
  /** Removes the items for which `pred` is true; returns them. */
  remove(pred) {
    const gone = this.items.filter(pred);
    this.items = this.items.filter((x) => !pred(x));
    return gone;
  }
}

/**
 * Resume bookkeeping: every room the client joined, with the last message id it saw
 * and the history epoch of its last `joined`.
 *
 * - `joinFrame(room)` builds the `join` to send: with `since`/`epoch` once the room has
 *   been joined before (a rejoin), without them the first time.
 * - Frames replayed before `joined` are held back (`accept` returns 'buffer'), then on
 *   `joined` released when `recovered:true` (dropping any id already seen), or handed to
 *   the caller for a reload when `recovered:false` (ids of another epoch cannot be
 *   compared with ours).
 * - Live frames: `accept` returns 'deliver' for a new id, 'duplicate' for one already seen.
 */
export class ResumeTracker {
  constructor() {
    /** @type {Map<string, {lastId: string|null, epoch: string|null, pending: boolean, buffer: object[]}>} */
    this.rooms = new Map();
  }
  has(room) { return this.rooms.has(room); }
  list() { return [...this.rooms.keys()]; }
  get(room) { return this.rooms.get(room); }
  add(room) {
    if (!this.rooms.has(room)) this.rooms.set(room, { lastId: null, epoch: null, pending: false, buffer: [] });
    return this.rooms.get(room);
  }
  /** Seeds a room from a `welcome.restore` entry (a client that lost its memory). */
  restore(room, lastId, epoch) {
    const r = this.add(room);
    r.lastId = lastId ?? '0-0';
    r.epoch = epoch ?? null;
    return r;
  }
  remove(room) { this.rooms.delete(room); }
  /** The join frame for (re)joining `room`; marks it pending when it carries `since`. */
  joinFrame(room) {
    const r = this.add(room);
    const frame = { type: 'join', room };
    if (r.epoch !== null || r.lastId !== null) {
      frame.since = r.lastId ?? '0-0';
      if (r.epoch !== null) frame.epoch = r.epoch;
      r.pending = true;
    } else {
      r.pending = false;
    }
    r.buffer = [];
    return frame;
  }
  /**
   * A room frame with an `id` (`message`, or `publish` to a room) arrived.
   * Returns 'deliver', 'buffer', 'duplicate' or 'ignore' (a room not tracked).
   */
  accept(frame) {
    const r = this.rooms.get(frame.room);
    if (!r) return 'ignore';
    if (r.pending) {
      r.buffer.push(frame);
      return 'buffer';
    }
    if (r.lastId !== null && parseId(frame.id) && parseId(r.lastId) && compareIds(frame.id, r.lastId) <= 0) {
      return 'duplicate';
    }
    if (parseId(frame.id)) r.lastId = frame.id;
    return 'deliver';
  }
  /**
   * `joined` arrived for a room. Returns {recovered, deliver: frames to hand on in order,
   * dropped: replayed frames that are not delivered because the room must be reloaded}.
   */
  joined(frame) {
    const r = this.add(frame.room);
    const buffered = r.buffer;
    r.buffer = [];
    r.pending = false;
    const recovered = frame.recovered !== false;
    const deliver = [];
    let dropped = [];
    if (recovered) {
      r.epoch = frame.epoch ?? r.epoch;
      for (const m of buffered) if (this.accept(m) === 'deliver') deliver.push(m);
      if (r.lastId === null) r.lastId = frame.last_id ?? '0-0';
    } else {
      dropped = buffered;
      r.epoch = frame.epoch ?? null;
      r.lastId = frame.last_id ?? '0-0';
    }
    return { recovered, deliver, dropped };
  }
  /**
   * `resync` arrived (the node's broker link had a gap it could not refill): the room
   * now stands at `last_id` in `epoch`. Live frames after it are delivered; those up to
   * it are what the reload gets.
   */
  resynced(frame) {
    const r = this.add(frame.room);
    const at = frame.last_id ?? '0-0';
    // Within one epoch an id already seen stays seen (never handed out twice); ids of
    // another epoch cannot be compared with ours: the frame's position replaces them.
    const sameEpoch = r.epoch !== null && r.epoch === (frame.epoch ?? null);
    const keep = sameEpoch && parseId(r.lastId) && parseId(at) && compareIds(r.lastId, at) > 0;
    r.epoch = frame.epoch ?? null;
    if (!keep) r.lastId = at;
    r.pending = false;
    r.buffer = [];
  }
  /** After a disconnect: nothing is pending any more (the next join starts afresh). */
  disconnected() {
    for (const r of this.rooms.values()) { r.pending = false; r.buffer = []; }
  }
}

/** Most users a `members` request may ask for (the server refuses more). */
export const MEMBERS_LIMIT_MAX = 1000;

/**
 * What the client knows of each joined room's members, kept current from `joined`,
 * `presence`, `presence_count` and `members` answers.
 *
 * Per room (`get(room)`): `{room, membersCount, presenceMode, members, membersComplete}`:
 * - `membersCount`: distinct users in the room (from `joined.members_count`, then the
 *   `count` of every `presence`, `presence_count` and `members` answer);
 * - `presenceMode`: `'full'`, `'count'` or `'off'` (from `joined.presence`; a
 *   `presence_count` in a `full` room means it went over its limit and shows only its
 *   count now, a `presence` in a `count` room that it came back to `full`);
 * - `members`: a Map user_id → {user_id, username} of the users known to be present;
 * - `membersComplete`: `true` when `members` is exactly the room's users and is kept so
 *   by `presence` events: a `full` room whose `joined` listed everyone, or one that was
 *   paged from the first page to the last (`next_cursor: null`) since the last reset.
 *
 * A change of mode forgets the list (it cannot have been kept current) and marks it
 * incomplete; a new `joined` (a rejoin) starts the room afresh.
 *
 * Paging: `request(room, cursor)` when a `members` request is sent, `page(room, cursor,
 * frame)` when its answer comes. A request without a cursor starts a scan; pages that
 * follow it cursor to cursor continue it; the last page (null cursor) completes it in a
 * `full` room, taking into account who joined and left (by `presence`) meanwhile.
 */
export class MemberTracker {
  constructor() {
    /** @type {Map<string, {room: string, membersCount: number, presenceMode: string, members: Map<string, object>, membersComplete: boolean}>} */
    this.rooms = new Map();
    /** room -> the scan in progress {expect, seen: Map, joined: Map, left: Set} */
    this.scans = new Map();
  }
  has(room) { return this.rooms.has(room); }
  get(room) { return this.rooms.get(room); }
  remove(room) { this.rooms.delete(room); this.scans.delete(room); }

  /** A `joined`: the room's state starts afresh from it. */
  joined(frame) {
    const members = Array.isArray(frame.members) ? frame.members : [];
    const mode = frame.presence || 'full';
    const state = {
      room: frame.room,
      membersCount: typeof frame.members_count === 'number' ? frame.members_count : members.length,
      presenceMode: mode,
      members: new Map(members.map((u) => [u.user_id, u])),
      membersComplete: mode === 'full' && frame.members_more !== true,
    };
    this.rooms.set(frame.room, state);
    this.scans.delete(frame.room);
    return state;
  }

  /** Switches the room's mode; forgets what cannot have been kept current. */
  setMode(state, mode) {
    if (state.presenceMode === mode) return false;
    state.presenceMode = mode;
    state.members = new Map();
    state.membersComplete = false;
    this.scans.delete(state.room);
    return true;
  }

  /** A `presence` join/leave (full mode). Returns {state, modeChanged} or null (room not joined). */
  presence(frame) {
    const state = this.rooms.get(frame.room);
    if (!state || !frame.user) return null;
    const modeChanged = this.setMode(state, 'full');
    const id = frame.user.user_id;
    const scan = this.scans.get(frame.room);
    if (frame.event === 'join') {
      if (typeof frame.count !== 'number' && !state.members.has(id)) state.membersCount += 1;
      state.members.set(id, frame.user);
      if (scan) { scan.joined.set(id, frame.user); scan.left.delete(id); }
    } else if (frame.event === 'leave') {
      if (typeof frame.count !== 'number') state.membersCount = Math.max(0, state.membersCount - 1);
      state.members.delete(id);
      if (scan) { scan.left.add(id); scan.joined.delete(id); scan.seen.delete(id); }
    }
    if (typeof frame.count === 'number') state.membersCount = frame.count;
    return { state, modeChanged };
  }

  /** A `presence_count` (count mode, or a full room over its limit). */
  presenceCount(frame) {
    const state = this.rooms.get(frame.room);
    if (!state) return null;
    const modeChanged = this.setMode(state, 'count');
    if (typeof frame.count === 'number') state.membersCount = frame.count;
    return { state, modeChanged };
  }

  /**
   * A `members` request for `room` is being sent (`cursor` undefined/null: the first
   * page, which starts a scan). Returns the scan it belongs to (pass it to `page`), or
   * null.
   */
  request(room, cursor) {
    if (!this.rooms.has(room)) return null;
    if (cursor === undefined || cursor === null) {
      const scan = { expect: null, seen: new Map(), joined: new Map(), left: new Set() };
      this.scans.set(room, scan);
      return scan;
    }
    return this.scans.get(room) ?? null;
  }

  /**
   * The `members` answer to a request made with `cursor`. Adds the users listed (but
   * not those who left since the scan began) and follows the count. Returns
   * {state, completed} (completed: this page finished a scan and the list is complete),
   * or null for a room not joined. `scan`: what `request` returned (undefined: the
   * room's current scan; null: none, the page only adds what it lists).
   */
  page(room, cursor, frame, scan = this.scans.get(room)) {
    const state = this.rooms.get(room);
    if (!state) return null;
    if (typeof frame.count === 'number') state.membersCount = frame.count;
    if (scan && this.scans.get(room) !== scan) scan = null; // replaced or reset since
    const list = Array.isArray(frame.members) ? frame.members : [];
    for (const u of list) if (!scan?.left.has(u.user_id)) state.members.set(u.user_id, u);
    let completed = false;
    const from = cursor === undefined ? null : cursor;
    if (scan && scan.expect === from) {
      for (const u of list) if (!scan.left.has(u.user_id)) scan.seen.set(u.user_id, u);
      const next = frame.next_cursor ?? null;
      if (next === null) {
        this.scans.delete(room);
        if (state.presenceMode === 'full') {
          // Everyone listed by the scan, plus those who joined meanwhile: nothing else.
          state.members = new Map([...scan.seen, ...scan.joined]);
          state.membersComplete = true;
          completed = true;
        }
      } else {
        scan.expect = next;
      }
    }
    return { state, completed };
  }

  /** After a disconnect: presence events are missed until the rejoin. */
  disconnected() {
    for (const state of this.rooms.values()) state.membersComplete = false;
    this.scans.clear();
  }
}

/**
 * Pages through a room's members: `fetchPage(cursor, limit)` returns (a promise of) a
 * `members` answer. Yields each page as it comes (its `members` cut so that no more than
 * `max` users are yielded in all) until `next_cursor` is null or `max` users were
 * yielded. Starts at `cursor` (default: the first page). An empty page that leads back
 * to a cursor already seen ends the loop with `cursor_loop` (a server paging in circles).
 * `retries`/`retryDelayMs`: how often and how long to wait before asking again after
 * `rate_limited`.
 */
export async function* pageMembers(fetchPage, { limit = MEMBERS_LIMIT_MAX, max = 10000, cursor = null, retries = 5, retryDelayMs = 1000, sleep = (ms) => new Promise((r) => setTimeout(r, ms)) } = {}) {
  if (!(limit >= 1)) throw new RangeError('limit must be >= 1');
  let got = 0;
  let at = cursor ?? null;
  const seenCursors = new Set();
  while (got < max) {
    const want = Math.min(limit, MEMBERS_LIMIT_MAX, max - got);
    let page;
    for (let attempt = 0; ; attempt++) {
      try {
        page = await fetchPage(at, want);
        break;
      } catch (e) {
        if (e?.code !== 'rate_limited' || attempt >= retries) throw e;
        await sleep(retryDelayMs);
      }
    }
    const list = Array.isArray(page.members) ? page.members : [];
    const take = list.length > max - got ? list.slice(0, max - got) : list;
    got += take.length;
    const next = page.next_cursor ?? null;
    yield take === list ? page : { ...page, members: take, truncated: true };
    if (next === null) return;
    // Pages with users are bounded by `max`; empty ones (a scan batch may be empty) by
    // this: an empty page must not lead back to a cursor already seen.
    if (list.length === 0 && seenCursors.has(next)) throw new WsgateError('cursor_loop', `members cursor ${next} came back`);
    seenCursors.add(next);
    at = next;
  }
}

/**
 * Collects the pages of `pageMembers` into {members (each user once, in the order
 * first seen), count (the last page's), complete (the last page was reached),
 * next_cursor (where it stopped: null when complete), pages}.
 */
export async function collectMembers(fetchPage, opts = {}) {
  const users = new Map();
  let count = 0;
  let next = opts.cursor ?? null;
  let truncated = false;
  let pages = 0;
  for await (const page of pageMembers(fetchPage, opts)) {
    pages += 1;
    for (const u of page.members) if (!users.has(u.user_id)) users.set(u.user_id, u);
    if (typeof page.count === 'number') count = page.count;
    next = page.next_cursor ?? null;
    truncated = page.truncated === true;
  }
  const complete = pages > 0 && next === null && !truncated;
  return { members: [...users.values()], count, complete, next_cursor: complete ? null : next, pages };
}

/** Frame types that answer a request carrying `ref`. */
const ANSWERS = new Set(['joined', 'left', 'ack', 'history', 'pong', 'notifications', 'marked_read', 'members', 'refreshed', 'error']);

/** Close codes after which the client does not reconnect by itself. */
export const TERMINAL_CLOSE_CODES = new Set([1008]);

/** An Error with a `code` (a protocol error code, or one of the client's own). */
export class WsgateError extends Error {
  constructor(code, message, frame) {
    super(message || code);
    this.name = 'WsgateError';
    this.code = code;
    if (frame) this.frame = frame;
  }
}

/**
 * Decides what a close means. `opened` tells whether a `welcome` was received on that
 * connection; `renewable`, whether the client can get a fresh token (`getToken`): then
 * an expired session (1008) reconnects with a new one. Returns 'reconnect' or 'stop'.
 */
export function closeAction(code, opened, { renewable = false } = {}) {
  if (!opened) return 'reconnect'; // a refused handshake (401, 503, network): retry
  if (TERMINAL_CLOSE_CODES.has(code) && !renewable) return 'stop';
  return 'reconnect';
}

export class Client {
  /**
   * @param {string} url  ws(s):// or http(s):// URL of /ws, or a path ('/ws') resolved
   *   against the page's location.
   * @param {object} [opts]  see client.d.ts
   */
  constructor(url, opts = {}) {
    this.url = url;
    this.opts = {
      token: null,
      getToken: null,
      userId: null,
      username: null,
      WebSocket: null,
      backoffBase: BACKOFF_BASE_MS,
      backoffCap: BACKOFF_CAP_MS,
      maxAttempts: Infinity,
      healthyAfterMs: 5000,
      queueLimit: 100,
      requestTimeoutMs: 15000,
      pingIntervalMs: 20000,
      pongTimeoutMs: 10000,
      connectTimeoutMs: 10000,
      resyncHistoryLimit: 100,
      random: Math.random,
      autoConnect: true,
      ...opts,
    };
    this.WebSocketImpl = this.opts.WebSocket || globalThis.WebSocket;
    if (!this.WebSocketImpl) throw new Error('no WebSocket implementation: pass {WebSocket}');
    this.state = 'idle';
    this.attempt = 0;          // reconnect attempts since the last healthy connection
    this.failures = 0;         // consecutive connections that failed before `welcome`
    this.welcome = null;
    this.unread = 0;
    this.tracker = new ResumeTracker();
    this.roster = new MemberTracker();
    this.queue = new OfflineQueue(this.opts.queueLimit);
    this.listeners = new Map();
    this.pending = new Map();  // ref -> {resolve, reject, timer, type}
    this.joinWaiters = new Map(); // room -> [{resolve, reject}]
    this.nextRef = 1;
    this.ws = null;
    this.opened = false;
    this.openedAt = 0;
    this.lastRx = 0;
    this.timers = { retry: null, heartbeat: null, pong: null, connect: null };
    this.retryAt = 0;
    this.hint = null;          // a draining node's `reconnect`: {delayMs, url}
    this.tokenGiven = false;   // `token` was used once (getToken serves every later connect)
    this.refreshing = null;    // the socket whose automatic refresh is under way
    this.stopped = false;
    // Deferred, so that listeners added right after `new Client()` see 'connecting'.
    if (this.opts.autoConnect) queueMicrotask(() => { if (this.state === 'idle') this.connect(); });
  }

  // ---- events ----------------------------------------------------------------------

  /** Subscribes to an event; returns a function that unsubscribes. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }
  off(type, fn) { this.listeners.get(type)?.delete(fn); }
  once(type, fn) {
    const off = this.on(type, (e) => { off(); fn(e); });
    return off;
  }
  emit(type, ev) {
    for (const fn of [...(this.listeners.get(type) || [])]) {
      try { fn(ev); } catch (e) { setTimeout(() => { throw e; }); }
    }
  }
  setState(state, extra = {}) {
    this.state = state;
    this.emit('state', { state, ...extra });
  }

  // ---- connection ------------------------------------------------------------------

  /** The WebSocket URL with the identity in the query. */
  async buildUrl() {
    const base = globalThis.location?.href;
    const u = new URL(this.url, base);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    if (u.protocol === 'https:') u.protocol = 'wss:';
    let token = this.opts.token;
    // getToken: for the first connect when no token was given, and for every reconnect.
    if (this.opts.getToken && (token === null || token === undefined || this.tokenGiven)) token = await this.opts.getToken();
    else if (typeof token === 'function') token = await token();
    this.tokenGiven = true;
    if (token) u.searchParams.set('token', token);
    if (this.opts.userId) u.searchParams.set('user_id', this.opts.userId);
    if (this.opts.username) u.searchParams.set('username', this.opts.username);
    return u.toString();
  }

  /** Opens the connection (done by the constructor unless autoConnect:false). */
  connect() {
    this.stopped = false;
    if (this.ws || this.timers.retry) return;
    this.open();
  }

  async open() {
    this.clearTimer('retry');
    this.setState('connecting', { attempt: this.attempt });
    let url;
    try {
      url = await this.buildUrl();
    } catch (e) {
      this.emit('error', new WsgateError('token', `token provider failed: ${e?.message || e}`));
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    let ws;
    try {
      ws = new this.WebSocketImpl(url);
    } catch (e) {
      this.emit('error', new WsgateError('connect_failed', String(e?.message || e)));
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.opened = false;
    // Neither the handshake nor the welcome may take forever.
    this.timers.connect = setTimeout(() => {
      if (this.ws === ws && !this.opened) this.dropSocket(ws, 4000, 'connect timeout');
    }, this.opts.connectTimeoutMs);
    ws.onmessage = (ev) => { if (this.ws === ws) this.onFrame(ev.data); };
    ws.onclose = (ev) => { if (this.ws === ws) this.onClosed(ev.code, ev.reason || ''); };
    ws.onerror = () => { /* a close follows */ };
  }

  /** Closes for good: no reconnect. Pending requests are rejected. */
  close(code = 1000, reason = 'client closed') {
    this.stopped = true;
    this.clearTimer('retry');
    const ws = this.ws;
    this.teardown();
    if (ws) { try { ws.close(code, reason); } catch { /* already closed */ } }
    this.failAll(new WsgateError('closed', 'client closed'), true);
    if (this.state !== 'closed') this.setState('closed', { code, reason });
  }

  /** Skips the wait of a scheduled reconnect (e.g. a "retry now" button, `online` event). */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    this.clearTimer('retry');
    this.open();
  }

  clearTimer(name) {
    if (this.timers[name]) { clearTimeout(this.timers[name]); this.timers[name] = null; }
  }

  /** Forgets the current socket (handlers detached) and stops its timers. */
  teardown() {
    const ws = this.ws;
    this.ws = null;
    this.opened = false;
    this.clearTimer('heartbeat');
    this.clearTimer('pong');
    this.clearTimer('connect');
    if (ws) { ws.onmessage = ws.onclose = ws.onerror = null; ws.onopen = null; }
    this.tracker.disconnected();
    this.roster.disconnected();
  }

  /** Gives up on a socket that does not answer, without waiting for its close handshake. */
  dropSocket(ws, code, reason) {
    if (this.ws !== ws) return;
    try { ws.close(4000, reason); } catch { /* ignore */ }
    this.onClosed(code, reason);
  }

  onClosed(code, reason) {
    const opened = this.opened;
    const lived = opened ? Date.now() - this.openedAt : 0;
    this.teardown();
    // Requests in flight on that socket have no answer coming; queued ones wait.
    this.failAll(new WsgateError('disconnected', `connection closed (${code})`), false);
    this.emit('close', { code, reason, opened });
    // presence events are missed until the rejoin: no list is complete meanwhile
    for (const [room, state] of this.roster.rooms) this.emit('roster', { room, reason: 'disconnected', state, completed: false });
    if (this.stopped) { this.setState('closed', { code, reason }); return; }
    if (opened) {
      this.failures = 0;
      if (lived >= this.opts.healthyAfterMs) this.attempt = 0;
    } else {
      // The browser hides the status of a refused handshake (401, 503): it is retried
      // like a network failure. Surfaced so that a page can refresh its token.
      this.failures += 1;
      this.emit('error', new WsgateError('connect_failed', `connection failed before welcome (${this.failures} in a row)`));
    }
    if (closeAction(code, opened, { renewable: !!this.opts.getToken }) === 'stop') {
      this.stopped = true;
      this.failAll(new WsgateError('auth', reason || 'policy violation'), true);
      this.emit('auth', { code, reason });
      this.setState('closed', { code, reason });
      return;
    }
    this.scheduleReconnect(code);
  }

  scheduleReconnect(code) {
    if (this.stopped) return;
    if (this.attempt >= this.opts.maxAttempts) {
      this.stopped = true;
      this.failAll(new WsgateError('closed', 'gave up reconnecting'), true);
      this.setState('closed', { code, reason: 'max attempts' });
      return;
    }
    let delay = backoffDelay(this.attempt, { base: this.opts.backoffBase, cap: this.opts.backoffCap, random: this.opts.random });
    const hint = this.hint;
    this.hint = null;
    if (hint) {
      // A draining node said when (a delay drawn from a window: no jitter on top) and
      // maybe where; later attempts follow the usual backoff.
      delay = hint.delayMs;
      if (hint.url) this.url = hint.url;
    }
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.setState('reconnecting', { delay, attempt: this.attempt, retryAt: this.retryAt, code });
    this.timers.retry = setTimeout(() => { this.timers.retry = null; this.open(); }, delay);
  }

  onWelcome(frame) {
    this.clearTimer('connect');
    this.opened = true;
    this.openedAt = Date.now();
    this.welcome = frame;
    if (typeof frame.unread_notifications === 'number') this.unread = frame.unread_notifications;
    this.emit('welcome', frame);
    // Rejoin every room (with since/epoch), then flush the offline queue, in order.
    for (const room of this.tracker.list()) this.sendJoin(room);
    for (const item of this.queue.drain()) this.transmit(item);
    this.setState('open', { welcome: frame });
    this.armHeartbeat();
  }

  // ---- token refresh ---------------------------------------------------------------

  /**
   * The server said the token expires soon: a fresh one from getToken replaces it on
   * this connection. When that fails (getToken throws, or the server refuses the
   * token), the connection is dropped and the reconnect asks getToken again.
   */
  autoRefresh() {
    const ws = this.ws;
    if (!this.opts.getToken || !ws || this.refreshing === ws) return;
    this.refreshing = ws;
    this.refresh().then(
      () => { if (this.refreshing === ws) this.refreshing = null; },
      (e) => {
        if (this.refreshing === ws) this.refreshing = null;
        if (this.ws !== ws) return; // that connection is gone: the reconnect gets a fresh token anyway
        this.emit('error', new WsgateError('refresh_failed', `token refresh failed (${e?.code || 'token'}): ${e?.message || e}`, e?.frame));
        this.dropSocket(ws, 4001, 'token refresh failed');
      },
    );
  }

  /**
   * Replaces the session's token without reconnecting: `token`, or a fresh one from
   * getToken. Resolves with `refreshed` ({exp}); rejects with the server's error
   * (`invalid_field`: the token does not verify; `forbidden`: another user's token,
   * or a gateway without tokens), `offline`, or `token` (getToken failed).
   */
  async refresh(token) {
    let t = token;
    if (t === undefined) {
      if (!this.opts.getToken) throw new WsgateError('token', 'no token given and no getToken option');
      try { t = await this.opts.getToken(); } catch (e) { throw new WsgateError('token', `getToken failed: ${e?.message || e}`); }
    }
    return this.request({ type: 'refresh', token: t }, { queue: false });
  }

  /** Rejoins the rooms of `welcome.restore` (for a page that lost its memory). */
  restore(rooms = this.welcome?.restore?.rooms || []) {
    const out = [];
    for (const { room, last_id: lastId, epoch } of rooms) {
      if (this.tracker.has(room)) continue;
      this.tracker.restore(room, lastId, epoch);
      out.push(this.waitJoined(room));
      if (this.opened) this.sendJoin(room);
    }
    return Promise.all(out);
  }

  // ---- heartbeat -------------------------------------------------------------------

  armHeartbeat() {
    this.clearTimer('heartbeat');
    if (!(this.opts.pingIntervalMs > 0)) return;
    const ws = this.ws;
    this.timers.heartbeat = setTimeout(() => {
      if (this.ws !== ws || !this.opened) return;
      const idle = Date.now() - this.lastRx;
      if (idle < this.opts.pingIntervalMs) { this.armHeartbeat(); return; }
      // Idle: ask for a pong; no frame at all within pongTimeoutMs means a dead link.
      this.rawSend({ type: 'ping', ref: `hb${this.nextRef++}` });
      this.clearTimer('pong');
      this.timers.pong = setTimeout(() => this.dropSocket(ws, 4000, 'heartbeat timeout'), this.opts.pongTimeoutMs);
    }, Math.max(50, this.opts.pingIntervalMs - (Date.now() - this.lastRx)));
  }

  // ---- frames in -------------------------------------------------------------------

  onFrame(data) {
    this.lastRx = Date.now();
    if (this.timers.pong) { this.clearTimer('pong'); this.armHeartbeat(); }
    let frame;
    try { frame = JSON.parse(typeof data === 'string' ? data : String(data)); } catch { return; }
    if (!frame || typeof frame !== 'object') return;
    this.emit('frame', frame);
    const t = frame.type;
    if (t === 'welcome') { this.onWelcome(frame); return; }
    if ((t === 'notification' || t === 'notifications' || t === 'marked_read' || t === 'notifications_read')
        && typeof frame.unread === 'number') this.unread = frame.unread;
    if (frame.ref !== undefined && frame.ref !== null && this.pending.has(String(frame.ref)) && ANSWERS.has(t)) {
      const p = this.pending.get(String(frame.ref));
      this.pending.delete(String(frame.ref));
      clearTimeout(p.timer);
      const applied = t !== 'error' && p.onAnswer ? p.onAnswer(frame) : null;
      if (t === 'error') p.reject(new WsgateError(frame.code, frame.message, frame));
      else p.resolve(frame);
      if (t === 'marked_read' || t === 'notifications' || t === 'members' || t === 'refreshed') this.emit(t, frame);
      if (applied) this.emitRoster(frame.room, t, applied);
      if (t !== 'joined' && t !== 'error') return;
    }
    switch (t) {
      case 'joined': this.onJoined(frame); break;
      case 'message':
      case 'publish':
        if (frame.room !== undefined && frame.id !== undefined) {
          const verdict = this.tracker.accept(frame);
          if (verdict === 'deliver' || verdict === 'ignore') this.emit(t, frame);
        } else this.emit(t, frame);
        break;
      case 'error': {
        const ref = frame.ref;
        if (typeof ref === 'string' && ref.startsWith('j:')) {
          const room = ref.slice(2).replace(/^\d+:/, '');
          this.tracker.remove(room);
          this.roster.remove(room);
          this.settleJoin(room, null, new WsgateError(frame.code, frame.message, frame));
        }
        this.emit('error', new WsgateError(frame.code, frame.message, frame));
        break;
      }
      case 'presence': {
        const r = this.roster.presence(frame);
        this.emit(t, frame);
        if (r) this.emitRoster(frame.room, t, r);
        break;
      }
      case 'presence_count': {
        const r = this.roster.presenceCount(frame);
        this.emit(t, frame);
        if (r) this.emitRoster(frame.room, t, r);
        break;
      }
      case 'members': {
        // an answer nobody awaits (timed out): what it lists is still known
        const r = this.roster.page(frame.room, undefined, frame, null);
        this.emit(t, frame);
        if (r) this.emitRoster(frame.room, t, r);
        break;
      }
      case 'pong': break;
      case 'resync': this.onResync(frame); break;
      case 'left': {
        // Unprompted: the server took the session out of the room (a refreshed token
        // no longer grants it): forgotten, not rejoined.
        this.tracker.remove(frame.room);
        if (this.roster.has(frame.room)) {
          this.roster.remove(frame.room);
          this.emit('roster', { room: frame.room, reason: 'left', state: null, completed: false });
        }
        this.emit(t, frame);
        break;
      }
      case 'refresh_needed':
        this.emit(t, frame);
        this.autoRefresh();
        break;
      case 'reconnect':
        // The node is draining: the close (1001) follows; come back as it says.
        this.hint = { delayMs: Math.max(0, Number(frame.delay_ms) || 0), url: typeof frame.url === 'string' ? frame.url : null };
        this.emit('reconnect_hint', { delay: this.hint.delayMs, url: this.hint.url, reason: frame.reason });
        break;
      default: this.emit(t, frame);
    }
  }

  onJoined(frame) {
    const { recovered, deliver, dropped } = this.tracker.joined(frame);
    for (const m of deliver) this.emit(m.type, m);
    const state = this.roster.joined(frame);
    this.emit('joined', frame);
    this.emitRoster(frame.room, 'joined', { state, modeChanged: false });
    if (!recovered) this.emit('resync', { room: frame.room, epoch: frame.epoch, last_id: frame.last_id, dropped, joined: frame });
    this.settleJoin(frame.room, frame, null);
  }

  /**
   * The server could not refill a gap in `room` (Redis lost its data, or the history no
   * longer reached): reloads the room's history up to the frame's `last_id` and emits
   * `resync` with it. Live messages after `last_id` keep coming as usual, so the reload
   * and the live ones neither overlap nor leave a hole.
   */
  onResync(frame) {
    if (!this.tracker.has(frame.room)) return;
    this.tracker.resynced(frame);
    const lastId = frame.last_id ?? null;
    const base = { room: frame.room, epoch: frame.epoch, last_id: lastId, lastId, reason: 'gap' };
    if (frame.last_id === null || frame.last_id === undefined) {
      this.emit('resync', { ...base, messages: [] });
      return;
    }
    this.history(frame.room, { limit: this.opts.resyncHistoryLimit }).then(
      (h) => {
        const messages = (h.messages || []).filter((m) => !parseId(m.id) || compareIds(m.id, frame.last_id) <= 0);
        this.emit('resync', { ...base, messages, more: !!h.more });
      },
      (err) => this.emit('resync', { ...base, messages: null, error: err }),
    );
  }

  /** Emits `presence_mode` when the room's mode changed, then `roster`. */
  emitRoster(room, reason, { state, modeChanged = false, completed = false }) {
    if (modeChanged) this.emit('presence_mode', { room, mode: state.presenceMode, state });
    this.emit('roster', { room, reason, state, completed });
  }

  /** What the client knows of a joined room's members (see MemberTracker), or undefined. */
  memberState(room) { return this.roster.get(room); }

  settleJoin(room, frame, err) {
    const waiters = this.joinWaiters.get(room);
    if (!waiters) return;
    this.joinWaiters.delete(room);
    for (const w of waiters) err ? w.reject(err) : w.resolve(frame);
  }

  waitJoined(room) {
    return new Promise((resolve, reject) => {
      if (!this.joinWaiters.has(room)) this.joinWaiters.set(room, []);
      this.joinWaiters.get(room).push({ resolve, reject });
    });
  }

  // ---- frames out ------------------------------------------------------------------

  rawSend(frame) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    try { this.ws.send(JSON.stringify(frame)); return true; } catch { return false; }
  }

  sendJoin(room) {
    const frame = this.tracker.joinFrame(room);
    frame.ref = `j:${this.nextRef++}:${room}`;
    this.rawSend(frame);
  }

  /** Sends a queued item: the frame, and registers its answer when it expects one. */
  transmit(item) {
    if (item.entry?.onSend) item.entry.onSend();
    if (item.expect) {
      const timer = setTimeout(() => {
        if (this.pending.get(item.ref) === item.entry) {
          this.pending.delete(item.ref);
          item.entry.reject(new WsgateError('timeout', `no answer to ${item.frame.type}`));
        }
      }, this.opts.requestTimeoutMs);
      item.entry.timer = timer;
      this.pending.set(item.ref, item.entry);
    }
    if (!this.rawSend(item.frame) && item.expect) {
      // Lost between the state check and the send: the close handler fails it.
    }
  }

  /**
   * Sends a frame that expects an answer (echoing `ref`), now or, when offline, after
   * the next reconnect (bounded queue). Resolves with the answer frame; rejects with a
   * WsgateError (server `error` frame, `queue_full`, `timeout`, `disconnected`, `closed`).
   */
  request(frame, { queue = true, onSend = null, onAnswer = null } = {}) {
    if (this.stopped && this.state === 'closed') return Promise.reject(new WsgateError('closed', 'client closed'));
    const ref = `r${this.nextRef++}`;
    return new Promise((resolve, reject) => {
      const item = { frame: { ...frame, ref }, ref, expect: true, entry: { resolve, reject, timer: null, type: frame.type, onSend, onAnswer } };
      if (this.opened) { this.transmit(item); return; }
      if (!queue) { reject(new WsgateError('offline', 'not connected')); return; }
      if (!this.queue.push(item)) reject(new WsgateError('queue_full', 'offline queue is full'));
    });
  }

  /** Joins a room (remembered and rejoined with since/epoch after every reconnect). */
  join(room) {
    const p = this.waitJoined(room);
    if (!this.tracker.has(room) || !this.opened) {
      this.tracker.add(room);
      if (this.opened) this.sendJoin(room);
    } else {
      this.sendJoin(room);
    }
    return p;
  }

  /** Leaves a room and forgets it. */
  leave(room) {
    this.tracker.remove(room);
    if (this.roster.has(room)) {
      this.roster.remove(room);
      this.emit('roster', { room, reason: 'left', state: null, completed: false });
    }
    this.queue.remove((it) => it.frame.room === room && it.frame.type === 'message');
    if (!this.opened) return Promise.resolve({ type: 'left', room });
    return this.request({ type: 'leave', room }, { queue: false });
  }

  /** Sends a chat message; resolves with the `ack` ({room, id}). Queued while offline. */
  send(room, content) { return this.request({ type: 'message', room, content }); }

  /** Sends a direct message; resolves with the `ack`. Queued while offline. */
  direct(to, content) { return this.request({ type: 'direct', to, content }); }

  /** Typing indicator: fire and forget, dropped while offline (it would be stale). */
  typing(room, isTyping = true) { return this.rawSend({ type: 'typing', room, is_typing: !!isTyping }); }

  /** A page of history: resolves with {room, messages} (oldest first). */
  history(room, { before, limit } = {}) {
    const f = { type: 'history', room };
    if (before !== undefined) f.before = before;
    if (limit !== undefined) f.limit = limit;
    return this.request(f);
  }

  /**
   * A page of a room's members: resolves with the `members` answer {room, members,
   * next_cursor (null on the last page), count}. Pass `next_cursor` back as `cursor` for
   * the next page; `limit` 1-1000 (server default 100). Membership is not needed; an
   * `off` room answers `forbidden`. For a joined room the answer also updates
   * `memberState(room)` (paging from the first page to the last completes its list).
   */
  members(room, { cursor, limit } = {}) {
    const f = { type: 'members', room };
    if (cursor !== undefined && cursor !== null) f.cursor = cursor;
    if (limit !== undefined) f.limit = limit;
    let scan = null;
    return this.request(f, {
      onSend: () => { scan = this.roster.request(room, f.cursor); },
      onAnswer: (frame) => this.roster.page(room, f.cursor, frame, scan),
    });
  }

  /**
   * Async iterator over the pages of a room's members, from the first (or `cursor`) to
   * the last, at most `max` users (default 10000) in pages of `limit` (default 1000).
   * `rate_limited` answers are retried after a second (up to 5 times).
   */
  membersPages(room, opts = {}) {
    return pageMembers((cursor, limit) => this.members(room, { cursor, limit }), opts);
  }

  /**
   * Pages through a room's members to the end, or until `max` users (default 10000).
   * Resolves with {members (each user once), count, complete, next_cursor, pages}.
   */
  loadAllMembers(room, opts = {}) {
    return collectMembers((cursor, limit) => this.members(room, { cursor, limit }), opts);
  }

  /** Lists notifications: resolves with {items (newest first), unread}. */
  notifications({ limit, before, unread_only: unreadOnly } = {}) {
    const f = { type: 'notifications' };
    if (limit !== undefined) f.limit = limit;
    if (before !== undefined) f.before = before;
    if (unreadOnly !== undefined) f.unread_only = unreadOnly;
    return this.request(f);
  }

  /** Marks notifications read: `ids` an array, or 'all'. Resolves with {ids, unread}. */
  markRead(ids) {
    const f = ids === 'all' ? { type: 'mark_read', all: true } : { type: 'mark_read', ids };
    return this.request(f);
  }

  /** Application-level ping; resolves with the `pong`. */
  ping() { return this.request({ type: 'ping' }, { queue: false }); }

  /** Rejects requests in flight; with `everything`, also the queued ones and joins. */
  failAll(err, everything) {
    for (const [ref, p] of this.pending) { clearTimeout(p.timer); p.reject(err); this.pending.delete(ref); }
    if (everything) {
      for (const item of this.queue.drain()) item.entry?.reject(err);
      for (const room of [...this.joinWaiters.keys()]) this.settleJoin(room, null, err);
    }
  }
}

export default Client;
