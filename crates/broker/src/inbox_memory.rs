//! [`MemoryInbox`]: notifications and saved session state of the embedded broker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use wsgate_protocol::server::{Notification, Restore, RestoreRoom, ServerFrame};

use crate::broker::Channel;
use crate::broker_memory::now_ms;
use crate::bus::MemoryBus;
use crate::envelope::skip_envelope;
use crate::error::Result;
use crate::inbox::{Inbox, NotificationPage};

/// Per-user state in process.
pub struct MemoryInbox {
    /// Where live frames go.
    bus: Arc<MemoryBus>,
    /// An async mutex: a change and the frame announcing it are published under it,
    /// so a user's sessions see changes in the order they were made.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// user id → (creation ms, notification), newest first.
    notifications: HashMap<String, VecDeque<(u64, Notification)>>,
    /// user id → (rooms, expiry).
    restore: HashMap<String, (BTreeMap<String, RestoreRoom>, Instant)>,
}

fn unread_of(list: &VecDeque<(u64, Notification)>) -> u64 {
    list.iter().filter(|(_, n)| !n.read).count() as u64
}

/// Drops notifications older than `ttl` (at the back: the list is newest first).
fn expire(list: &mut VecDeque<(u64, Notification)>, ttl: Duration) {
    let oldest = now_ms().saturating_sub(ttl.as_millis() as u64);
    while list.back().is_some_and(|(ms, _)| *ms < oldest) {
        list.pop_back();
    }
}

impl MemoryInbox {
    /// An empty inbox publishing through `bus`.
    pub fn new(bus: Arc<MemoryBus>) -> Self {
        MemoryInbox {
            bus,
            state: Mutex::new(State::default()),
        }
    }
}

#[async_trait]
impl Inbox for MemoryInbox {
    async fn notify(&self, items: &[Notification], cap: usize, ttl: Duration) -> Result<Vec<u64>> {
        let mut state = self.state.lock().await;
        let now = now_ms();
        let mut unread = Vec::with_capacity(items.len());
        let mut frames = Vec::with_capacity(items.len());
        for n in items {
            let list = state.notifications.entry(n.user_id.clone()).or_default();
            expire(list, ttl);
            list.push_front((now, n.clone()));
            list.truncate(cap.max(1));
            let count = unread_of(list);
            unread.push(count);
            let frame = ServerFrame::Notification {
                notification: n.clone(),
                unread: count,
            };
            frames.push((
                Channel::User(n.user_id.clone()),
                Bytes::from(frame.encode()),
            ));
        }
        for (channel, frame) in frames {
            self.bus.emit(&channel, frame).await?;
        }
        Ok(unread)
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
        let mut state = self.state.lock().await;
        let Some(list) = state.notifications.get_mut(user) else {
            return Ok(NotificationPage::default());
        };
        expire(list, ttl);
        let mut page = NotificationPage {
            unread: unread_of(list),
            ..NotificationPage::default()
        };
        let mut bytes = 0;
        for n in list
            .iter()
            .map(|(_, n)| n)
            .filter(|n| before.is_none_or(|b| n.id.as_str() < b))
            .filter(|n| !unread_only || !n.read)
            .take(limit)
        {
            // The size of its JSON as stored (without the read flag), as in Redis.
            let len = serde_json::to_string(n).map(|j| j.len()).unwrap_or(0);
            if bytes + len > max_bytes {
                page.more = true;
                break;
            }
            bytes += len;
            page.items.push(n.clone());
        }
        Ok(page)
    }

    async fn mark_read(
        &self,
        user: &str,
        ids: Option<&[String]>,
        origin_session: &str,
        ttl: Duration,
    ) -> Result<(Vec<String>, u64)> {
        let mut state = self.state.lock().await;
        let Some(list) = state.notifications.get_mut(user) else {
            return Ok((Vec::new(), 0));
        };
        expire(list, ttl);
        let mut changed = Vec::new();
        for (_, n) in list.iter_mut() {
            if !n.read && ids.is_none_or(|ids| ids.contains(&n.id)) {
                n.read = true;
                changed.push(n.id.clone());
            }
        }
        let unread = unread_of(list);
        if !changed.is_empty() {
            let frame = ServerFrame::NotificationsRead {
                ids: changed.clone(),
                unread,
            };
            let payload = skip_envelope(origin_session, &frame.encode());
            self.bus
                .emit(&Channel::User(user.to_owned()), Bytes::from(payload))
                .await?;
        }
        Ok((changed, unread))
    }

    async fn unread(&self, user: &str, ttl: Duration) -> Result<u64> {
        let mut state = self.state.lock().await;
        Ok(state
            .notifications
            .get_mut(user)
            .map(|list| {
                expire(list, ttl);
                unread_of(list)
            })
            .unwrap_or(0))
    }

    async fn save_restore(&self, user: &str, rooms: &[RestoreRoom], ttl: Duration) -> Result<()> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        state.restore.retain(|_, (_, until)| *until > now);
        let (saved, until) = state
            .restore
            .entry(user.to_owned())
            .or_insert_with(|| (BTreeMap::new(), now));
        for r in rooms {
            saved.insert(r.room.clone(), r.clone());
        }
        *until = now + ttl;
        Ok(())
    }

    async fn take_restore(&self, user: &str) -> Result<Option<Restore>> {
        let mut state = self.state.lock().await;
        Ok(match state.restore.remove(user) {
            Some((rooms, until)) if until > Instant::now() && !rooms.is_empty() => Some(Restore {
                rooms: rooms.into_values().collect(),
            }),
            _ => None,
        })
    }
}
