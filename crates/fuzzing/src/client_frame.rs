//! Client text frames → `wsgate_protocol::client::parse`, exactly what a session does
//! with every text frame (the WebSocket layer guarantees UTF-8, so only UTF-8 is fed).
//!
//! Invariants: no panic; the result agrees with the contract (the fields of an `Ok`
//! are valid, an `Err` carries one of the three parse codes and a short message); a
//! larger content limit accepts everything a smaller one does; the answer the server
//! would send (`pong`/`error` with the `ref`) encodes to JSON that repeats the `ref`.

use serde_json::{Map, Value};
use wsgate_protocol::client::{
    parse, valid_notification_id, ClientFrame, Command, ParseLimits, MAX_CURSOR_LEN,
    MAX_HISTORY_LIMIT, MAX_MARK_READ_IDS, MAX_MEMBERS_LIMIT, MAX_TOKEN_BYTES,
};
use wsgate_protocol::names;
use wsgate_protocol::server::{frame_type, ServerFrame};
use wsgate_protocol::{ErrorCode, FrameError, MessageId};

/// A small limit (so the fuzzer reaches the size check) and the default one.
const SMALL: ParseLimits = ParseLimits {
    max_content_bytes: 16,
};
const DEFAULT: ParseLimits = ParseLimits {
    max_content_bytes: 65_536,
};

/// Checks one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let small = parse(text, &SMALL);
    let default = parse(text, &DEFAULT);
    // What serde_json alone makes of the text: the parser's first step.
    let json: Option<Map<String, Value>> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    };
    match (&small, &default) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the limit changed an accepted frame"),
        (Ok(_), Err(e)) => panic!("accepted under 16 bytes, refused under 64 KiB: {e:?}"),
        (Err(e), Ok(f)) => {
            // Only the content size may tell them apart.
            assert_eq!(e.code, ErrorCode::InvalidField, "{e:?}");
            assert!(
                matches!(f.command, Command::Message { .. } | Command::Direct { .. }),
                "{f:?}"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a.code, b.code),
    }
    for (result, limits) in [(small, SMALL), (default, DEFAULT)] {
        match result {
            Ok(frame) => accepted(&frame, json.as_ref(), &limits),
            Err(e) => refused(&e, json.as_ref()),
        }
    }
}

fn accepted(frame: &ClientFrame, json: Option<&Map<String, Value>>, limits: &ParseLimits) {
    let obj = json.expect("accepted a frame that is not a JSON object");
    assert_eq!(
        obj.get("type").and_then(Value::as_str),
        Some(frame.command.kind())
    );
    match obj.get("ref") {
        None | Some(Value::Null) => assert_eq!(frame.reference, None),
        Some(r) => assert_eq!(frame.reference.as_ref(), Some(r)),
    }
    match &frame.command {
        Command::Join { room, since, epoch } => {
            assert!(names::valid_room(room), "{room:?}");
            if let Some(id) = since {
                id_round_trips(*id);
            }
            if let Some(e) = epoch {
                assert!(names::valid_epoch(e), "{e:?}");
            }
        }
        Command::Leave { room } | Command::Typing { room, .. } => {
            assert!(names::valid_room(room), "{room:?}");
        }
        Command::Message { room, content } => {
            assert!(names::valid_room(room), "{room:?}");
            content_ok(content, limits);
        }
        Command::Direct { to, content } => {
            assert!(names::valid_user_id(to), "{to:?}");
            content_ok(content, limits);
        }
        Command::History {
            room,
            before,
            limit,
        } => {
            assert!(names::valid_room(room), "{room:?}");
            assert!((1..=MAX_HISTORY_LIMIT).contains(limit), "{limit}");
            if let Some(id) = before {
                id_round_trips(*id);
            }
        }
        Command::Ping => {}
        Command::Notifications { limit, before, .. } => {
            assert!((1..=MAX_HISTORY_LIMIT).contains(limit), "{limit}");
            if let Some(b) = before {
                assert!(valid_notification_id(b), "{b:?}");
            }
        }
        Command::Members {
            room,
            cursor,
            limit,
        } => {
            assert!(names::valid_room(room), "{room:?}");
            assert!((1..=MAX_MEMBERS_LIMIT).contains(limit), "{limit}");
            if let Some(c) = cursor {
                assert!(
                    !c.is_empty() && c.len() <= MAX_CURSOR_LEN && c.is_ascii(),
                    "{c:?}"
                );
            }
        }
        Command::Refresh { token } => {
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
        }
        Command::MarkRead { ids } => {
            if let Some(ids) = ids {
                assert!((1..=MAX_MARK_READ_IDS).contains(&ids.len()));
                assert!(ids.iter().all(|i| valid_notification_id(i)));
            }
        }
    }
    // The answer to a ping carries the ref back: the writer reads its type off the prefix.
    let pong = ServerFrame::Pong {
        reference: frame.reference.clone(),
    }
    .encode();
    assert_eq!(frame_type(&pong), Some("pong"));
    echoes_ref(&pong, frame.reference.as_ref());
}

fn refused(e: &FrameError, json: Option<&Map<String, Value>>) {
    assert!(
        matches!(
            e.code,
            ErrorCode::BadJson | ErrorCode::UnknownType | ErrorCode::InvalidField
        ),
        "parse gave a code only a session may give: {e:?}"
    );
    // `bad_json` exactly when the text is not one JSON object.
    assert_eq!(e.code == ErrorCode::BadJson, json.is_none(), "{e:?}");
    // The message never echoes the input back (a frame may be 64 KiB).
    assert!(
        e.message.len() <= 200,
        "long error message: {:?}",
        e.message
    );
    if let Some(r) = &e.reference {
        let obj = json.expect("a ref from a frame that is not an object");
        assert_eq!(obj.get("ref"), Some(r));
    }
    let frame = ServerFrame::Error {
        code: e.code,
        message: e.message.clone(),
        reference: e.reference.clone(),
    }
    .encode();
    assert_eq!(frame_type(&frame), Some("error"));
    let v: Value = serde_json::from_str(&frame).expect("an error frame that is not JSON");
    assert_eq!(v["code"], Value::String(e.code.as_str().to_owned()));
    echoes_ref(&frame, e.reference.as_ref());
}

fn content_ok(content: &str, limits: &ParseLimits) {
    assert!(!content.is_empty());
    assert!(
        content.len() <= limits.max_content_bytes,
        "content of {} bytes accepted",
        content.len()
    );
}

fn id_round_trips(id: MessageId) {
    assert_eq!(id.to_string().parse::<MessageId>(), Ok(id));
}

/// The encoded answer, read back as a client reads it, carries the same `ref`.
fn echoes_ref(encoded: &str, reference: Option<&Value>) {
    let v: Value = serde_json::from_str(encoded).expect("an answer that is not JSON");
    assert_eq!(
        v.get("ref"),
        reference,
        "the ref did not survive the answer: {encoded}"
    );
}
