//! Client → server frames: one JSON object per text frame, parsed once into a
//! typed [`Command`] with every rule of the contract checked.

use serde_json::{Map, Value};

use crate::error::{ErrorCode, FrameError};
use crate::id::MessageId;
use crate::names;

/// Largest `limit` of a `history` request.
pub const MAX_HISTORY_LIMIT: usize = 100;
/// `limit` of a `history` request that gives none.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// Largest `limit` of a `members` request.
pub const MAX_MEMBERS_LIMIT: usize = 1000;
/// `limit` of a `members` request that gives none.
pub const DEFAULT_MEMBERS_LIMIT: usize = 100;
/// Longest `cursor` of a `members` request (cursors are opaque and made by the server).
pub const MAX_CURSOR_LEN: usize = 200;
/// Longest `token` of a `refresh`, in bytes: more than any real JWT (an RS256 token
/// with a long `rooms` claim is a few KiB), as an HTTP request line would bound the
/// token of a handshake.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Limits that depend on the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Largest `content`, in UTF-8 bytes.
    pub max_content_bytes: usize,
}

/// One parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// The client's `ref` (a string or a number), echoed by the answer.
    pub reference: Option<Value>,
    /// What the client asks for.
    pub command: Command,
}

/// What a client frame asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Join a room, optionally recovering what was missed after `since`.
    Join {
        /// The room.
        room: String,
        /// The last id the client saw in the room (`0-0` for none).
        since: Option<MessageId>,
        /// The history epoch the client was given by its previous `joined`.
        epoch: Option<String>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
    /// Send a chat message to a joined room.
    Message {
        /// The room.
        room: String,
        /// The text, at most the configured size.
        content: String,
    },
    /// Start or stop typing in a joined room.
    Typing {
        /// The room.
        room: String,
        /// Whether the user is typing.
        is_typing: bool,
    },
    /// A direct message to every session of one user.
    Direct {
        /// The recipient's user id.
        to: String,
        /// The text, at most the configured size.
        content: String,
    },
    /// A page of a room's history, oldest first.
    History {
        /// The room.
        room: String,
        /// Only messages with ids strictly before this one.
        before: Option<MessageId>,
        /// How many messages at most (1–100).
        limit: usize,
    },
    /// Application-level ping for clients that cannot send protocol pings.
    Ping,
    /// A page of the user's stored notifications, newest first.
    Notifications {
        /// How many at most (1–100).
        limit: usize,
        /// Only notifications older than this notification id.
        before: Option<String>,
        /// Only unread ones.
        unread_only: bool,
    },
    /// A page of a room's distinct users.
    Members {
        /// The room.
        room: String,
        /// Where the previous page ended (`next_cursor`); `None` for the first page.
        cursor: Option<String>,
        /// How many users at most (1–1000).
        limit: usize,
    },
    /// Marks notifications read: the listed ids, or all of them.
    MarkRead {
        /// The ids; `None` means all.
        ids: Option<Vec<String>>,
    },
    /// Replaces the session's token without reconnecting.
    Refresh {
        /// The new token (1 to [`MAX_TOKEN_BYTES`] bytes; verified by the gateway).
        token: String,
    },
}

/// Most ids one `mark_read` may list.
pub const MAX_MARK_READ_IDS: usize = 1000;

impl Command {
    /// The frame's `type`, as the client spelled it.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Join { .. } => "join",
            Command::Leave { .. } => "leave",
            Command::Message { .. } => "message",
            Command::Typing { .. } => "typing",
            Command::Direct { .. } => "direct",
            Command::History { .. } => "history",
            Command::Ping => "ping",
            Command::Notifications { .. } => "notifications",
            Command::MarkRead { .. } => "mark_read",
            Command::Members { .. } => "members",
            Command::Refresh { .. } => "refresh",
        }
    }
}

/// Parses one client text frame.
///
/// # Errors
///
/// A [`FrameError`] with the contract's code (`bad_json`, `unknown_type`,
/// `invalid_field`) and, when the frame had a usable one, its `ref`.
pub fn parse(text: &str, limits: &ParseLimits) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        FrameError::new(ErrorCode::BadJson, format!("not valid JSON: {}", short(&e)))
    })?;
    let Value::Object(obj) = value else {
        return Err(FrameError::new(
            ErrorCode::BadJson,
            "a frame must be a JSON object",
        ));
    };
    let reference = match obj.get("ref") {
        None | Some(Value::Null) => None,
        Some(r @ (Value::String(_) | Value::Number(_))) => Some(r.clone()),
        Some(_) => return Err(FrameError::invalid("ref must be a string or a number")),
    };
    let command = command(&obj, limits).map_err(|e| e.with_ref(reference.clone()))?;
    Ok(ClientFrame { reference, command })
}

fn short(e: &serde_json::Error) -> String {
    // serde_json's messages are short and never echo the input.
    e.to_string()
}

fn command(obj: &Map<String, Value>, limits: &ParseLimits) -> Result<Command, FrameError> {
    let kind = match obj.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                "type must be a string",
            ))
        }
        None => return Err(FrameError::new(ErrorCode::UnknownType, "type is missing")),
    };
    Ok(match kind {
        "join" => Command::Join {
            room: room(obj)?,
            since: opt_id(obj, "since")?,
            epoch: match opt_str(obj, "epoch")? {
                Some(e) if names::valid_epoch(e) => Some(e.to_owned()),
                Some(_) => {
                    return Err(FrameError::invalid(
                        "epoch must be 1-32 characters of [A-Za-z0-9_-]",
                    ))
                }
                None => None,
            },
        },
        "leave" => Command::Leave { room: room(obj)? },
        "message" => Command::Message {
            room: room(obj)?,
            content: content(obj, limits)?,
        },
        "typing" => Command::Typing {
            room: room(obj)?,
            is_typing: match obj.get("is_typing") {
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(FrameError::invalid("is_typing must be a boolean")),
                None => return Err(FrameError::invalid("is_typing is missing")),
            },
        },
        "direct" => Command::Direct {
            to: {
                let to = req_str(obj, "to")?;
                if !names::valid_user_id(to) {
                    return Err(FrameError::invalid("to must be a user id of 1-128 bytes"));
                }
                to.to_owned()
            },
            content: content(obj, limits)?,
        },
        "history" => Command::History {
            room: room(obj)?,
            before: opt_id(obj, "before")?,
            limit: limit(obj)?,
        },
        "ping" => Command::Ping,
        "members" => Command::Members {
            room: room(obj)?,
            cursor: match opt_str(obj, "cursor")? {
                Some(c) if !c.is_empty() && c.len() <= MAX_CURSOR_LEN && c.is_ascii() => {
                    Some(c.to_owned())
                }
                Some(_) => return Err(FrameError::invalid("cursor must be a next_cursor")),
                None => None,
            },
            limit: match obj.get("limit") {
                None | Some(Value::Null) => DEFAULT_MEMBERS_LIMIT,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(l) if (1..=MAX_MEMBERS_LIMIT as u64).contains(&l) => l as usize,
                    _ => {
                        return Err(FrameError::invalid(
                            "limit must be an integer from 1 to 1000",
                        ))
                    }
                },
                Some(_) => {
                    return Err(FrameError::invalid(
                        "limit must be an integer from 1 to 1000",
                    ))
                }
            },
        },
        "notifications" => Command::Notifications {
            limit: limit(obj)?,
            before: match opt_str(obj, "before")? {
                Some(b) if valid_notification_id(b) => Some(b.to_owned()),
                Some(_) => return Err(FrameError::invalid("before must be a notification id")),
                None => None,
            },
            unread_only: match obj.get("unread_only") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(FrameError::invalid("unread_only must be a boolean")),
            },
        },
        "mark_read" => Command::MarkRead {
            ids: match (obj.get("ids"), obj.get("all")) {
                (Some(Value::Array(ids)), None | Some(Value::Null) | Some(Value::Bool(false))) => {
                    if ids.is_empty() || ids.len() > MAX_MARK_READ_IDS {
                        return Err(FrameError::invalid(
                            "ids must list 1 to 1000 notification ids",
                        ));
                    }
                    let mut out = Vec::with_capacity(ids.len());
                    for id in ids {
                        match id {
                            Value::String(s) if valid_notification_id(s) => out.push(s.clone()),
                            _ => return Err(FrameError::invalid("ids must be notification ids")),
                        }
                    }
                    Some(out)
                }
                (None | Some(Value::Null), Some(Value::Bool(true))) => None,
                _ => return Err(FrameError::invalid("give either ids:[…] or all:true")),
            },
        },
        "refresh" => Command::Refresh {
            token: match req_str(obj, "token")? {
                "" => return Err(FrameError::invalid("token is empty")),
                t if t.len() > MAX_TOKEN_BYTES => {
                    return Err(FrameError::invalid(format!(
                        "token is longer than {MAX_TOKEN_BYTES} bytes"
                    )))
                }
                t => t.to_owned(),
            },
        },
        _ => return Err(FrameError::new(ErrorCode::UnknownType, "unknown type")),
    })
}

/// A notification id: 1–64 characters of `[A-Za-z0-9-]` (the server makes UUIDs).
pub fn valid_notification_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `limit` of `history` and `notifications`: 1–100, default 50.
fn limit(obj: &Map<String, Value>) -> Result<usize, FrameError> {
    match obj.get("limit") {
        None | Some(Value::Null) => Ok(DEFAULT_HISTORY_LIMIT),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(l) if (1..=MAX_HISTORY_LIMIT as u64).contains(&l) => Ok(l as usize),
            _ => Err(FrameError::invalid(
                "limit must be an integer from 1 to 100",
            )),
        },
        Some(_) => Err(FrameError::invalid(
            "limit must be an integer from 1 to 100",
        )),
    }
}

fn req_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, FrameError> {
    match opt_str(obj, field)? {
        Some(s) => Ok(s),
        None => Err(FrameError::invalid(format!("{field} is missing"))),
    }
}

fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, FrameError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FrameError::invalid(format!("{field} must be a string"))),
    }
}

fn room(obj: &Map<String, Value>) -> Result<String, FrameError> {
    let room = req_str(obj, "room")?;
    if !names::valid_room(room) {
        return Err(FrameError::invalid(
            "room must be 1-128 characters of [A-Za-z0-9_.:-]",
        ));
    }
    Ok(room.to_owned())
}

fn content(obj: &Map<String, Value>, limits: &ParseLimits) -> Result<String, FrameError> {
    let content = req_str(obj, "content")?;
    if content.is_empty() {
        return Err(FrameError::invalid("content is empty"));
    }
    if content.len() > limits.max_content_bytes {
        return Err(FrameError::invalid(format!(
            "content is longer than {} bytes",
            limits.max_content_bytes
        )));
    }
    Ok(content.to_owned())
}

fn opt_id(obj: &Map<String, Value>, field: &str) -> Result<Option<MessageId>, FrameError> {
    match opt_str(obj, field)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            FrameError::invalid(format!(
                "{field} must be a message id like \"1700000000000-0\""
            ))
        }),
    }
}

#[cfg(test)]
mod tests;
