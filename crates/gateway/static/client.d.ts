// Types of client.js, the wsgate browser client (protocol version 1).
// Documentation: docs/clients.md.

export const BACKOFF_BASE_MS: 500;
export const BACKOFF_CAP_MS: 20000;
/** min(cap, base * 2^attempt): the ceiling of the delay before attempt `attempt` (0-based). */
export function backoffCeiling(attempt: number, base?: number, cap?: number): number;
/** Full jitter: an integer uniformly drawn from [0, backoffCeiling(attempt)). */
export function backoffDelay(attempt: number, opts?: { base?: number; cap?: number; random?: () => number }): number;
/** "<ms>-<seq>" → [ms, seq], or null. */
export function parseId(id: unknown): [number, number] | null;
/** Numeric comparison of two message ids (<0, 0, >0). */
export function compareIds(a: string, b: string): number;
/** What a close means: 'stop' for 1008 after a welcome (unless `renewable`: the client has getToken), 'reconnect' for anything else. */
export function closeAction(code: number, opened: boolean, opts?: { renewable?: boolean }): 'reconnect' | 'stop';
export const TERMINAL_CLOSE_CODES: Set<number>;

/** A bounded FIFO; `push` refuses (returns false) the newest item when full. */
export class OfflineQueue<T = unknown> {
  constructor(limit?: number);
  readonly limit: number;
  readonly size: number;
  push(item: T): boolean;
  drain(): T[];
  remove(pred: (item: T) => boolean): T[];
}

export interface RoomPosition { lastId: string | null; epoch: string | null; pending: boolean; buffer: RoomFrame[] }
/** Resume bookkeeping: rooms, last id seen and history epoch. */
export class ResumeTracker {
  has(room: string): boolean;
  list(): string[];
  get(room: string): RoomPosition | undefined;
  add(room: string): RoomPosition;
  restore(room: string, lastId: string | null, epoch: string | null): RoomPosition;
  remove(room: string): void;
  joinFrame(room: string): { type: 'join'; room: string; since?: string; epoch?: string };
  accept(frame: RoomFrame): 'deliver' | 'buffer' | 'duplicate' | 'ignore';
  joined(frame: Joined): { recovered: boolean; deliver: RoomFrame[]; dropped: RoomFrame[] };
  /** A server `resync`: the room now stands at `last_id` (`'0-0'` when null) in `epoch`; within the same epoch a newer id already seen is kept. */
  resynced(frame: Resync): void;
  disconnected(): void;
}

/** What the client knows of a joined room's members (`client.memberState(room)`). */
export interface MemberState {
  room: string;
  /** Distinct users (from joined, presence, presence_count and members answers). */
  membersCount: number;
  presenceMode: PresenceMode;
  /** user_id → user: the users known to be present. */
  members: Map<string, User>;
  /** `members` is exactly the room's users, kept current by `presence` events. */
  membersComplete: boolean;
}
/** The member bookkeeping of client.js (pure; exported for tests and other clients). */
export class MemberTracker {
  has(room: string): boolean;
  get(room: string): MemberState | undefined;
  remove(room: string): void;
  joined(frame: Joined): MemberState;
  presence(frame: Presence): { state: MemberState; modeChanged: boolean } | null;
  presenceCount(frame: PresenceCount): { state: MemberState; modeChanged: boolean } | null;
  /** A `members` request is sent; returns the scan it belongs to (for `page`). */
  request(room: string, cursor?: string | null): object | null;
  page(room: string, cursor: string | null | undefined, frame: Members, scan?: object | null): { state: MemberState; completed: boolean } | null;
  disconnected(): void;
}
export const MEMBERS_LIMIT_MAX: 1000;
export interface MembersPagingOptions {
  /** Users per request (1-1000; default 1000). */
  limit?: number;
  /** Stop after this many users (default 10000). */
  max?: number;
  /** Start here instead of the first page. */
  cursor?: string | null;
  /** `rate_limited` answers: retries (5) and the wait before each (1000 ms). */
  retries?: number;
  retryDelayMs?: number;
}
export interface MembersPage extends Members { /** members were cut to respect `max`. */ truncated?: true }
export interface AllMembers {
  /** Each user once, in the order first seen. */
  members: User[];
  /** The room's distinct users when the last page was read. */
  count: number;
  /** The last page (next_cursor null) was reached. */
  complete: boolean;
  /** Where it stopped (null when complete). */
  next_cursor: string | null;
  pages: number;
}
/** Pages `fetchPage(cursor, limit)` to the last page or `max` users. */
export function pageMembers(fetchPage: (cursor: string | null, limit: number) => Promise<Members> | Members, opts?: MembersPagingOptions & { sleep?: (ms: number) => Promise<void> }): AsyncGenerator<MembersPage, void, void>;
export function collectMembers(fetchPage: (cursor: string | null, limit: number) => Promise<Members> | Members, opts?: MembersPagingOptions & { sleep?: (ms: number) => Promise<void> }): Promise<AllMembers>;
export interface RosterEvent {
  room: string;
  /** What changed it. */
  reason: 'joined' | 'presence' | 'presence_count' | 'members' | 'disconnected' | 'left';
  /** null after `left`. */
  state: MemberState | null;
  /** A `members` page completed a scan: `state.members` is now the whole room. */
  completed: boolean;
}

export type ErrorCode =
  | 'bad_json' | 'unknown_type' | 'invalid_field' | 'not_member' | 'forbidden'
  | 'room_full' | 'too_many_rooms' | 'rate_limited' | 'unavailable'
  // the client's own:
  | 'queue_full' | 'timeout' | 'disconnected' | 'closed' | 'offline' | 'auth'
  | 'connect_failed' | 'token' | 'refresh_failed' | 'cursor_loop';

export class WsgateError extends Error {
  code: ErrorCode | string;
  /** The server's `error` frame, when there was one. */
  frame?: ErrorFrame;
}

export interface User { user_id: string; username: string }
export interface Welcome {
  type: 'welcome'; protocol: number; session_id: string; node_id: string;
  user_id: string; username: string; heartbeat_ms: number;
  unread_notifications?: number;
  restore?: { rooms: { room: string; last_id: string | null; epoch: string }[] };
}
export interface Message { type: 'message'; id: string; room: string; user_id: string; username: string; content: string; ts: string }
export interface Publish { type: 'publish'; id?: string; room?: string; user_id?: string; data: unknown; ts: string }
export type RoomFrame = Message | Publish;
export interface Broadcast { type: 'broadcast'; data: unknown; ts: string }
/** A user's first session joined / last session left a `full` room; `count`: distinct users after it. */
export interface Presence { type: 'presence'; room: string; event: 'join' | 'leave'; user: User; count: number }
/** The distinct users of a `count`-mode room changed (at most once per second). */
export interface PresenceCount { type: 'presence_count'; room: string; count: number }
/** Answer to `members`: one page of a room's distinct users. */
export interface Members { type: 'members'; ref?: string | number; room: string; members: User[]; next_cursor: string | null; count: number }
/** What a room shows: member lists and events, only the count, or neither. */
export type PresenceMode = 'full' | 'count' | 'off';
export interface Typing { type: 'typing'; room: string; users: User[] }
export interface Direct { type: 'direct'; id: string; from: User; content: string; ts: string }
export interface Joined {
  type: 'joined'; ref?: string | number; room: string;
  /** `full` rooms: at most `--joined-members` (100) users; `[]` in `count` and `off` rooms. */
  members: User[];
  /** Distinct users present (0 in an `off` room). */
  members_count: number;
  /** `members` does not list everyone: page with `members`. */
  members_more: boolean;
  presence: PresenceMode;
  last_id: string | null; epoch: string; recovered: boolean;
}
/** Answer to `leave`; or unprompted (`reason: 'revoked'`): a refreshed token no longer grants the room. */
export interface Left { type: 'left'; room: string; reason?: 'revoked' | string }
/** The session's token expires at `exp` (seconds since the epoch): refresh before then. */
export interface RefreshNeeded { type: 'refresh_needed'; exp: number }
/** Answer to `refresh`: the session holds the new token, expiring at `exp`. */
export interface Refreshed { type: 'refreshed'; ref?: string | number; exp: number }
export interface Ack { type: 'ack'; ref: string | number; room?: string; id: string }
export interface History { type: 'history'; room: string; messages: RoomFrame[]; more?: boolean }
export interface Notification {
  id: string; user_id: string; kind: 'info' | 'success' | 'warning' | 'error';
  title: string; body: string; action_url?: string; data?: unknown; ts: string; read: boolean;
}
export interface NotificationFrame { type: 'notification'; notification: Notification; unread: number }
export interface Notifications { type: 'notifications'; items: Notification[]; unread: number }
export interface MarkedRead { type: 'marked_read' | 'notifications_read'; ids: string[]; unread: number }
/** The node's broker link had a gap it could not refill: reload the room up to `last_id` (null: its history is empty). */
export interface Resync { type: 'resync'; room: string; epoch: string; last_id: string | null }
/** A draining node closes this connection (1001) right after: reconnect after `delay_ms`, to `url` when set. */
export interface Reconnect { type: 'reconnect'; delay_ms: number; reason: 'draining' | string; url?: string }
export interface ErrorFrame { type: 'error'; code: string; message: string; ref?: string | number }

export type State = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';
export interface StateEvent {
  state: State;
  /** connecting: reconnect attempts so far. reconnecting: this attempt's number. */
  attempt?: number;
  /** reconnecting: the wait before the next attempt (ms) and when it ends (epoch ms). */
  delay?: number;
  retryAt?: number;
  /** reconnecting/closed: the close code that caused it. */
  code?: number;
  reason?: string;
  welcome?: Welcome;
}
/**
 * The room must be reloaded. Either a rejoin answered `recovered:false` (`joined` and
 * `dropped` are set: reload the room, e.g. with `history`), or the server sent `resync`
 * (`reason: 'gap'`: its broker link had a gap it could not refill); then the client has
 * reloaded the history up to `last_id` itself (`messages`, oldest first; `null` with
 * `error` when that request failed), and live messages after `last_id` follow.
 */
export interface ResyncEvent {
  room: string; epoch: string; last_id: string | null;
  /** The same as `last_id` (set on a server `resync`, `reason: 'gap'`). */
  lastId?: string | null;
  /** Frames replayed before `joined` that were not delivered: reload the room instead. */
  dropped?: RoomFrame[];
  joined?: Joined;
  reason?: 'gap';
  /** `reason: 'gap'`: the reloaded history up to `last_id` (live frames after it are not in it). */
  messages?: RoomFrame[] | null;
  /** The room holds older messages than the reload (page back with `history({before})`). */
  more?: boolean;
  error?: WsgateError;
}

/**
 * A draining node will close the connection (1001): the next attempt waits exactly
 * `delay` ms (no jitter added), to `url` if set (then kept as the client's URL); later
 * attempts use the usual backoff.
 */
export interface ReconnectHintEvent { delay: number; url: string | null; reason: string }

export interface ClientEvents {
  state: StateEvent;
  welcome: Welcome;
  message: Message;
  publish: Publish;
  broadcast: Broadcast;
  presence: Presence;
  presence_count: PresenceCount;
  /** Every `members` answer (also those awaited through `members()`). */
  members: Members;
  /** The room's member state changed (after `joined`, `presence`, `presence_count`, `members`, a disconnect, `leave`). */
  roster: RosterEvent;
  /** A room switched between `full` and `count` (its member list was forgotten: re-page it if needed). */
  presence_mode: { room: string; mode: PresenceMode; state: MemberState };
  typing: Typing;
  direct: Direct;
  joined: Joined;
  notification: NotificationFrame;
  notifications: Notifications;
  marked_read: MarkedRead;
  notifications_read: MarkedRead;
  /**
   * `joined` said recovered:false (reload the room, e.g. with `history`), or the server
   * sent `resync` (`reason: 'gap'`; emitted once the client's own reload answered).
   */
  resync: ResyncEvent;
  /** The server sent `reconnect` (it is draining): when and where the next attempt goes. */
  reconnect_hint: ReconnectHintEvent;
  /** Closed with 1008 (token expired, kicked) and no getToken: the client stopped. */
  auth: { code: number; reason: string };
  /** The token expires soon; with getToken the client refreshes it by itself. */
  refresh_needed: RefreshNeeded;
  /** The session holds a new token (an automatic refresh, or `refresh()`). */
  refreshed: Refreshed;
  /** The server took the session out of a room (`reason: 'revoked'`); the client forgot it. */
  left: Left;
  error: WsgateError;
  close: { code: number; reason: string; opened: boolean };
  /** Every frame received, before it is dispatched. */
  frame: { type: string; [k: string]: unknown };
}

export interface ClientOptions {
  /** A JWT, or a function returning one (called before every connection attempt). */
  token?: string | null | (() => string | Promise<string>);
  /**
   * A fresh token: asked for the first connect (when `token` is not given), on every
   * reconnect, and on `refresh_needed` (the session then takes it with `refresh`,
   * without reconnecting; if that fails it reconnects with another). With it, a 1008
   * close (expired) reconnects instead of stopping.
   */
  getToken?: (() => string | Promise<string>) | null;
  /** Development mode identity (`?user_id=&username=`). */
  userId?: string | null;
  username?: string | null;
  /** A WebSocket constructor (default: globalThis.WebSocket), e.g. the `ws` package under Node. */
  WebSocket?: unknown;
  backoffBase?: number;      // 500
  backoffCap?: number;       // 20000
  maxAttempts?: number;      // Infinity: reconnect attempts before giving up
  healthyAfterMs?: number;   // 5000: a connection that lived this long resets the attempts
  queueLimit?: number;       // 100: frames kept while offline
  requestTimeoutMs?: number; // 15000
  pingIntervalMs?: number;   // 20000: idle time before an application ping (0: off)
  pongTimeoutMs?: number;    // 10000: no frame this long after the ping: reconnect
  connectTimeoutMs?: number; // 10000: handshake + welcome
  resyncHistoryLimit?: number; // 100: messages reloaded after a `resync` (server max 100)
  random?: () => number;
  autoConnect?: boolean;     // true
}

export class Client {
  constructor(url: string, opts?: ClientOptions);
  readonly state: State;
  readonly welcome: Welcome | null;
  /** Unread notifications, kept current from welcome/notification/marked_read/notifications_read. */
  readonly unread: number;
  readonly tracker: ResumeTracker;
  readonly roster: MemberTracker;
  /** The member state of a joined room. */
  memberState(room: string): MemberState | undefined;
  readonly queue: OfflineQueue;
  on<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): () => void;
  once<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): void;
  connect(): void;
  close(code?: number, reason?: string): void;
  reconnectNow(): void;
  join(room: string): Promise<Joined>;
  leave(room: string): Promise<Left>;
  send(room: string, content: string): Promise<Ack>;
  direct(to: string, content: string): Promise<Ack>;
  typing(room: string, isTyping?: boolean): boolean;
  history(room: string, opts?: { before?: string; limit?: number }): Promise<History>;
  /** One page of a room's members; `forbidden` in an `off` room. */
  members(room: string, opts?: { cursor?: string | null; limit?: number }): Promise<Members>;
  /** The pages from the first (or `cursor`) to the last, at most `max` users. */
  membersPages(room: string, opts?: MembersPagingOptions): AsyncGenerator<MembersPage, void, void>;
  /** Every member (each once), to the last page or `max` users. */
  loadAllMembers(room: string, opts?: MembersPagingOptions): Promise<AllMembers>;
  notifications(opts?: { limit?: number; before?: string; unread_only?: boolean }): Promise<Notifications>;
  markRead(ids: string[] | 'all'): Promise<MarkedRead>;
  ping(): Promise<{ type: 'pong' }>;
  /** Replaces the session's token without reconnecting (`token`, or one from getToken). */
  refresh(token?: string): Promise<Refreshed>;
  restore(rooms?: { room: string; last_id: string | null; epoch: string }[]): Promise<Joined[]>;
  request<T = unknown>(frame: { type: string; [k: string]: unknown }, opts?: { queue?: boolean; onSend?: () => void; onAnswer?: (frame: T) => unknown }): Promise<T>;
}
export default Client;
