//! The Lua of the webhook outbox and of the online counts: recording an event in the
//! same script as the transition it reports ([`EMIT`], used by the presence scripts
//! of [`crate::scripts`] too), taking events for delivery, and the sessions of users.
//!
//! An outbox is a stream of entries with fields `n` (event name), `r` (room), `u`
//! (user) and `m` (a `client_message`'s frame); empty fields are absent values.

/// `emit(mask, i, outbox, maxlen, field, value, …)` appends one event to `outbox`
/// when position `i` of `mask` is `1` (the order of `EventName::ALL`), trimmed to
/// `maxlen` entries (exactly: delivered entries are deleted, so what trimming takes
/// is owed). Counts in `recorded` and `dropped`, which every script returns.
pub const EMIT: &str = r#"
local recorded, dropped = 0, 0
local function emit(mask, i, outbox, maxlen, ...)
  if string.sub(mask, i, i) ~= '1' then return end
  local before = redis.call('XLEN', outbox)
  redis.call('XADD', outbox, 'MAXLEN', maxlen, '*', ...)
  recorded = recorded + 1
  dropped = dropped + before + 1 - redis.call('XLEN', outbox)
end
"#;

/// [`crate::scripts::PRESENCE_ADD`] with [`EMIT`].
pub fn presence_add() -> String {
    format!("{EMIT}{}", crate::scripts::PRESENCE_ADD)
}

/// [`crate::scripts::PRESENCE_REMOVE`] with [`EMIT`].
pub fn presence_remove() -> String {
    format!("{EMIT}{}", crate::scripts::PRESENCE_REMOVE)
}

/// [`crate::scripts::PRESENCE_REAP`] with [`EMIT`].
pub fn presence_reap() -> String {
    format!("{EMIT}{}", crate::scripts::PRESENCE_REAP)
}

/// Records events that no transition script records (`client_message`).
///
/// KEYS: outbox. ARGV: mask, maxlen, then per event: its position in the mask, name,
/// room, user, message. Returns `{recorded, dropped}`.
pub fn record() -> String {
    format!(
        "{EMIT}{}",
        r#"
for i = 3, #ARGV, 5 do
  emit(ARGV[1], tonumber(ARGV[i]), KEYS[1], ARGV[2],
    'n', ARGV[i + 1], 'r', ARGV[i + 2], 'u', ARGV[i + 3], 'm', ARGV[i + 4])
end
return {recorded, dropped}
"#
    )
}

/// Takes events for delivery by one consumer: first those another consumer (or this
/// one) took and left idle for `stale` ms (`XAUTOCLAIM` from `cursor`), then new ones
/// (`XREADGROUP`), at most `count` in all. Makes the consumer group (from the
/// stream's start) when the stream has none.
///
/// KEYS: outbox. ARGV: group, consumer, stale ms, cursor, count. Returns `{next
/// cursor, length, id1, fields1, id2, fields2, …}`.
pub const TAKE: &str = r#"
local function claim()
  return redis.pcall('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
end
local c = claim()
if type(c) == 'table' and c.err then
  if not string.find(c.err, 'NOGROUP') then return redis.error_reply(c.err) end
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  c = claim()
end
local out = {c[1], 0}
local n = tonumber(ARGV[5])
for _, e in ipairs(c[2]) do
  if type(e) == 'table' and e[2] then
    table.insert(out, e[1])
    table.insert(out, e[2])
    n = n - 1
  end
end
if n > 0 then
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[1], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      table.insert(out, e[1])
      table.insert(out, e[2])
    end
  end
end
out[2] = redis.call('XLEN', KEYS[1])
return out
"#;

/// Deletes the consumers of a stream's group that have nothing pending and have been
/// idle longer than `idle` ms.
///
/// KEYS: outbox. ARGV: group, idle ms. Returns how many went.
pub const PRUNE: &str = r#"
local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(cs) ~= 'table' or cs.err then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
"#;

/// Clears an outbox's dirty mark if nobody recorded there since it was read.
///
/// KEYS: dirty hash. ARGV: outbox, the mark read. Returns 1 when cleared.
pub const CLEAN: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"#;

/// Counts a session of a user.
///
/// KEYS: user-sessions, node-users (of this node). ARGV: session, node, user.
pub const ONLINE_CONNECT: &str = r#"
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
return 1
"#;

/// Stops counting a session; its user's last one records `user_offline`.
///
/// KEYS: user-sessions, node-users (of this node), outbox. ARGV: session, user, mask,
/// maxlen. Returns `{last, recorded, dropped}`.
pub fn online_disconnect() -> String {
    format!(
        "{EMIT}{}",
        r#"
local last = 0
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
  end
  if redis.call('EXISTS', KEYS[1]) == 0 then
    last = 1
    emit(ARGV[3], 5, KEYS[3], ARGV[4], 'n', 'user_offline', 'u', ARGV[2])
  end
end
return {last, recorded, dropped}
"#
    )
}

/// Removes a dead node's sessions of one user; when they were the user's last,
/// records `user_offline`.
///
/// KEYS: user-sessions, outbox. ARGV: node, user, mask, maxlen. Returns `{last,
/// recorded, dropped}`.
pub fn online_reap() -> String {
    format!(
        "{EMIT}{}",
        r#"
local removed, last = 0, 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    removed = removed + 1
  end
end
if removed > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  last = 1
  emit(ARGV[3], 5, KEYS[2], ARGV[4], 'n', 'user_offline', 'u', ARGV[2])
end
return {last, recorded, dropped}
"#
    )
}
