//! [`RedisPresence`]: presence and typing of a cluster, on Redis. Every presence entry
//! carries its node, so the registry can remove a dead node's sessions
//! ([`crate::registry_redis`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use wsgate_protocol::server::Member;

use crate::error::Result;
use crate::presence::{Presence, SessionRef, TYPING_MAX};
use crate::redis_link::{now_ms, RedisLink};
use crate::scripts;

/// Presence in Redis.
pub struct RedisPresence {
    /// The command connection.
    link: Arc<RedisLink>,
    /// Adds a session.
    add: Script,
    /// Removes a session.
    remove: Script,
    /// Sets or clears a typing flag.
    typing_set: Script,
    /// Drops expired typing flags.
    typing_expire: Script,
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

#[derive(serde::Deserialize)]
struct PresenceValue {
    u: String,
    n: String,
}

impl RedisPresence {
    /// Presence over `link`.
    pub fn new(link: Arc<RedisLink>) -> Self {
        RedisPresence {
            link,
            add: Script::new(scripts::PRESENCE_ADD),
            remove: Script::new(scripts::PRESENCE_REMOVE),
            typing_set: Script::new(scripts::TYPING_SET),
            typing_expire: Script::new(scripts::TYPING_EXPIRE),
        }
    }
}

#[async_trait]
impl Presence for RedisPresence {
    async fn add(&self, room: &str, session: &SessionRef) -> Result<bool> {
        let (keys, node) = (&self.link.keys, &self.link.settings.node_id);
        let first: i64 = self
            .link
            .with_conn(|mut c| async move {
                self.add
                    .key(keys.presence(room))
                    .key(keys.presence_users(room))
                    .key(keys.node_rooms(node))
                    .arg(&session.session_id)
                    .arg(&session.user.user_id)
                    .arg(&session.user.username)
                    .arg(node)
                    .arg(room)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(first == 1)
    }

    async fn remove(&self, room: &str, session: &SessionRef) -> Result<bool> {
        let (keys, node) = (&self.link.keys, &self.link.settings.node_id);
        let last: i64 = self
            .link
            .with_conn(|mut c| async move {
                self.remove
                    .key(keys.presence(room))
                    .key(keys.presence_users(room))
                    .key(keys.node_rooms(node))
                    .arg(&session.session_id)
                    .arg(&session.user.user_id)
                    .arg(room)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(last == 1)
    }

    async fn members(&self, room: &str) -> Result<Vec<Member>> {
        let key = self.link.keys.presence(room);
        let values: Vec<String> = self
            .link
            .with_conn(
                |mut c| async move { redis::cmd("HVALS").arg(key).query_async(&mut c).await },
            )
            .await?;
        let mut users = BTreeMap::new();
        for v in values {
            if let Ok(p) = serde_json::from_str::<PresenceValue>(&v) {
                users.insert(p.u, p.n);
            }
        }
        Ok(users
            .into_iter()
            .map(|(user_id, username)| Member { user_id, username })
            .collect())
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
