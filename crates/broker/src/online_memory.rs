//! [`MemoryOnline`]: the sessions of each user on the single node of the embedded
//! broker; a user's last session going records `user_offline` in the
//! [`MemoryOutbox`] under the same lock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::error::Result;
use crate::online::Online;
use crate::outbox::{Event, EventName};
use crate::outbox_memory::MemoryOutbox;
use crate::presence::SessionRef;

/// Sessions per user, in process.
pub struct MemoryOnline {
    /// user id → session ids. A std mutex: a few map updates, never an `.await`.
    users: Mutex<HashMap<String, HashSet<String>>>,
    /// Where `user_offline` is recorded.
    outbox: Arc<MemoryOutbox>,
}

impl MemoryOnline {
    /// Nobody online; events into `outbox`.
    pub fn new(outbox: Arc<MemoryOutbox>) -> Self {
        MemoryOnline {
            users: Mutex::default(),
            outbox,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Online for MemoryOnline {
    async fn connect(&self, session: &SessionRef) -> Result<()> {
        self.lock()
            .entry(session.user.user_id.clone())
            .or_default()
            .insert(session.session_id.clone());
        Ok(())
    }

    async fn disconnect(&self, session: &SessionRef) -> Result<bool> {
        let mut users = self.lock();
        let user = &session.user.user_id;
        let Some(sessions) = users.get_mut(user) else {
            return Ok(false);
        };
        if !sessions.remove(&session.session_id) || !sessions.is_empty() {
            return Ok(false);
        }
        users.remove(user);
        self.outbox.push(Event {
            name: EventName::UserOffline,
            room: None,
            user_id: Some(user.clone()),
            message: None,
        });
        Ok(true)
    }
}
