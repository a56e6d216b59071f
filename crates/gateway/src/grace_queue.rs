//! [`GraceQueue`]: presence entries of closed sessions waiting out the presence grace,
//! in deadline order (`presence_grace.rs` removes them as they fall due).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use wsgate_broker::SessionRef;

/// The room of an entry that stands for the session itself rather than one of its
/// rooms: its user's online count (`user_offline` webhooks), which waits out the grace
/// too. No room has an empty name.
pub const SESSION: &str = "";

/// Most entries waiting out their grace; beyond, an entry is removed at once.
pub const MAX_WAITING: usize = 200_000;

/// Presence entries waiting out the grace.
#[derive(Default)]
pub struct GraceQueue {
    /// (deadline, room, session), oldest first. A std mutex: held for a queue operation.
    queue: Mutex<VecDeque<(Instant, String, Arc<SessionRef>)>>,
}

impl GraceQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, String, Arc<SessionRef>)>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `session`'s entry in `room` until `deadline`. Returns `false` when the
    /// queue is full (the caller removes it at once).
    pub fn defer(&self, deadline: Instant, room: &str, session: Arc<SessionRef>) -> bool {
        let mut q = self.lock();
        if q.len() >= MAX_WAITING {
            return false;
        }
        q.push_back((deadline, room.to_owned(), session));
        true
    }

    /// Takes the entries due at `now` (all of them with `None`), at most `max`.
    pub fn take_due(&self, now: Option<Instant>, max: usize) -> Vec<(String, Arc<SessionRef>)> {
        let mut q = self.lock();
        let mut out = Vec::new();
        while out.len() < max {
            match q.front() {
                Some((at, _, _)) if now.is_none_or(|n| *at <= n) => {
                    if let Some((_, room, s)) = q.pop_front() {
                        out.push((room, s));
                    }
                }
                _ => break,
            }
        }
        out
    }

    /// Entries waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wsgate_protocol::server::Member;

    fn s(id: &str) -> Arc<SessionRef> {
        Arc::new(SessionRef {
            session_id: id.into(),
            user: Member {
                user_id: id.into(),
                username: id.into(),
            },
        })
    }

    #[tokio::test(start_paused = true)]
    async fn entries_fall_due_in_order() {
        let q = GraceQueue::default();
        let t0 = Instant::now();
        assert!(q.defer(t0 + Duration::from_secs(1), "r", s("a")));
        assert!(q.defer(t0 + Duration::from_secs(2), "r", s("b")));
        assert!(q.take_due(Some(t0), 10).is_empty());
        let due = q.take_due(Some(t0 + Duration::from_secs(1)), 10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.session_id, "a");
        assert_eq!(q.take_due(None, 10).len(), 1, "all of them at shutdown");
        assert!(q.is_empty());
    }
}
