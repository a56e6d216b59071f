//! Server → client frames.
//!
//! Every frame is a JSON object whose first member is `type` (serde writes the tag of
//! an internally tagged enum first), so the type of an encoded frame can be read off
//! its first bytes with [`frame_type`] without parsing it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::ErrorCode;
use crate::id::MessageId;

/// A user as other users see them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Stable user id (the token's `sub`).
    pub user_id: String,
    /// Display name.
    pub username: String,
}

/// Presence change of a user in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceEvent {
    /// The user's first session joined the room.
    Join,
    /// The user's last session left the room.
    Leave,
}

/// How much presence a room shows (its namespace's `presence`, or `count` while a
/// `full` room is over `presence_max_members`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceMode {
    /// Member lists and `presence` join/leave events.
    #[default]
    Full,
    /// Only the number of distinct users, in `presence_count` frames.
    Count,
    /// Neither.
    Off,
}

impl PresenceMode {
    /// The wire and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceMode::Full => "full",
            PresenceMode::Count => "count",
            PresenceMode::Off => "off",
        }
    }
}

impl std::str::FromStr for PresenceMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(PresenceMode::Full),
            "count" => Ok(PresenceMode::Count),
            "off" => Ok(PresenceMode::Off),
            _ => Err(format!("`{s}` is not a presence mode (full, count, off)")),
        }
    }
}

/// One room of a `welcome`'s `restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRoom {
    /// The room.
    pub room: String,
    /// The last id delivered in it.
    pub last_id: Option<String>,
    /// The room's history epoch then.
    pub epoch: String,
}

/// `welcome.restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// Rooms the user was in.
    pub rooms: Vec<RestoreRoom>,
}

/// A stored notification, as clients and the HTTP API see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique id (a UUIDv7: ids sort by creation time).
    pub id: String,
    /// Whose it is.
    pub user_id: String,
    /// `info`, `success`, `warning` or `error`.
    pub kind: String,
    /// Short title.
    pub title: String,
    /// Text.
    pub body: String,
    /// Where a click leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_url: Option<String>,
    /// Arbitrary JSON for the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Creation time, RFC 3339 UTC.
    pub ts: String,
    /// Whether it was marked read.
    pub read: bool,
}

/// The kinds a notification may have.
pub const NOTIFICATION_KINDS: [&str; 4] = ["info", "success", "warning", "error"];

/// A frame the server sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(missing_docs)] // the fields are the contract's, documented in docs/protocol.md
pub enum ServerFrame {
    /// The first frame of every connection.
    Welcome {
        protocol: u32,
        session_id: String,
        node_id: String,
        user_id: String,
        username: String,
        heartbeat_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unread_notifications: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restore: Option<Restore>,
    },
    /// Answer to `join`, after any replayed messages.
    Joined {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        room: String,
        members: Vec<Member>,
        #[serde(default)]
        members_count: u64,
        #[serde(default)]
        members_more: bool,
        #[serde(default)]
        presence: PresenceMode,
        last_id: Option<String>,
        epoch: String,
        recovered: bool,
    },
    /// Answer to `leave`; or, unprompted, the session was taken out of the room
    /// (`reason`: `revoked`, a refreshed token no longer grants it).
    Left {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A chat message in a room.
    Message {
        id: String,
        room: String,
        user_id: String,
        username: String,
        content: String,
        ts: String,
    },
    /// A user's first session joined, or last session left, a room (`full` mode),
    /// with the room's distinct users after it.
    Presence {
        room: String,
        event: PresenceEvent,
        user: Member,
        #[serde(default)]
        count: u64,
    },
    /// The number of distinct users of a `count`-mode room changed (at most once per
    /// second per room).
    PresenceCount { room: String, count: u64 },
    /// Answer to `members`: one page of a room's distinct users.
    Members {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        room: String,
        members: Vec<Member>,
        next_cursor: Option<String>,
        count: u64,
    },
    /// Who is typing in a room now.
    Typing { room: String, users: Vec<Member> },
    /// A direct message.
    Direct {
        id: String,
        from: Member,
        content: String,
        ts: String,
    },
    /// Answer to `history`: messages oldest first.
    History {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        room: String,
        messages: Vec<Box<RawValue>>,
        #[serde(default)]
        more: bool,
    },
    /// Answer to `ping`.
    Pong {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
    },
    /// The message or direct was accepted under this id.
    Ack {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        id: String,
    },
    /// A back end published into a room (stored) or to a user (not stored).
    Publish {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        data: Value,
        ts: String,
    },
    /// A back end broadcast to every connection.
    Broadcast { data: Value, ts: String },
    /// A new notification for this user, with the user's unread count after it.
    Notification {
        notification: Notification,
        unread: u64,
    },
    /// Answer to `notifications`: newest first.
    Notifications {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        items: Vec<Notification>,
        unread: u64,
        #[serde(default)]
        more: bool,
    },
    /// Answer to `mark_read`: the ids that changed, and the unread count.
    MarkedRead {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        ids: Vec<String>,
        unread: u64,
    },
    /// Another session of this user marked notifications read.
    NotificationsRead { ids: Vec<String>, unread: u64 },
    /// (SSE) The stream's cursor for `room` could not be resumed exactly: what follows
    /// starts over from what history holds.
    Reset { room: String },
    /// The node's link to the broker had a gap it could not refill from `room`'s
    /// history (trimmed past it, or lost: `epoch` changed). Reload the room (`history`);
    /// live messages after `last_id` follow.
    Resync {
        room: String,
        epoch: String,
        last_id: Option<String>,
    },
    /// The node is going away: reconnect after `delay_ms` (a draw from a window, so a
    /// node's clients do not come back all at once), to `url` when one is given.
    Reconnect {
        delay_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        reason: String,
    },
    /// (SSE) The stream's token expired: the stream ends here (WebSocket sessions are
    /// closed with 1008 instead).
    Expired {},
    /// The session's token expires at `exp` (seconds since the Unix epoch): send
    /// `refresh` with a new one before then. Sent once per token.
    RefreshNeeded { exp: u64 },
    /// Answer to `refresh`: the session now holds the new token, which expires at `exp`.
    Refreshed {
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
        exp: u64,
    },
    /// A frame could not be served.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Value>,
    },
}

impl ServerFrame {
    /// Encodes the frame as the JSON text sent on the wire.
    pub fn encode(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(r#"{"type":"error","code":"bad_json","message":"encoding failed"}"#)
        })
    }
}

/// Which kind of stored entry a room's history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A chat `message` from a client.
    Message,
    /// A `publish` from a back end.
    Publish,
}

impl EntryKind {
    /// The `type` of the frame the entry becomes.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Message => "message",
            EntryKind::Publish => "publish",
        }
    }

    /// The kind named by a frame type.
    pub fn from_type(t: &str) -> Option<Self> {
        match t {
            "message" => Some(EntryKind::Message),
            "publish" => Some(EntryKind::Publish),
            _ => None,
        }
    }
}

/// A room message encoded once, without its id. The broker assigns the id and
/// splices it in ([`StoredEntry::frame`]); the result is the exact frame every
/// recipient gets and the exact text `history` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// `message` or `publish`.
    pub kind: EntryKind,
    /// The frame's other members as a JSON object text (`{"room":…,…}`), never empty.
    pub body: String,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    room: &'a str,
    user_id: &'a str,
    username: &'a str,
    content: &'a str,
    ts: &'a str,
}

#[derive(Serialize)]
struct PublishBody<'a> {
    room: &'a str,
    data: &'a Value,
    ts: &'a str,
}

impl StoredEntry {
    /// A chat message.
    pub fn message(room: &str, from: &Member, content: &str, ts: &str) -> Self {
        let body = MessageBody {
            room,
            user_id: &from.user_id,
            username: &from.username,
            content,
            ts,
        };
        StoredEntry {
            kind: EntryKind::Message,
            body: serde_json::to_string(&body).unwrap_or_default(),
        }
    }

    /// A back-end publish into a room.
    pub fn publish(room: &str, data: &Value, ts: &str) -> Self {
        StoredEntry {
            kind: EntryKind::Publish,
            body: serde_json::to_string(&PublishBody { room, data, ts }).unwrap_or_default(),
        }
    }

    /// The final frame with `id` spliced in: `{"type":K,"id":ID,<body members>}`.
    pub fn frame(&self, id: MessageId) -> String {
        splice(self.kind.as_str(), &id.to_string(), &self.body)
    }
}

/// The `history` answer: `{"type":"history","ref"?:R,"room":ROOM,"messages":[…]}` with
/// each stored frame spliced in as it is (no decoding, no re-encoding). Frames that are
/// not stored frames (no id) are skipped; `more` says the byte bound cut the page. Byte
/// for byte what [`ServerFrame::History`] encodes to for the same messages.
pub fn history_frame<'a>(
    reference: Option<&Value>,
    room: &str,
    frames: impl IntoIterator<Item = &'a str>,
    more: bool,
) -> String {
    let frames: Vec<&str> = frames
        .into_iter()
        .filter(|f| frame_id(f).is_some())
        .collect();
    let mut out = String::with_capacity(64 + frames.iter().map(|f| f.len() + 1).sum::<usize>());
    out.push_str(r#"{"type":"history","#);
    if let Some(r) = reference {
        out.push_str(r#""ref":"#);
        out.push_str(&r.to_string());
        out.push(',');
    }
    out.push_str(r#""room":"#);
    out.push_str(&Value::String(room.to_owned()).to_string());
    out.push_str(r#","messages":["#);
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(f);
    }
    out.push_str(if more {
        "],\"more\":true}"
    } else {
        "],\"more\":false}"
    });
    out
}

/// `{"type":KIND,"id":ID,` followed by `body` without its opening brace. This is the
/// one definition of a stored frame's shape; the Redis script builds the same bytes.
pub fn splice(kind: &str, id: &str, body: &str) -> String {
    let rest = body.strip_prefix('{').unwrap_or(body);
    let mut out = String::with_capacity(rest.len() + kind.len() + id.len() + 24);
    out.push_str(r#"{"type":""#);
    out.push_str(kind);
    out.push_str(r#"","id":""#);
    out.push_str(id);
    out.push_str(r#"","#);
    out.push_str(rest);
    out
}

/// The `type` of an encoded frame, read off its prefix without parsing.
pub fn frame_type(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix(r#"{"type":""#)?;
    rest.split_once('"').map(|(t, _)| t)
}

/// The id of a stored frame (`{"type":"message","id":"…",…}`), read off its prefix.
pub fn frame_id(frame: &str) -> Option<MessageId> {
    let t = frame_type(frame)?;
    let rest = frame.get(r#"{"type":""#.len() + t.len()..)?;
    let rest = rest.strip_prefix(r#"","id":""#)?;
    rest.split_once('"')?.0.parse().ok()
}

/// Where a stored frame's room name lies in it (a byte range) and its id: what
/// [`stored_room_id`] reads, as offsets, so it can travel with the frame.
pub fn stored_at(frame: &str) -> Option<(std::ops::Range<usize>, MessageId)> {
    let (room, id) = stored_room_id(frame)?;
    let start = room.as_ptr() as usize - frame.as_ptr() as usize;
    Some((start..start + room.len(), id))
}

/// The room and id of a stored frame (`message` or `publish` into a room), read off
/// its prefix: `{"type":K,"id":ID,"room":R,…}` as [`splice`] builds it.
pub fn stored_room_id(frame: &str) -> Option<(&str, MessageId)> {
    let t = frame_type(frame)?;
    if t != "message" && t != "publish" {
        return None;
    }
    let rest = frame.get(r#"{"type":""#.len() + t.len()..)?;
    let rest = rest.strip_prefix(r#"","id":""#)?;
    let (id, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(r#","room":""#)?;
    let (room, _) = rest.split_once('"')?;
    Some((room, id.parse().ok()?))
}

#[cfg(test)]
mod tests;
