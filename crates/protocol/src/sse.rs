//! Server-Sent Events as `GET /events` speaks them: the cursor that names a position
//! in every room of a stream, and the text of each event.
//!
//! ```text
//! event: message
//! id: a=1700000000000-0;b=1700000000123-2
//! data: {…the frame a WebSocket client gets…}
//! ```

use std::fmt;

use crate::id::MessageId;
use crate::names;
use crate::server::{frame_type, stored_room_id};

/// The frame types an SSE stream carries; other frames are not sent.
pub const EVENTS: [&str; 6] = [
    "message",
    "publish",
    "broadcast",
    "notification",
    "reset",
    "expired",
];

/// A comment line that keeps proxies from closing an idle stream.
pub const KEEPALIVE: &str = ": keepalive\n\n";

/// A position in every room of a stream: `room=ID;room=ID`. Room names cannot hold
/// `;` or `=`, so the format needs no escaping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(Vec<(String, MessageId)>);

impl Cursor {
    /// An empty cursor.
    pub fn new() -> Self {
        Cursor::default()
    }

    /// Parses `a=ID;b=ID`; unknown or malformed parts are ignored.
    pub fn parse(s: &str) -> Self {
        Cursor(
            s.split(';')
                .filter_map(|part| {
                    let (room, id) = part.trim().split_once('=')?;
                    let id = id.parse().ok()?;
                    names::valid_room(room).then(|| (room.to_owned(), id))
                })
                .collect(),
        )
    }

    /// The position in `room`, if the cursor names it.
    pub fn get(&self, room: &str) -> Option<MessageId> {
        self.0.iter().find(|(r, _)| r == room).map(|(_, id)| *id)
    }

    /// Sets the position in `room` (added at the end when new).
    pub fn set(&mut self, room: &str, id: MessageId) {
        match self.0.iter_mut().find(|(r, _)| r == room) {
            Some(entry) => entry.1 = id,
            None => self.0.push((room.to_owned(), id)),
        }
    }

    /// Every (room, id), in order.
    pub fn entries(&self) -> &[(String, MessageId)] {
        &self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (room, id)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{room}={id}")?;
        }
        Ok(())
    }
}

/// The `retry:` line a stream opens with.
pub fn retry(ms: u64) -> String {
    format!("retry: {ms}\n\n")
}

/// An event with an id and no data: it sets the browser's `Last-Event-ID` without
/// firing anything, so a reconnect before any event still resumes every room.
pub fn id_only(cursor: &Cursor) -> String {
    format!("id: {cursor}\n\n")
}

/// The SSE event for an encoded frame, advancing `cursor` past a stored frame of one
/// of its rooms; `None` for frames SSE does not carry.
pub fn event(frame: &str, cursor: &mut Cursor) -> Option<String> {
    let kind = frame_type(frame)?;
    if !EVENTS.contains(&kind) {
        return None;
    }
    if let Some((room, id)) = stored_room_id(frame) {
        if cursor.get(room).is_some() {
            cursor.set(room, id);
        }
    }
    let cursor = cursor.to_string();
    let mut out = String::with_capacity(frame.len() + cursor.len() + 32);
    out.push_str("event: ");
    out.push_str(kind);
    out.push_str("\nid: ");
    out.push_str(&cursor);
    out.push_str("\ndata: ");
    out.push_str(frame);
    out.push_str("\n\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_ignore_garbage() {
        let c = Cursor::parse("a=1-0;b.c=1700000000000-12;bad;x=nope;=1-0; d = 2-3");
        assert_eq!(
            c.entries(),
            &[
                ("a".to_owned(), MessageId::new(1, 0)),
                ("b.c".to_owned(), MessageId::new(1_700_000_000_000, 12)),
            ]
        );
        assert_eq!(c.to_string(), "a=1-0;b.c=1700000000000-12");
        assert_eq!(c.get("b.c"), Some(MessageId::new(1_700_000_000_000, 12)));
        assert_eq!(c.get("zz"), None);
    }

    #[test]
    fn events_advance_the_cursor() {
        let mut cursor = Cursor::new();
        cursor.set("a", MessageId::ZERO);
        cursor.set("b", MessageId::new(5, 0));
        let f = r#"{"type":"message","id":"9-1","room":"a","content":"x"}"#;
        assert_eq!(
            event(f, &mut cursor).unwrap(),
            "event: message\nid: a=9-1;b=5-0\ndata: {\"type\":\"message\",\"id\":\"9-1\",\"room\":\"a\",\"content\":\"x\"}\n\n"
        );
        // A room the stream does not follow does not enter the cursor.
        let other = r#"{"type":"message","id":"9-2","room":"z","content":"x"}"#;
        assert!(event(other, &mut cursor)
            .unwrap()
            .contains("id: a=9-1;b=5-0\n"));
        let typing = r#"{"type":"typing","room":"a","users":[]}"#;
        assert!(event(typing, &mut cursor).is_none());
        assert_eq!(id_only(&cursor), "id: a=9-1;b=5-0\n\n");
        assert_eq!(retry(3000), "retry: 3000\n\n");
    }
}
