//! [`UserSessions`]: a user's local sessions, as the hub keeps them.
//!
//! Most users have one session on a node: it is held inline, and a map is made only
//! for a second one. A hash map holding one session allocates room for several
//! (~250 bytes in every connection); removal stays O(1) for a user with thousands.

use std::collections::HashMap;

use crate::handle::SessionHandle;

/// A user's local sessions (never empty: the hub drops the entry with the last).
pub(super) enum UserSessions {
    /// The only one.
    One(SessionHandle),
    /// Several, by session id.
    Many(HashMap<u64, SessionHandle>),
}

impl UserSessions {
    /// Adds a session (or replaces the one with its id).
    pub(super) fn insert(&mut self, handle: SessionHandle) {
        match self {
            UserSessions::One(h) if h.id == handle.id => *h = handle,
            UserSessions::One(h) => {
                let first = h.clone();
                *self = UserSessions::Many(HashMap::from([(first.id, first), (handle.id, handle)]));
            }
            UserSessions::Many(m) => {
                m.insert(handle.id, handle);
            }
        }
    }

    /// Removes session `id`; `true` when none is left.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        match self {
            UserSessions::One(h) => h.id == id,
            UserSessions::Many(m) => {
                m.remove(&id);
                let last = if m.len() == 1 {
                    m.drain().next().map(|(_, h)| h)
                } else {
                    None
                };
                match last {
                    Some(last) => {
                        *self = UserSessions::One(last);
                        false
                    }
                    None => m.is_empty(),
                }
            }
        }
    }

    /// The sessions.
    pub(super) fn values(&self) -> impl Iterator<Item = &SessionHandle> {
        let (one, many) = match self {
            UserSessions::One(h) => (Some(h), None),
            UserSessions::Many(m) => (None, Some(m.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}
