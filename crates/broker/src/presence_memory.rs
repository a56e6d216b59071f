//! [`MemoryPresence`]: presence and typing of the embedded broker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wsgate_protocol::server::Member;

use crate::error::Result;
use crate::presence::{Presence, SessionRef, TYPING_MAX};

/// Presence and typing in process.
#[derive(Default)]
pub struct MemoryPresence {
    /// A std mutex: every operation is a few map updates, never an `.await`.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// room → user id → (display name, session ids).
    presence: HashMap<String, BTreeMap<String, (String, HashSet<String>)>>,
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

impl MemoryPresence {
    /// No one anywhere.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn add(&self, room: &str, session: &SessionRef) -> Result<bool> {
        let mut state = self.lock();
        let users = state.presence.entry(room.to_owned()).or_default();
        let (name, sessions) = users
            .entry(session.user.user_id.clone())
            .or_insert_with(|| (session.user.username.clone(), HashSet::new()));
        name.clone_from(&session.user.username);
        let first = sessions.is_empty();
        sessions.insert(session.session_id.clone());
        Ok(first)
    }

    async fn remove(&self, room: &str, session: &SessionRef) -> Result<bool> {
        let mut state = self.lock();
        let Some(users) = state.presence.get_mut(room) else {
            return Ok(false);
        };
        let Some((_, sessions)) = users.get_mut(&session.user.user_id) else {
            return Ok(false);
        };
        let removed = sessions.remove(&session.session_id);
        let last = removed && sessions.is_empty();
        if sessions.is_empty() {
            users.remove(&session.user.user_id);
        }
        if users.is_empty() {
            state.presence.remove(room);
        }
        Ok(last)
    }

    async fn members(&self, room: &str) -> Result<Vec<Member>> {
        let state = self.lock();
        Ok(state
            .presence
            .get(room)
            .map(|users| members(users.iter().map(|(id, (name, _))| (id, name))))
            .unwrap_or_default())
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
