//! What the writer, the hub and the SSE stream apply to every outgoing frame
//! (`frame_type`, `frame_id`, `stored_room_id` in `wsgate_protocol::server`), how a
//! stored entry becomes a frame (`StoredEntry`, `splice`), and `MessageId` parsing.
//!
//! The input is used twice: as text for the prefix readers and the id parser (which
//! must never panic nor misread), and as a source of structured values whose encoded
//! frames must read back as what went in.

use arbitrary::{Result, Unstructured};
use serde_json::{json, Value};
use wsgate_protocol::names;
use wsgate_protocol::server::{
    frame_id, frame_type, splice, stored_room_id, EntryKind, Member, PresenceEvent, ServerFrame,
    StoredEntry,
};
use wsgate_protocol::{ErrorCode, MessageId};

const PREFIX: &str = r#"{"type":""#;

/// Checks one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        prefix_readers(text);
        id_parse(text);
    }
    let _ = structured(&mut Unstructured::new(data));
}

/// The readers never panic, and what they return is really in the frame's prefix.
fn prefix_readers(s: &str) {
    let t = frame_type(s);
    if let Some(t) = t {
        assert!(!t.contains('"'));
        assert!(s.starts_with(&format!("{PREFIX}{t}\"")));
    }
    if let Some(id) = frame_id(s) {
        let t = t.expect("an id without a type");
        let head = format!("{PREFIX}{t}\",\"id\":\"");
        let rest = s.strip_prefix(&head).expect("an id not at the front");
        let (text, _) = rest.split_once('"').expect("an unterminated id");
        assert_eq!(text.parse::<MessageId>(), Ok(id));
        id_round_trips(id);
    }
    if let Some((room, id)) = stored_room_id(s) {
        assert!(matches!(t, Some("message" | "publish")), "{t:?}");
        assert_eq!(frame_id(s), Some(id));
        assert!(!room.contains('"'));
        assert!(s.contains(&format!("\",\"room\":\"{room}\"")));
    }
    if let Some(t) = t {
        // A stored entry's kind and its frame type name each other.
        if let Some(k) = EntryKind::from_type(t) {
            assert_eq!(k.as_str(), t);
        }
    }
}

/// `MessageId::from_str` accepts exactly `<digits>-<digits>` (1-20 digits each, in
/// range), and what it accepts prints back to an id that parses to the same value.
fn id_parse(s: &str) {
    let reference = s.split_once('-').and_then(|(ms, seq)| {
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(MessageId::new(ms.parse().ok()?, seq.parse().ok()?))
    });
    let parsed = s.parse::<MessageId>().ok();
    assert_eq!(parsed, reference, "{s:?}");
    if let Some(id) = parsed {
        id_round_trips(id);
    }
}

fn id_round_trips(id: MessageId) {
    let printed = id.to_string();
    assert_eq!(printed.parse::<MessageId>(), Ok(id));
    // Printed ids are canonical: no leading zeros, so equal ids print equal.
    let (ms, seq) = printed.split_once('-').expect("a printed id without '-'");
    assert_eq!(ms, id.ms.to_string());
    assert_eq!(seq, id.seq.to_string());
}

/// Characters serde_json writes as they are inside a string (no escape), so a prefix
/// reader sees the same text the JSON holds.
fn plain(s: &str) -> bool {
    !s.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

fn structured(u: &mut Unstructured<'_>) -> Result<()> {
    let id = MessageId::new(u.arbitrary()?, u.arbitrary()?);
    id_round_trips(id);
    let other = MessageId::new(u.arbitrary()?, u.arbitrary()?);
    assert_eq!(id.cmp(&other), (id.ms, id.seq).cmp(&(other.ms, other.seq)));

    // splice: whatever the body, the type and id read back.
    let kind: &str = u.arbitrary()?;
    let body: &str = u.arbitrary()?;
    let spliced = splice(kind, &id.to_string(), body);
    if !kind.contains('"') {
        assert_eq!(frame_type(&spliced), Some(kind));
        assert_eq!(frame_id(&spliced), Some(id));
        if let (Some(_), Some(rest)) = (
            EntryKind::from_type(kind),
            body.strip_prefix(r#"{"room":""#),
        ) {
            let room = rest.split_once('"').map(|(r, _)| r);
            assert_eq!(stored_room_id(&spliced), room.map(|r| (r, id)));
        }
    }
    prefix_readers(&spliced);

    // A chat message entry becomes exactly the `message` frame.
    let room: String = u.arbitrary()?;
    let from = Member {
        user_id: u.arbitrary()?,
        username: u.arbitrary()?,
    };
    let content: String = u.arbitrary()?;
    let ts: String = u.arbitrary()?;
    let entry = StoredEntry::message(&room, &from, &content, &ts);
    assert_eq!(entry.kind, EntryKind::Message);
    let frame = entry.frame(id);
    let v: Value = serde_json::from_str(&frame).expect("a message frame that is not JSON");
    assert_eq!(
        v,
        json!({"type":"message","id":id.to_string(),"room":room,"user_id":from.user_id,
               "username":from.username,"content":content,"ts":ts})
    );
    match serde_json::from_str::<ServerFrame>(&frame) {
        Ok(ServerFrame::Message { id: i, room: r, .. }) => {
            assert_eq!(i, id.to_string());
            assert_eq!(r, room);
        }
        other => panic!("not a message frame: {other:?}"),
    }
    stored_frame_reads_back(&frame, &room, id);

    // A back-end publish entry: `data` is any JSON the API accepted.
    let data_text: &str = u.arbitrary()?;
    let data = serde_json::from_str::<Value>(data_text).unwrap_or(Value::String(data_text.into()));
    let entry = StoredEntry::publish(&room, &data, &ts);
    assert_eq!(entry.kind, EntryKind::Publish);
    let frame = entry.frame(id);
    let v: Value = serde_json::from_str(&frame).expect("a publish frame that is not JSON");
    assert_eq!(
        v,
        json!({"type":"publish","id":id.to_string(),"room":room,"data":data,"ts":ts}),
        "{frame}"
    );
    stored_frame_reads_back(&frame, &room, id);

    // Every other frame: the type read off the prefix is the tag serde wrote.
    let reference = match u.int_in_range(0..=3u8)? {
        0 => None,
        1 => Some(Value::String(u.arbitrary()?)),
        2 => Some(json!(u.arbitrary::<i64>()?)),
        _ => Some(json!(u.arbitrary::<u64>()?)),
    };
    let code = *u.choose(&ErrorCode::ALL)?;
    let frames = [
        ServerFrame::Error {
            code,
            message: u.arbitrary()?,
            reference: reference.clone(),
        },
        ServerFrame::Pong {
            reference: reference.clone(),
        },
        ServerFrame::Ack {
            reference,
            room: Some(room.clone()),
            id: u.arbitrary()?,
        },
        ServerFrame::Presence {
            room: room.clone(),
            event: if u.arbitrary()? {
                PresenceEvent::Join
            } else {
                PresenceEvent::Leave
            },
            user: from.clone(),
            count: u.arbitrary()?,
        },
        ServerFrame::PresenceCount {
            room: room.clone(),
            count: u.arbitrary()?,
        },
        ServerFrame::Members {
            reference: None,
            room: room.clone(),
            members: vec![from.clone()],
            next_cursor: u.arbitrary()?,
            count: u.arbitrary()?,
        },
        ServerFrame::Direct {
            id: u.arbitrary()?,
            from,
            content,
            ts,
        },
        ServerFrame::Broadcast {
            data,
            ts: u.arbitrary()?,
        },
    ];
    for f in frames {
        let encoded = f.encode();
        let v: Value = serde_json::from_str(&encoded).expect("an encoded frame that is not JSON");
        let t = frame_type(&encoded).expect("an encoded frame without a type prefix");
        assert_eq!(v["type"], Value::String(t.to_owned()));
        if let Some(fid) = frame_id(&encoded) {
            // Never a misread: the id read off the prefix is the frame's id.
            assert_eq!(v["id"].as_str().and_then(|s| s.parse().ok()), Some(fid));
        }
        assert_eq!(stored_room_id(&encoded), None, "{encoded}");
        prefix_readers(&encoded);
    }
    Ok(())
}

/// The writer and SSE read a stored frame's room and id off its prefix: for a room the
/// protocol accepts they are the frame's own; for any other room, never a wrong id.
fn stored_frame_reads_back(frame: &str, room: &str, id: MessageId) {
    assert_eq!(frame_id(frame), Some(id));
    if names::valid_room(room) || plain(room) {
        assert_eq!(stored_room_id(frame), Some((room, id)));
    } else if let Some((_, i)) = stored_room_id(frame) {
        assert_eq!(i, id);
    }
    prefix_readers(frame);
}
