//! [`RedisPresence`]: presence and typing of a cluster, on Redis. Every presence entry
//! carries its node, so the registry can remove a dead node's sessions
//! ([`crate::registry_redis`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use wsgate_protocol::server::Member;

use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::outbox_redis::RedisRecorder;
use crate::presence::{
    Added, CountDue, MembersPage, Presence, PresenceChange, SessionRef, MEMBERS_PAGE_MAX,
    TYPING_MAX,
};
use crate::redis_link::{now_ms, RedisLink};
use crate::scripts;
use crate::scripts_webhooks;

/// Presence in Redis.
pub struct RedisPresence {
    /// The command connection.
    link: Arc<RedisLink>,
    /// What the add and remove scripts record for webhooks.
    recorder: Arc<RedisRecorder>,
    /// Adds a session.
    add: Script,
    /// Removes a session.
    remove: Script,
    /// Takes a room's `presence_count` slot.
    count_due: Script,
    /// Sets or clears a typing flag.
    typing_set: Script,
    /// Drops expired typing flags.
    typing_expire: Script,
}

/// The keys the add and remove scripts take: presence, presence-users, node-rooms,
/// presence-names, presence-over, the webhook outbox.
fn entry_keys(keys: &Keys, room: &str, node: &str) -> [String; 6] {
    [
        keys.presence(room),
        keys.presence_users(room),
        keys.node_rooms(node, room),
        keys.presence_names(room),
        keys.presence_over(room),
        keys.webhooks(room),
    ]
}

/// A page of `members` with its cursor.
fn page_of(members: Vec<Member>, next_cursor: Option<String>) -> MembersPage {
    MembersPage {
        members,
        next_cursor,
    }
}

/// `{user1, name1, user2, name2, …}` → members ordered by user id.
pub(crate) fn pairs_to_members(flat: Vec<String>) -> Vec<Member> {
    let mut map = BTreeMap::new();
    let mut it = flat.into_iter();
    while let (Some(user_id), Some(username)) = (it.next(), it.next()) {
        map.insert(user_id, username);
    }
    map.into_iter()
        .map(|(user_id, username)| Member { user_id, username })
        .collect()
}

/// An integer of a script's reply.
fn int(v: Option<&redis::Value>) -> i64 {
    match v {
        Some(redis::Value::Int(i)) => *i,
        Some(redis::Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// A string of a script's reply.
fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `{user1, name1, …}` of one `HSCAN` batch → members ordered by user id, each once.
fn batch(flat: &[redis::Value]) -> Vec<Member> {
    pairs_to_members(flat.iter().filter_map(text).collect())
}

/// A Redis `members` cursor: the `HSCAN` cursor of a batch and how many of the batch
/// (ordered by user id) earlier pages took. A batch can exceed the page (a small hash
/// is scanned whole), so a page may end inside one.
fn parse_cursor(c: &str) -> Option<(u64, usize)> {
    let (scan, skip) = c.split_once('.')?;
    Some((scan.parse().ok()?, skip.parse().ok()?))
}

/// `HSCAN` batches one `members` page may read before answering a shorter page (with
/// a cursor): bounds a page's cost when the hash is sparse.
const MAX_SCANS_PER_PAGE: usize = 4;

impl RedisPresence {
    /// Presence over `link`, recording transitions as `recorder` says.
    pub fn new(link: Arc<RedisLink>, recorder: Arc<RedisRecorder>) -> Self {
        RedisPresence {
            link,
            recorder,
            add: Script::new(&scripts_webhooks::presence_add()),
            remove: Script::new(&scripts_webhooks::presence_remove()),
            count_due: Script::new(scripts::PRESENCE_COUNT_DUE),
            typing_set: Script::new(scripts::TYPING_SET),
            typing_expire: Script::new(scripts::TYPING_EXPIRE),
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn add(&self, room: &str, session: &SessionRef, first_page: usize) -> Result<Added> {
        let (keys, node) = (&self.link.keys, &self.link.settings.node_id);
        let rules = self.link.policy.rules(room);
        self.link.note_slot(room).await?;
        let r = &self.recorder;
        let reply: Vec<redis::Value> = self
            .link
            .with_conn(|mut c| async move {
                self.add
                    .key(&entry_keys(keys, room, node)[..])
                    .arg(&session.session_id)
                    .arg(&session.user.user_id)
                    .arg(&session.user.username)
                    .arg(node)
                    .arg(room)
                    .arg(rules.max_members.unwrap_or(0))
                    .arg(rules.presence_max_members)
                    .arg(first_page)
                    .arg(r.mask())
                    .arg(r.max_len())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if int(reply.first()) < 0 {
            return Ok(Added::Full);
        }
        r.recorded(&keys.webhooks(room), int(reply.get(3)), int(reply.get(4)))
            .await;
        let change = PresenceChange {
            edge: int(reply.first()) == 1,
            count: int(reply.get(1)).max(0) as u64,
            over: int(reply.get(2)) == 1,
        };
        let mut page = MembersPage::default();
        if first_page > 0 && reply.len() > 5 {
            let mut members = batch(&reply[6..]);
            members.truncate(first_page);
            page.next_cursor = (change.count as usize > members.len()).then(|| "0.0".to_owned());
            page.members = members;
        }
        Ok(Added::In(change, page))
    }

    async fn remove(&self, room: &str, session: &SessionRef) -> Result<PresenceChange> {
        let (keys, node) = (&self.link.keys, &self.link.settings.node_id);
        let low = self.link.policy.rules(room).presence_low_water();
        let r = &self.recorder;
        let reply: Vec<i64> = self
            .link
            .with_conn(|mut c| async move {
                self.remove
                    .key(&entry_keys(keys, room, node)[..])
                    .arg(&session.session_id)
                    .arg(&session.user.user_id)
                    .arg(room)
                    .arg(low)
                    .arg(r.mask())
                    .arg(r.max_len())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let at = |i: usize| reply.get(i).copied().unwrap_or(0);
        r.recorded(&keys.webhooks(room), at(3), at(4)).await;
        Ok(PresenceChange {
            edge: reply.first() == Some(&1),
            count: reply.get(1).copied().unwrap_or(0).max(0) as u64,
            over: reply.get(2) == Some(&1),
        })
    }

    async fn count(&self, room: &str) -> Result<(u64, bool)> {
        let (users, over) = (
            self.link.keys.presence_users(room),
            self.link.keys.presence_over(room),
        );
        let (count, over): (u64, bool) = self
            .link
            .with_conn(|mut c| async move {
                redis::pipe()
                    .hlen(users)
                    .exists(over)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok((count, over))
    }

    async fn members(&self, room: &str, cursor: Option<&str>, limit: usize) -> Result<MembersPage> {
        let (mut scan, mut skip) = match cursor {
            None => (0, 0),
            Some(c) => parse_cursor(c).ok_or_else(|| Error::Invalid("unknown cursor".into()))?,
        };
        let limit = limit.clamp(1, MEMBERS_PAGE_MAX);
        let mut out: Vec<Member> = Vec::new();
        for _ in 0..MAX_SCANS_PER_PAGE {
            let key = self.link.keys.presence_names(room);
            let (next, flat): (u64, Vec<String>) = self
                .link
                .with_conn(|mut c| async move {
                    redis::cmd("HSCAN")
                        .arg(key)
                        .arg(scan)
                        .arg("COUNT")
                        .arg(limit)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let batch = pairs_to_members(flat);
            let want = limit - out.len();
            let rest: Vec<Member> = batch.into_iter().skip(skip).collect();
            if rest.len() > want {
                out.extend(rest.into_iter().take(want));
                skip += want;
                return Ok(page_of(out, Some(format!("{scan}.{skip}"))));
            }
            out.extend(rest);
            skip = 0;
            scan = next;
            if scan == 0 {
                return Ok(page_of(out, None));
            }
            if out.len() == limit {
                break;
            }
        }
        Ok(page_of(out, Some(format!("{scan}.0"))))
    }

    async fn count_due(&self, room: &str, period: Duration) -> Result<CountDue> {
        let keys = &self.link.keys;
        let reply: Vec<i64> = self
            .link
            .with_conn(|mut c| async move {
                self.count_due
                    .key(keys.presence_count_slot(room))
                    .key(keys.presence_count_last(room))
                    .key(keys.presence_users(room))
                    .arg(period.as_millis().max(1) as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let n = reply.get(1).copied().unwrap_or(0).max(0) as u64;
        Ok(match reply.first() {
            Some(1) => CountDue::Publish(n),
            Some(2) => CountDue::Unchanged,
            _ => CountDue::Later(Duration::from_millis(n.max(1))),
        })
    }

    async fn typing_set(
        &self,
        room: &str,
        user: &Member,
        typing: bool,
        ttl: Duration,
    ) -> Result<Vec<Member>> {
        let key = self.link.keys.typing(room);
        let flat: Vec<String> = self
            .link
            .with_conn(|mut c| async move {
                self.typing_set
                    .key(key)
                    .arg(&user.user_id)
                    .arg(&user.username)
                    .arg(if typing { "1" } else { "0" })
                    .arg(ttl.as_millis() as u64)
                    .arg(now_ms())
                    .arg(TYPING_MAX)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(pairs_to_members(flat))
    }

    async fn typing_expire(&self, room: &str) -> Result<Option<Vec<Member>>> {
        let key = self.link.keys.typing(room);
        let mut flat: Vec<String> = self
            .link
            .with_conn(|mut c| async move {
                self.typing_expire
                    .key(key)
                    .arg(now_ms())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if flat.is_empty() || flat.remove(0) != "1" {
            return Ok(None);
        }
        Ok(Some(pairs_to_members(flat)))
    }
}
