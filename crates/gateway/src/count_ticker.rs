//! [`CountTicker`]: the count-mode rooms whose count changed on this node and is not
//! yet published, with when to ask again ([`crate::presence_count`] publishes them).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

/// Rooms whose count changed on this node and is not yet published, with when to
/// ask again.
#[derive(Default)]
pub struct CountTicker {
    /// room → when it is due. A std mutex: held for one map operation.
    pending: Mutex<HashMap<String, Instant>>,
}

impl CountTicker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `room`'s count as changed (due now unless it is waiting already).
    pub fn touch(&self, room: &str) {
        let mut p = self.lock();
        if !p.contains_key(room) {
            p.insert(room.to_owned(), Instant::now());
        }
    }

    /// Rooms due at `now`.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Forgets `room` (its count is published).
    pub fn done(&self, room: &str) {
        self.lock().remove(room);
    }

    /// Asks again about `room` at `at`.
    pub fn retry(&self, room: &str, at: Instant) {
        if let Some(t) = self.lock().get_mut(room) {
            *t = at;
        }
    }

    /// Rooms waiting now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no room is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_room_is_due_once_until_done_and_retried_later() {
        let t = CountTicker::default();
        t.touch("a");
        t.touch("a");
        assert_eq!(t.len(), 1);
        let now = Instant::now();
        assert_eq!(t.due(now), vec!["a".to_owned()]);
        t.retry("a", now + Duration::from_millis(500));
        assert!(t.due(now).is_empty());
        t.touch("a");
        assert!(
            t.due(now).is_empty(),
            "a touch does not advance a waiting room"
        );
        assert_eq!(
            t.due(now + Duration::from_millis(500)),
            vec!["a".to_owned()]
        );
        t.done("a");
        assert!(t.is_empty());
    }
}
