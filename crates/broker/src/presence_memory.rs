//! [`MemoryPresence`]: presence and typing of the embedded broker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wsgate_protocol::server::Member;

use crate::error::{Error, Result};
use crate::outbox::{Event, EventName, Recording};
use crate::outbox_memory::MemoryOutbox;
use crate::presence::{
    Added, CountDue, MembersPage, Presence, PresenceChange, SessionRef, MEMBERS_PAGE_MAX,
    TYPING_MAX,
};
use crate::rules::RoomPolicy;

/// Presence and typing in process.
pub struct MemoryPresence {
    /// Each room's limits.
    policy: Arc<dyn RoomPolicy>,
    /// A std mutex: every operation is a few map updates, never an `.await`.
    state: Mutex<State>,
    /// Where transitions are recorded for webhooks, under the lock of `state` (so in
    /// the order they happened).
    outbox: Arc<MemoryOutbox>,
}

/// One room's presence.
#[derive(Default)]
struct Room {
    /// user id → (display name, session ids), ordered by user id (pages follow it).
    users: BTreeMap<String, (String, HashSet<String>)>,
    /// Over `presence_max_members` (see [`crate::PresenceChange::over`]).
    over: bool,
}

#[derive(Default)]
struct State {
    presence: HashMap<String, Room>,
    /// room → (when its count slot frees, the count published last).
    counts: HashMap<String, (Instant, u64)>,
    /// room → user id → (display name, expiry).
    typing: HashMap<String, BTreeMap<String, (String, Instant)>>,
}

fn members<'a>(it: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<Member> {
    it.map(|(user_id, username)| Member {
        user_id: user_id.clone(),
        username: username.clone(),
    })
    .collect()
}

/// A page of `users` after `after`, and the cursor of the next one. The cursor is the
/// page's last user id, hex-encoded (user ids may hold any character).
fn page(
    users: &BTreeMap<String, (String, HashSet<String>)>,
    after: Option<&str>,
    limit: usize,
) -> MembersPage {
    use std::ops::Bound;
    let from = match after {
        Some(a) => Bound::Excluded(a.to_owned()),
        None => Bound::Unbounded,
    };
    let mut it = users.range((from, Bound::Unbounded));
    let members = members(it.by_ref().take(limit).map(|(id, (name, _))| (id, name)));
    let next_cursor = match (it.next(), members.last()) {
        (Some(_), Some(last)) => Some(hex(&last.user_id)),
        _ => None,
    };
    MembersPage {
        members,
        next_cursor,
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

impl MemoryPresence {
    /// No one anywhere; each room's limits from `policy`.
    pub fn new(policy: Arc<dyn RoomPolicy>) -> Self {
        Self::recording(policy, Arc::new(MemoryOutbox::new(Recording::OFF)))
    }

    /// No one anywhere; transitions recorded in `outbox`.
    pub fn recording(policy: Arc<dyn RoomPolicy>, outbox: Arc<MemoryOutbox>) -> Self {
        MemoryPresence {
            policy,
            state: Mutex::default(),
            outbox,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn add(&self, room: &str, session: &SessionRef, first_page: usize) -> Result<Added> {
        let rules = self.policy.rules(room);
        let mut state = self.lock();
        let r = state.presence.entry(room.to_owned()).or_default();
        let user = &session.user.user_id;
        if let Some(max) = rules.max_members {
            if !r.users.contains_key(user) && r.users.len() as u64 >= max {
                if r.users.is_empty() {
                    state.presence.remove(room);
                }
                return Ok(Added::Full);
            }
        }
        let (name, sessions) = r
            .users
            .entry(user.clone())
            .or_insert_with(|| (session.user.username.clone(), HashSet::new()));
        name.clone_from(&session.user.username);
        let first = sessions.is_empty();
        sessions.insert(session.session_id.clone());
        let count = r.users.len() as u64;
        if count > rules.presence_max_members {
            r.over = true;
        }
        if first {
            if count == 1 {
                let occupied = Event::room(EventName::RoomOccupied, room, None);
                self.outbox.push(occupied);
            }
            let added = Event::room(EventName::MemberAdded, room, Some(user));
            self.outbox.push(added);
        }
        let change = PresenceChange {
            edge: first,
            count,
            over: r.over,
        };
        let page = if first_page > 0 && !r.over {
            page(&r.users, None, first_page)
        } else {
            MembersPage::default()
        };
        Ok(Added::In(change, page))
    }

    async fn remove(&self, room: &str, session: &SessionRef) -> Result<PresenceChange> {
        let rules = self.policy.rules(room);
        let mut state = self.lock();
        let Some(r) = state.presence.get_mut(room) else {
            return Ok(PresenceChange {
                edge: false,
                count: 0,
                over: false,
            });
        };
        let mut last = false;
        if let Some((_, sessions)) = r.users.get_mut(&session.user.user_id) {
            last = sessions.remove(&session.session_id) && sessions.is_empty();
            if sessions.is_empty() {
                r.users.remove(&session.user.user_id);
            }
        }
        let count = r.users.len() as u64;
        if r.over && count <= rules.presence_low_water() {
            r.over = false;
        }
        let over = r.over;
        if last {
            let user = Some(session.user.user_id.as_str());
            self.outbox
                .push(Event::room(EventName::MemberRemoved, room, user));
            if count == 0 {
                let vacated = Event::room(EventName::RoomVacated, room, None);
                self.outbox.push(vacated);
            }
        }
        if r.users.is_empty() {
            state.presence.remove(room);
            state.counts.remove(room);
        }
        Ok(PresenceChange {
            edge: last,
            count,
            over,
        })
    }

    async fn count(&self, room: &str) -> Result<(u64, bool)> {
        let state = self.lock();
        Ok(state
            .presence
            .get(room)
            .map(|r| (r.users.len() as u64, r.over))
            .unwrap_or((0, false)))
    }

    async fn members(&self, room: &str, cursor: Option<&str>, limit: usize) -> Result<MembersPage> {
        let after = match cursor {
            None => None,
            Some(c) => Some(unhex(c).ok_or_else(|| Error::Invalid("unknown cursor".into()))?),
        };
        let limit = limit.clamp(1, MEMBERS_PAGE_MAX);
        let state = self.lock();
        Ok(state
            .presence
            .get(room)
            .map(|r| page(&r.users, after.as_deref(), limit))
            .unwrap_or_default())
    }

    async fn count_due(&self, room: &str, period: Duration) -> Result<CountDue> {
        let now = Instant::now();
        let mut state = self.lock();
        let count = state
            .presence
            .get(room)
            .map(|r| r.users.len() as u64)
            .unwrap_or(0);
        let slot = state.counts.get(room).copied();
        Ok(match slot {
            Some((until, _)) if until > now => CountDue::Later(until - now),
            Some((_, last)) if last == count => {
                state.counts.insert(room.to_owned(), (now + period, count));
                CountDue::Unchanged
            }
            _ => {
                state.counts.insert(room.to_owned(), (now + period, count));
                CountDue::Publish(count)
            }
        })
    }

    async fn typing_set(
        &self,
        room: &str,
        user: &Member,
        typing: bool,
        ttl: Duration,
    ) -> Result<Vec<Member>> {
        let mut state = self.lock();
        let now = Instant::now();
        let users = state.typing.entry(room.to_owned()).or_default();
        users.retain(|_, (_, until)| *until > now);
        if typing && (users.contains_key(&user.user_id) || users.len() < TYPING_MAX) {
            users.insert(user.user_id.clone(), (user.username.clone(), now + ttl));
        } else if typing {
            // Full: a further typist is not listed.
        } else {
            users.remove(&user.user_id);
        }
        let list = members(users.iter().map(|(id, (name, _))| (id, name)));
        if users.is_empty() {
            state.typing.remove(room);
        }
        Ok(list)
    }

    async fn typing_expire(&self, room: &str) -> Result<Option<Vec<Member>>> {
        let mut state = self.lock();
        let now = Instant::now();
        let Some(users) = state.typing.get_mut(room) else {
            return Ok(None);
        };
        let before = users.len();
        users.retain(|_, (_, until)| *until > now);
        if users.len() == before {
            return Ok(None);
        }
        let list = members(users.iter().map(|(id, (name, _))| (id, name)));
        if users.is_empty() {
            state.typing.remove(room);
        }
        Ok(Some(list))
    }
}
