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
use crate::server::{frame_type, stored_room_id, ServerFrame};

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

/// A position in every room of a stream: `room=ID@EPOCH;room=ID@EPOCH`. Room names
/// cannot hold `;`, `=` or `@`, nor can epochs, so the format needs no escaping. The
/// epoch is optional (cursors of older servers have none); a resume whose epoch is not
/// the room's any more gets `reset` instead of a gap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(Vec<Position>);

/// One room's part of a [`Cursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The room.
    pub room: String,
    /// The newest id of the room the stream delivered (or started after).
    pub id: MessageId,
    /// The room's epoch `id` belongs to, when known.
    pub epoch: Option<String>,
}

impl Cursor {
    /// An empty cursor.
    pub fn new() -> Self {
        Cursor::default()
    }

    /// Parses `a=ID@EPOCH;b=ID`; unknown or malformed parts are ignored, and so is a
    /// malformed epoch (the position is kept without it).
    pub fn parse(s: &str) -> Self {
        Cursor(
            s.split(';')
                .filter_map(|part| {
                    let (room, pos) = part.trim().split_once('=')?;
                    let (id, epoch) = match pos.split_once('@') {
                        Some((id, epoch)) => (id, names::valid_room(epoch).then_some(epoch)),
                        None => (pos, None),
                    };
                    let id = id.parse().ok()?;
                    names::valid_room(room).then(|| Position {
                        room: room.to_owned(),
                        id,
                        epoch: epoch.map(str::to_owned),
                    })
                })
                .collect(),
        )
    }

    fn find(&self, room: &str) -> Option<&Position> {
        self.0.iter().find(|p| p.room == room)
    }

    /// The position in `room`, if the cursor names it.
    pub fn get(&self, room: &str) -> Option<MessageId> {
        self.find(room).map(|p| p.id)
    }

    /// The epoch of the position in `room`, if the cursor names one.
    pub fn epoch(&self, room: &str) -> Option<&str> {
        self.find(room).and_then(|p| p.epoch.as_deref())
    }

    /// Sets the position in `room` (added at the end when new), keeping its epoch.
    pub fn set(&mut self, room: &str, id: MessageId) {
        match self.0.iter_mut().find(|p| p.room == room) {
            Some(entry) => entry.id = id,
            None => self.0.push(Position {
                room: room.to_owned(),
                id,
                epoch: None,
            }),
        }
    }

    /// Sets the position in `room` and the epoch it belongs to.
    pub fn set_with_epoch(&mut self, room: &str, id: MessageId, epoch: &str) {
        self.set(room, id);
        if let Some(entry) = self.0.iter_mut().find(|p| p.room == room) {
            entry.epoch = names::valid_room(epoch).then(|| epoch.to_owned());
        }
    }

    /// Every position, in order.
    pub fn entries(&self) -> &[Position] {
        &self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{}={}", p.room, p.id)?;
            if let Some(epoch) = &p.epoch {
                write!(f, "@{epoch}")?;
            }
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
    if kind == "resync" {
        return resync(frame, cursor);
    }
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

/// A live gap the node could not refill: the stream says `reset` for the room and its
/// cursor moves to the room's newest id in its (new) epoch, after which live events
/// follow. The frame is parsed: it is rare.
fn resync(frame: &str, cursor: &mut Cursor) -> Option<String> {
    let ServerFrame::Resync {
        room,
        epoch,
        last_id,
    } = serde_json::from_str(frame).ok()?
    else {
        return None;
    };
    cursor.get(&room)?;
    let id = last_id
        .and_then(|i| i.parse().ok())
        .unwrap_or(MessageId::ZERO);
    cursor.set_with_epoch(&room, id, &epoch);
    let reset = ServerFrame::Reset { room }.encode();
    Some(format!("event: reset\nid: {cursor}\ndata: {reset}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_ignore_garbage() {
        let c = Cursor::parse("a=1-0;b.c=1700000000000-12;bad;x=nope;=1-0; d = 2-3");
        let pairs: Vec<_> = c
            .entries()
            .iter()
            .map(|p| (p.room.as_str(), p.id))
            .collect();
        assert_eq!(
            pairs,
            [
                ("a", MessageId::new(1, 0)),
                ("b.c", MessageId::new(1_700_000_000_000, 12)),
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

    #[test]
    fn cursors_carry_epochs() {
        let c = Cursor::parse("a=1-0@abc-12;b=2-0;c=3-0@bad;epoch;d=4-0@");
        assert_eq!(c.epoch("a"), Some("abc-12"));
        assert_eq!(c.get("a"), Some(MessageId::new(1, 0)));
        assert_eq!(c.epoch("b"), None);
        // `bad;epoch` splits at `;`: c keeps its epoch "bad", and "epoch" is no part.
        assert_eq!(c.epoch("c"), Some("bad"));
        assert_eq!(c.get("d"), Some(MessageId::new(4, 0)));
        assert_eq!(c.epoch("d"), None, "an empty epoch is no epoch");
        assert_eq!(c.to_string(), "a=1-0@abc-12;b=2-0;c=3-0@bad;d=4-0");
        let mut c = Cursor::new();
        c.set_with_epoch("r", MessageId::new(5, 0), "e1");
        c.set("r", MessageId::new(6, 0));
        assert_eq!(c.to_string(), "r=6-0@e1");
    }

    #[test]
    fn a_resync_becomes_a_reset_that_moves_the_cursor() {
        let mut cursor = Cursor::new();
        cursor.set_with_epoch("a", MessageId::new(5, 0), "old");
        let f = ServerFrame::Resync {
            room: "a".into(),
            epoch: "new-1".into(),
            last_id: Some("9-0".into()),
        }
        .encode();
        assert_eq!(
            event(&f, &mut cursor).unwrap(),
            "event: reset\nid: a=9-0@new-1\ndata: {\"type\":\"reset\",\"room\":\"a\"}\n\n"
        );
        let empty = ServerFrame::Resync {
            room: "a".into(),
            epoch: "new-2".into(),
            last_id: None,
        }
        .encode();
        assert!(event(&empty, &mut cursor)
            .unwrap()
            .contains("id: a=0-0@new-2\n"));
        let other = ServerFrame::Resync {
            room: "z".into(),
            epoch: "e".into(),
            last_id: None,
        }
        .encode();
        assert!(
            event(&other, &mut cursor).is_none(),
            "not a room of the stream"
        );
    }
}
