//! [`PendingRemovals`]: presence removals that failed, waiting for a retry (see
//! the presence-retry task, which retries them).

use std::collections::HashSet;
use std::sync::Mutex;

use wsgate_broker::SessionRef;

/// Most removals kept waiting; beyond, one is logged and counted as lost (its entry
/// goes only when the node restarts or dies).
pub const MAX_PENDING: usize = 100_000;

/// Removals waiting for the broker.
#[derive(Default)]
pub struct PendingRemovals {
    /// (room, session). A std mutex: held for a set operation.
    pending: Mutex<HashSet<(String, SessionKey)>>,
}

/// A session as a removal needs it (hashable).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The session.
    pub session_id: String,
    /// Its user.
    pub user_id: String,
    /// Its user's name (for the `leave` it owes).
    pub username: String,
}

impl PendingRemovals {
    /// The set (a std mutex: held for one set operation).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(String, SessionKey)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a removal for retry. Returns `false` when the set is full (it is lost).
    pub fn add(&self, room: &str, session: &SessionRef) -> bool {
        let mut set = self.lock();
        if set.len() >= MAX_PENDING {
            return false;
        }
        set.insert((
            room.to_owned(),
            SessionKey {
                session_id: session.session_id.clone(),
                user_id: session.user.user_id.clone(),
                username: session.user.username.clone(),
            },
        ));
        true
    }

    /// Removals waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
