//! [`Joined`]: the rooms a session is in, each with what its `join` read (the
//! history's epoch, and the `last_id` its `joined` announced).
//!
//! A short vector rather than a hash map: a session is in few rooms (at most
//! `--max-rooms-per-connection`, 64 by default), and a hash map holding one room
//! allocates room for several (~300 bytes in every joined connection, where this
//! takes one entry). Lookups are linear in the session's own rooms, bounded by that
//! flag; nothing here grows with a room or the cluster.

use wsgate_protocol::MessageId;

/// What a session's `join` of a room read: the history's epoch and the `last_id`
/// its `joined` announced.
pub(super) type JoinedAt = (String, Option<MessageId>);

/// The rooms a session is in.
#[derive(Debug, Default)]
pub(super) struct Joined {
    rooms: Vec<(String, JoinedAt)>,
}

impl Joined {
    /// Whether the session is in `room`.
    pub(super) fn contains_key(&self, room: &str) -> bool {
        self.rooms.iter().any(|(r, _)| r == room)
    }

    /// Rooms the session is in.
    pub(super) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether it is in none.
    pub(super) fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Records (or replaces) `room`'s entry.
    pub(super) fn insert(&mut self, room: String, at: JoinedAt) {
        match self.rooms.iter_mut().find(|(r, _)| *r == room) {
            Some(entry) => entry.1 = at,
            None => {
                // One at a time: most sessions are in one room or a few, and a
                // vector's first push would make room for four.
                self.rooms.reserve_exact(1);
                self.rooms.push((room, at));
            }
        }
    }

    /// Forgets `room`.
    pub(super) fn remove(&mut self, room: &str) {
        if let Some(i) = self.rooms.iter().position(|(r, _)| r == room) {
            self.rooms.swap_remove(i);
        }
        if self.rooms.is_empty() {
            // A session that left every room gives the buffer back.
            self.rooms = Vec::new();
        }
    }

    /// The rooms' names.
    pub(super) fn keys(&self) -> impl Iterator<Item = &String> {
        self.rooms.iter().map(|(r, _)| r)
    }

    /// The rooms with their entries.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &JoinedAt)> {
        self.rooms.iter().map(|(r, at)| (r, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_remove_forgets() {
        let mut j = Joined::default();
        assert!(j.is_empty());
        j.insert("a".into(), ("e1".into(), None));
        j.insert("b".into(), ("e1".into(), Some(MessageId::new(1, 0))));
        j.insert("a".into(), ("e2".into(), Some(MessageId::new(2, 0))));
        assert_eq!(j.len(), 2);
        assert!(j.contains_key("a") && j.contains_key("b") && !j.contains_key("c"));
        let a = j.iter().find(|(r, _)| *r == "a").unwrap().1;
        assert_eq!(a, &("e2".to_string(), Some(MessageId::new(2, 0))));
        j.remove("a");
        j.remove("missing");
        assert_eq!(j.keys().collect::<Vec<_>>(), ["b"]);
        j.remove("b");
        assert!(j.is_empty());
    }
}
