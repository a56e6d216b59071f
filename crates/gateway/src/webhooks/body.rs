//! The body of a webhook POST (docs/http-api.md, "Webhooks"): the batch's time and
//! its events, oldest first, each with the id a back end de-duplicates on.
//!
//! ```json
//! {"time_ms":1767225600123,"events":[
//!   {"id":"1767225600100-0","name":"member_added","time_ms":1767225600100,"room":"lobby","user_id":"alice"}]}
//! ```

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use wsgate_broker::Taken;

/// The whole body.
#[derive(Serialize)]
struct Body<'a> {
    /// When the batch was made (ms since the Unix epoch).
    time_ms: u64,
    /// Its events, oldest first.
    events: Vec<Out<'a>>,
}

/// One event.
#[derive(Serialize)]
struct Out<'a> {
    /// Unique, and the same on every delivery of the event.
    id: &'a str,
    /// `room_occupied`, `room_vacated`, `member_added`, `member_removed`,
    /// `user_offline` or `client_message`.
    name: &'static str,
    /// When it happened (recorded), ms since the Unix epoch.
    time_ms: u64,
    /// Its room (all but `user_offline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    /// Its user (`member_*`, `user_offline`, `client_message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    /// `client_message`: the `message` frame as the room's members got it.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Box<RawValue>>,
}

/// The body of `batch` (sorted oldest first by the caller), made at `now_ms`.
pub(super) fn encode(batch: &[Taken], now_ms: u64) -> Bytes {
    let events = batch
        .iter()
        .map(|t| Out {
            id: &t.id,
            name: t.event.name.as_str(),
            time_ms: t.time_ms,
            room: t.event.room.as_deref(),
            user_id: t.event.user_id.as_deref(),
            message: t
                .event
                .message
                .as_ref()
                .and_then(|m| RawValue::from_string(m.clone()).ok()),
        })
        .collect();
    let body = Body {
        time_ms: now_ms,
        events,
    };
    serde_json::to_vec(&body).unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgate_broker::{Event, EventName};

    fn taken(id: &str, event: Event) -> Taken {
        Taken {
            id: id.into(),
            time_ms: 7,
            event,
            outbox: "o".into(),
            entry: id.into(),
        }
    }

    #[test]
    fn events_carry_only_their_fields() {
        let batch = [
            taken("1-0", Event::room(EventName::RoomOccupied, "lobby", None)),
            taken(
                "1-1",
                Event {
                    name: EventName::UserOffline,
                    room: None,
                    user_id: Some("al\"ice".into()),
                    message: None,
                },
            ),
            taken(
                "1-2",
                Event {
                    name: EventName::ClientMessage,
                    room: Some("support:1".into()),
                    user_id: Some("bob".into()),
                    message: Some(r#"{"type":"message","id":"5-0","content":"hi"}"#.into()),
                },
            ),
        ];
        let body = encode(&batch, 9);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"time_ms": 9, "events": [
                {"id": "1-0", "name": "room_occupied", "time_ms": 7, "room": "lobby"},
                {"id": "1-1", "name": "user_offline", "time_ms": 7, "user_id": "al\"ice"},
                {"id": "1-2", "name": "client_message", "time_ms": 7, "room": "support:1",
                 "user_id": "bob", "message": {"type": "message", "id": "5-0", "content": "hi"}},
            ]})
        );
    }
}
