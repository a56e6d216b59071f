//! [`RedisInbox`]: notifications and saved session state of a cluster, on Redis. Each
//! change and the frame announcing it are one script call, so a user's sessions on
//! every node see changes in the order they were made.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use wsgate_protocol::server::{Notification, Restore, RestoreRoom};

use crate::broker::Channel;
use crate::error::Result;
use crate::inbox::{Inbox, NotificationPage};
use crate::redis_link::{now_ms, unavailable, RedisLink};
use crate::scripts;

/// Per-user state in Redis.
pub struct RedisInbox {
    /// The command connection.
    link: Arc<RedisLink>,
    /// Stores notifications and publishes them.
    notify: Script,
    /// A page of notifications.
    notifications: Script,
    /// Marks notifications read and tells the other sessions.
    mark_read: Script,
    /// The unread count.
    unread: Script,
}

impl RedisInbox {
    /// Stores and publishes `items` in one script call (of one slot on a cluster).
    async fn notify_group(
        &self,
        items: &[&Notification],
        cap: usize,
        ttl: Duration,
    ) -> Result<Vec<u64>> {
        let keys = &self.link.keys;
        let now = now_ms();
        let mut inv = self.notify.prepare_invoke();
        inv.arg(cap.max(1)).arg(ttl.as_millis() as u64).arg(now);
        for n in items {
            let mut stored = (*n).clone();
            stored.read = false;
            let full = serde_json::to_string(&stored).map_err(unavailable)?;
            let mut bare = serde_json::to_value(&stored).map_err(unavailable)?;
            if let Some(o) = bare.as_object_mut() {
                o.remove("read");
            }
            inv.key(keys.notifications(&n.user_id))
                .arg(keys.channel(&Channel::User(n.user_id.clone())))
                .arg(format!("{now}|0|{}|{bare}", n.id))
                .arg(full);
        }
        self.link
            .with_conn(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    /// The inbox over `link`.
    pub fn new(link: Arc<RedisLink>) -> Self {
        let script = |text: &str| Script::new(&link.keys.script(text));
        RedisInbox {
            notify: script(&scripts::notify()),
            notifications: script(&scripts::notifications()),
            mark_read: script(&scripts::mark_read()),
            unread: script(&scripts::unread()),
            link,
        }
    }
}

#[async_trait]
impl Inbox for RedisInbox {
    async fn notify(&self, items: &[Notification], cap: usize, ttl: Duration) -> Result<Vec<u64>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &self.link.keys;
        if !keys.is_sharded() {
            let all: Vec<&Notification> = items.iter().collect();
            return self.notify_group(&all, cap, ttl).await;
        }
        // On a cluster one call per slot: a script may only touch one slot's keys.
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, n) in items.iter().enumerate() {
            let slot = crate::slots::slot(&keys.notifications(&n.user_id));
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        let mut calls = Vec::with_capacity(groups.len());
        for (_, members) in &groups {
            let part: Vec<&Notification> = members.iter().map(|&i| &items[i]).collect();
            calls.push(async move { self.notify_group(&part, cap, ttl).await });
        }
        let counts = futures_util::future::join_all(calls).await;
        let mut out = vec![0; items.len()];
        for ((_, members), counts) in groups.iter().zip(counts) {
            for (&i, n) in members.iter().zip(counts?) {
                out[i] = n;
            }
        }
        Ok(out)
    }

    async fn notifications(
        &self,
        user: &str,
        limit: usize,
        before: Option<&str>,
        unread_only: bool,
        ttl: Duration,
        max_bytes: usize,
    ) -> Result<NotificationPage> {
        let key = self.link.keys.notifications(user);
        let out: Vec<String> = self
            .link
            .with_conn(|mut c| async move {
                self.notifications
                    .key(key)
                    .arg(limit)
                    .arg(before.unwrap_or(""))
                    .arg(if unread_only { "1" } else { "0" })
                    .arg(now_ms())
                    .arg(ttl.as_millis() as u64)
                    .arg(max_bytes)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut it = out.into_iter();
        let unread = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let more = it.next().is_some_and(|m| m == "1");
        let mut items = Vec::new();
        while let (Some(r), Some(json)) = (it.next(), it.next()) {
            let mut v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("read".into(), serde_json::Value::Bool(r == "1"));
            }
            if let Ok(n) = serde_json::from_value::<Notification>(v) {
                items.push(n);
            }
        }
        Ok(NotificationPage {
            items,
            unread,
            more,
        })
    }

    async fn mark_read(
        &self,
        user: &str,
        ids: Option<&[String]>,
        origin_session: &str,
        ttl: Duration,
    ) -> Result<(Vec<String>, u64)> {
        let keys = &self.link.keys;
        let mut inv = self.mark_read.prepare_invoke();
        inv.key(keys.notifications(user))
            .arg(if ids.is_none() { "1" } else { "0" })
            .arg(now_ms())
            .arg(ttl.as_millis() as u64)
            .arg(keys.channel(&Channel::User(user.to_owned())))
            .arg(origin_session);
        for id in ids.unwrap_or_default() {
            inv.arg(id);
        }
        let out: Vec<String> = self
            .link
            .with_conn(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let mut it = out.into_iter();
        let unread = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        Ok((it.collect(), unread))
    }

    async fn unread(&self, user: &str, ttl: Duration) -> Result<u64> {
        let key = self.link.keys.notifications(user);
        self.link
            .with_conn(|mut c| async move {
                self.unread
                    .key(key)
                    .arg(now_ms())
                    .arg(ttl.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await
    }

    async fn save_restore(&self, user: &str, rooms: &[RestoreRoom], ttl: Duration) -> Result<()> {
        if rooms.is_empty() {
            return Ok(());
        }
        let key = self.link.keys.restore(user);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for r in rooms {
            let v = serde_json::to_string(r).map_err(unavailable)?;
            pipe.hset(&key, &r.room, v).ignore();
        }
        pipe.pexpire(&key, ttl.as_millis() as i64).ignore();
        self.link
            .with_conn(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    async fn take_restore(&self, user: &str) -> Result<Option<Restore>> {
        let key = self.link.keys.restore(user);
        let (saved, _): (Vec<(String, String)>, i64) = self
            .link
            .with_conn(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .hgetall(&key)
                    .del(&key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut rooms: Vec<RestoreRoom> = saved
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str(&v).ok())
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        Ok((!rooms.is_empty()).then_some(Restore { rooms }))
    }
}
