//! The Lua scripts of the Redis broker. Each runs atomically in Redis, which is what
//! makes "store and publish" one step and keeps a history's epoch consistent with its
//! stream.

/// Builds a stored frame from kind, id and body exactly as
/// `wsgate_protocol::server::splice` does: `{"type":K,"id":ID,` + body without `{`.
const SPLICE: &str = r#"
local function splice(kind, id, body)
  return '{"type":"' .. kind .. '","id":"' .. id .. '",' .. string.sub(body, 2)
end
local function entry_frame(e)
  local f = e[2]
  local kind, body = 'message', '{}'
  for j = 1, #f, 2 do
    if f[j] == 'k' then kind = f[j + 1] elseif f[j] == 'b' then body = f[j + 1] end
  end
  return splice(kind, e[1], body)
end
"#;

/// The epoch rule, shared by every script that reads or writes a history.
///
/// A room with messages keeps its epoch in its meta hash beside the stream (`stream` is
/// 1 once it held messages). When the meta says the room had a stream and the stream is
/// gone (expired, evicted, Redis restarted without persistence), the history was lost as
/// a whole and a fresh random epoch is set.
///
/// A room without messages has no meta key at all (so joins of any name create nothing
/// in Redis): its epoch is derived from the store's own epoch (`P:store-epoch`, random,
/// made once; gone with the data when Redis loses everything) and the number of the
/// history-TTL period the current time falls in (Redis `TIME`). The first message keeps
/// that epoch, so a client that joined the empty room recovers exactly; and a history
/// that expired as a whole did so at least one TTL after its last message, so a client
/// that saw it empty before comes back in a later period, with a different epoch.
const EPOCH: &str = r#"
local function empty_epoch(store_key, fresh, ttl)
  redis.call('SET', store_key, fresh, 'NX')
  local store = redis.call('GET', store_key)
  local period = math.floor(tonumber(redis.call('TIME')[1]) / tonumber(ttl))
  return string.sub(store, 1, 16) .. '-' .. period
end
local function current_epoch(stream, meta, store_key, fresh, ttl)
  local exists = redis.call('EXISTS', stream)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    return empty_epoch(store_key, fresh, ttl), exists, false
  end
  if exists == 0 and redis.call('HGET', meta, 'stream') == '1' then
    epoch = fresh
    redis.call('HSET', meta, 'epoch', epoch, 'stream', '0')
    redis.call('EXPIRE', meta, ttl)
  end
  return epoch, exists, true
end
"#;

/// Appends to the room's stream, trims it, refreshes the idle expiry and publishes
/// the final frame on the room's channel, as one step. The first message of a room
/// creates its meta with the epoch the room had while empty.
///
/// KEYS: stream, meta, store epoch. ARGV: kind, body, maxlen, ttl seconds, channel,
/// fresh epoch. Returns the new id.
pub fn publish_entry() -> String {
    format!("{SPLICE}{EPOCH}{PUBLISH}return id\n")
}

/// [`publish_entry`] at most once per idempotency key: a key already set answers the
/// id it holds and writes nothing; otherwise the entry is published and the key set
/// to its id for the given time.
///
/// KEYS: stream, meta, store epoch, idempotency key. ARGV: as [`publish_entry`], then
/// the key's lifetime in seconds. Returns `{id, 1}` when published, `{id, 0}` for a retry.
pub fn publish_entry_once() -> String {
    format!(
        "{SPLICE}{EPOCH}{}{PUBLISH}{}",
        "local prev = redis.call('GET', KEYS[4])\nif prev then return {prev, 0} end\n",
        "redis.call('SET', KEYS[4], id, 'EX', ARGV[7])\nreturn {id, 1}\n"
    )
}

/// Publishes a frame that is not stored at most once per idempotency key.
///
/// KEYS: idempotency key. ARGV: lifetime in seconds, channel, frame. Returns 1 when
/// published, 0 for a retry.
pub const PUBLISH_ONCE: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"#;

/// The body shared by the publish scripts: leaves the new id in `id`.
const PUBLISH: &str = r#"
local epoch, _, has_meta = current_epoch(KEYS[1], KEYS[2], KEYS[3], ARGV[6], ARGV[4])
if not has_meta then redis.call('HSET', KEYS[2], 'epoch', epoch) end
redis.call('HSET', KEYS[2], 'stream', '1')
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'k', ARGV[1], 'b', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], splice(ARGV[1], id, ARGV[2]))
"#;

/// The room's epoch and last id, and with a `since`, the frames after it, at most
/// `max_bytes` of them (the newest, when there are more: the replay is then cut).
/// Redis does not record the newest id that trimming removed, so the script reports the
/// first kept id when anything was trimmed: a replay is complete only from that id on.
/// (A client whose `since` is exactly the last trimmed id is told `recovered:false`
/// although it missed nothing: conservative, never a silent gap.)
///
/// KEYS: stream, meta, store epoch. ARGV: fresh epoch, ttl seconds, since ('' for
/// none), max bytes.
/// Returns `{epoch, last_id or '', first_kept_if_trimmed or '0-0', cut (0|1), id1,
/// frame1, …}`, oldest first.
pub fn replay() -> String {
    format!(
        "{SPLICE}{EPOCH}{}",
        r#"
local epoch, exists = current_epoch(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if exists == 0 then return {epoch, '', '0-0', '0'} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, first, len, added = '', '0-0', 0, 0
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'last-generated-id' then last = info[i + 1]
  elseif k == 'recorded-first-entry-id' then first = info[i + 1]
  elseif k == 'length' then len = info[i + 1]
  elseif k == 'entries-added' then added = info[i + 1] end
end
-- Trimming (MAXLEN ~) is the only removal: entries are gone iff more were added than
-- are left, and then everything before the first kept entry may be gone.
local trimmed_before = '0-0'
if added > len then trimmed_before = first end
local newest_first, cut = {}, 0
if ARGV[3] ~= '' then
  local max, bytes, top = tonumber(ARGV[4]), 0, '+'
  while cut == 0 do
    local chunk = redis.call('XREVRANGE', KEYS[1], top, '(' .. ARGV[3], 'COUNT', 100)
    for _, e in ipairs(chunk) do
      local f = entry_frame(e)
      if bytes + #f > max then cut = 1; break end
      bytes = bytes + #f
      table.insert(newest_first, {e[1], f})
    end
    if #chunk < 100 then break end
    top = '(' .. chunk[#chunk][1]
  end
end
local out = {epoch, last, trimmed_before, tostring(cut)}
for i = #newest_first, 1, -1 do
  table.insert(out, newest_first[i][1])
  table.insert(out, newest_first[i][2])
end
return out
"#
    )
}

/// Up to `limit` frames before an id (or the newest), newest first, at most
/// `max_bytes` of them. Returns `{cut (0|1), frame1, frame2, …}`.
///
/// KEYS: stream. ARGV: before ('' for none), limit, max bytes.
pub fn history() -> String {
    format!(
        "{SPLICE}{}",
        r#"
local top = '+'
if ARGV[1] ~= '' then top = '(' .. ARGV[1] end
local max, bytes, cut = tonumber(ARGV[3]), 0, 0
local out = {'0'}
for _, e in ipairs(redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', ARGV[2])) do
  local f = entry_frame(e)
  if bytes + #f > max then cut = 1; break end
  bytes = bytes + #f
  table.insert(out, f)
end
out[1] = tostring(cut)
return out
"#
    )
}

/// Adds a session's presence, unless the room is full. Returns `{-1}` when the room
/// holds `max` distinct users and this user is not one of them; otherwise `{first,
/// count, over, cursor, user1, name1, …}`: whether it is the user's first session, the
/// distinct users now, whether the room is over `pmax` (set here when it grows past
/// it), and, when `page` > 0 and the room is not over `pmax` (a room over it lists no
/// members), one `HSCAN` batch of the names hash (a bounded first page: no read of the
/// whole set).
///
/// A user's first session records `member_added` (and the room's first user
/// `room_occupied` before it) in the outbox (run with
/// [`crate::scripts_webhooks::EMIT`]); `recorded` and `dropped` follow `over`.
///
/// KEYS: presence, presence-users, node-rooms (of this node), presence-names,
/// presence-over, outbox. ARGV: session, user, name, node, room, max (0: none), pmax,
/// page, event mask, outbox maxlen.
pub(crate) const PRESENCE_ADD: &str = r#"
local max = tonumber(ARGV[6])
if max > 0 and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0
    and redis.call('HLEN', KEYS[2]) >= max then
  return {-1}
end
local v = cjson.encode({u = ARGV[2], n = ARGV[3], node = ARGV[4]})
local first = 0
if redis.call('HSET', KEYS[1], ARGV[1], v) == 1 then
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then first = 1 end
end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
local count = redis.call('HLEN', KEYS[2])
if first == 1 then
  if count == 1 then emit(ARGV[9], 1, KEYS[6], ARGV[10], 'n', 'room_occupied', 'r', ARGV[5]) end
  emit(ARGV[9], 3, KEYS[6], ARGV[10], 'n', 'member_added', 'r', ARGV[5], 'u', ARGV[2])
end
local over = redis.call('EXISTS', KEYS[5])
if over == 0 and count > tonumber(ARGV[7]) then
  redis.call('SET', KEYS[5], '1')
  over = 1
end
local out = {first, count, over, recorded, dropped}
local page = tonumber(ARGV[8])
if page > 0 and over == 0 then
  local scan = redis.call('HSCAN', KEYS[4], '0', 'COUNT', page)
  table.insert(out, scan[1])
  for _, x in ipairs(scan[2]) do table.insert(out, x) end
end
return out
"#;

/// Removes a session's presence. Returns `{last, count, over, recorded, dropped}`:
/// whether it was the user's last session, the distinct users now, and whether the
/// room is still over its `presence_max_members` (cleared here once the count is down
/// to `low`); a last session records `member_removed` (and the room's last user
/// `room_vacated` after it).
///
/// KEYS: presence, presence-users, node-rooms (of the node that added it),
/// presence-names, presence-over, outbox. ARGV: session, user, room, low, event mask,
/// outbox maxlen.
pub(crate) const PRESENCE_REMOVE: &str = r#"
local last = 0
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[3])
  end
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call('HDEL', KEYS[4], ARGV[2])
    last = 1
  end
end
local count = redis.call('HLEN', KEYS[2])
if last == 1 then
  emit(ARGV[5], 4, KEYS[6], ARGV[6], 'n', 'member_removed', 'r', ARGV[3], 'u', ARGV[2])
  if count == 0 then emit(ARGV[5], 2, KEYS[6], ARGV[6], 'n', 'room_vacated', 'r', ARGV[3]) end
end
local over = redis.call('EXISTS', KEYS[5])
if over == 1 and count <= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[5])
  over = 0
end
return {last, count, over, recorded, dropped}
"#;

/// Takes a room's `presence_count` slot for `period` ms if it is free. Returns `{1,
/// count}` (publish it), `{2, count}` (the count published last: nothing to do), or
/// `{0, ms}` (the slot is held: ask again after `ms`).
///
/// KEYS: presence-count-slot, presence-count-last, presence-users. ARGV: period ms.
pub const PRESENCE_COUNT_DUE: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  local count = redis.call('HLEN', KEYS[3])
  if redis.call('GET', KEYS[2]) == tostring(count) then return {2, count} end
  redis.call('SET', KEYS[2], count, 'EX', 86400)
  return {1, count}
end
return {0, redis.call('PTTL', KEYS[1])}
"#;

/// Removes every presence entry of a dead node from a room. Returns `{count, over,
/// recorded, dropped, user1, name1, …}`: the distinct users after it, whether the
/// room is still over `low`'s limit, the outbox counts, and the users whose last
/// session it was (each recorded `member_removed`; `room_vacated` when none is left).
///
/// KEYS: presence, presence-users, presence-names, presence-over, outbox. ARGV: node,
/// low, event mask, outbox maxlen, room.
pub(crate) const PRESENCE_REAP: &str = r#"
local gone = {0, 0, 0, 0}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, v = pcall(cjson.decode, all[i + 1])
  if ok and v.node == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    if redis.call('HINCRBY', KEYS[2], v.u, -1) <= 0 then
      redis.call('HDEL', KEYS[2], v.u)
      redis.call('HDEL', KEYS[3], v.u)
      table.insert(gone, v.u)
      table.insert(gone, v.n)
      emit(ARGV[3], 4, KEYS[5], ARGV[4], 'n', 'member_removed', 'r', ARGV[5], 'u', v.u)
    end
  end
end
local count = redis.call('HLEN', KEYS[2])
if count == 0 and #gone > 4 then
  emit(ARGV[3], 2, KEYS[5], ARGV[4], 'n', 'room_vacated', 'r', ARGV[5])
end
local over = redis.call('EXISTS', KEYS[4])
if over == 1 and count <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[4])
  over = 0
end
gone[1], gone[2], gone[3], gone[4] = count, over, recorded, dropped
return gone
"#;

/// Sets or clears a typing flag, drops expired ones, returns `{user1, name1, …}`. At
/// most `max` users are flagged at once: a further one is not added (so neither the
/// hash nor the `typing` frame grows with the room).
///
/// KEYS: typing. ARGV: user, name, 1|0, ttl ms, now ms, max.
pub const TYPING_SET: &str = r#"
local now = tonumber(ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local exp = tonumber(string.match(all[i + 1], '^(%d+)'))
  if exp == nil or exp <= now then redis.call('HDEL', KEYS[1], all[i]) end
end
if ARGV[3] == '1' then
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[6]) then
    redis.call('HSET', KEYS[1], ARGV[1], tostring(now + tonumber(ARGV[4])) .. '|' .. ARGV[2])
  end
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
local out = {}
all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  table.insert(out, all[i])
  table.insert(out, string.match(all[i + 1], '^%d+|(.*)$') or '')
end
return out
"#;

/// Drops expired typing flags. Returns `{changed, user1, name1, …}`.
///
/// KEYS: typing. ARGV: now ms.
pub const TYPING_EXPIRE: &str = r#"
local now = tonumber(ARGV[1])
local changed = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local exp = tonumber(string.match(all[i + 1], '^(%d+)'))
  if exp == nil or exp <= now then
    redis.call('HDEL', KEYS[1], all[i])
    changed = 1
  end
end
local out = {changed}
all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  table.insert(out, all[i])
  table.insert(out, string.match(all[i + 1], '^%d+|(.*)$') or '')
end
return out
"#;

/// Shared by the notification scripts. A user's list holds `ms|r|id|json` items,
/// newest first (`r` is 1 once read; the JSON has no `read` field, so application
/// `data` can never be mistaken for the flag).
const NOTIFICATIONS: &str = r#"
local function parse(item)
  local ms, r, id, json = string.match(item, '^(%d+)|(%d)|([^|]*)|(.*)$')
  return tonumber(ms), r, id, json
end
local function expire(key, oldest)
  while true do
    local last = redis.call('LINDEX', key, -1)
    if not last then return end
    local ms = parse(last)
    if ms == nil or ms >= oldest then return end
    redis.call('RPOP', key)
  end
end
local function unread(key)
  local n = 0
  for _, item in ipairs(redis.call('LRANGE', key, 0, -1)) do
    local _, r = parse(item)
    if r == '0' then n = n + 1 end
  end
  return n
end
"#;

/// Stores one notification per user and publishes each live, in one step.
///
/// KEYS: one list per item. ARGV: cap, ttl ms, now ms, then per item: channel,
/// stored item, notification JSON (with `"read":false`). Returns the unread counts.
pub fn notify() -> String {
    format!(
        "{NOTIFICATIONS}{}",
        r#"
local cap, ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS do
  local k, base = KEYS[i], 3 + (i - 1) * 3
  expire(k, now - ttl)
  redis.call('LPUSH', k, ARGV[base + 2])
  redis.call('LTRIM', k, 0, cap - 1)
  redis.call('PEXPIRE', k, ttl)
  local n = unread(k)
  redis.call('PUBLISH', ARGV[base + 1],
    '{"type":"notification","notification":' .. ARGV[base + 3] .. ',"unread":' .. n .. '}')
  table.insert(out, n)
end
return out
"#
    )
}

/// A page of notifications. KEYS: list. ARGV: limit, before ('' none), unread only
/// (1|0), now ms, ttl ms, max bytes (of the JSON). Returns `{unread, more (0|1), r1,
/// json1, r2, json2, …}` newest first; `more` is 1 when the byte bound cut the page.
pub fn notifications() -> String {
    format!(
        "{NOTIFICATIONS}{}",
        r#"
local limit, before, only = tonumber(ARGV[1]), ARGV[2], ARGV[3] == '1'
local max, bytes = tonumber(ARGV[6]), 0
expire(KEYS[1], tonumber(ARGV[4]) - tonumber(ARGV[5]))
local out = {unread(KEYS[1]), '0'}
local taken = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if taken >= limit then break end
  local _, r, id, json = parse(item)
  if (before == '' or id < before) and (not only or r == '0') then
    if bytes + #json > max then out[2] = '1'; break end
    bytes = bytes + #json
    table.insert(out, r)
    table.insert(out, json)
    taken = taken + 1
  end
end
return out
"#
    )
}

/// Marks read. KEYS: list. ARGV: all (1|0), now ms, ttl ms, channel, origin session,
/// ids… Publishes `notifications_read` (for every other session) when anything
/// changed. Returns `{unread, id1, id2, …}` of the ids that changed.
pub fn mark_read() -> String {
    format!(
        "{NOTIFICATIONS}{}",
        r#"
local all = ARGV[1] == '1'
expire(KEYS[1], tonumber(ARGV[2]) - tonumber(ARGV[3]))
local wanted = {}
for i = 6, #ARGV do wanted[ARGV[i]] = true end
local changed = {}
for i, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ms, r, id, json = parse(item)
  if r == '0' and (all or wanted[id]) then
    redis.call('LSET', KEYS[1], i - 1, ms .. '|1|' .. id .. '|' .. json)
    table.insert(changed, id)
  end
end
local n = unread(KEYS[1])
if #changed > 0 then
  local ids = '"' .. table.concat(changed, '","') .. '"'
  redis.call('PUBLISH', ARGV[4], '#skip:' .. ARGV[5] .. '\n' ..
    '{"type":"notifications_read","ids":[' .. ids .. '],"unread":' .. n .. '}')
end
local out = {n}
for _, id in ipairs(changed) do table.insert(out, id) end
return out
"#
    )
}

/// The unread count. KEYS: list. ARGV: now ms, ttl ms.
pub fn unread() -> String {
    format!(
        "{NOTIFICATIONS}{}",
        r#"
expire(KEYS[1], tonumber(ARGV[1]) - tonumber(ARGV[2]))
return unread(KEYS[1])
"#
    )
}
