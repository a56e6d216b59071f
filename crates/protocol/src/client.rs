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
    /// Marks notifications read: the listed ids, or all of them.
    MarkRead {
        /// The ids; `None` means all.
        ids: Option<Vec<String>>,
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
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: ParseLimits = ParseLimits {
        max_content_bytes: 10,
    };

    fn ok(v: Value) -> ClientFrame {
        parse(&v.to_string(), &LIMITS).unwrap()
    }

    fn err(text: &str) -> FrameError {
        parse(text, &LIMITS).unwrap_err()
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(
            ok(json!({"type":"join","room":"a","since":"5-1","epoch":"e1","ref":7})),
            ClientFrame {
                reference: Some(json!(7)),
                command: Command::Join {
                    room: "a".into(),
                    since: Some(MessageId::new(5, 1)),
                    epoch: Some("e1".into())
                }
            }
        );
        assert_eq!(
            ok(json!({"type":"leave","room":"a"})).command,
            Command::Leave { room: "a".into() }
        );
        assert_eq!(
            ok(json!({"type":"message","room":"a","content":"hi"})).command,
            Command::Message {
                room: "a".into(),
                content: "hi".into()
            }
        );
        assert_eq!(
            ok(json!({"type":"typing","room":"a","is_typing":false})).command,
            Command::Typing {
                room: "a".into(),
                is_typing: false
            }
        );
        assert_eq!(
            ok(json!({"type":"direct","to":"bob","content":"yo","ref":"x"})),
            ClientFrame {
                reference: Some(json!("x")),
                command: Command::Direct {
                    to: "bob".into(),
                    content: "yo".into()
                }
            }
        );
        assert_eq!(
            ok(json!({"type":"history","room":"a"})).command,
            Command::History {
                room: "a".into(),
                before: None,
                limit: 50
            }
        );
        assert_eq!(
            ok(json!({"type":"history","room":"a","before":"9-0","limit":100})).command,
            Command::History {
                room: "a".into(),
                before: Some(MessageId::new(9, 0)),
                limit: 100
            }
        );
        assert_eq!(ok(json!({"type":"ping"})).command, Command::Ping);
        assert_eq!(
            ok(json!({"type":"notifications","unread_only":true,"limit":5})).command,
            Command::Notifications {
                limit: 5,
                before: None,
                unread_only: true
            }
        );
        assert_eq!(
            ok(json!({"type":"mark_read","ids":["a-1","b"]})).command,
            Command::MarkRead {
                ids: Some(vec!["a-1".into(), "b".into()])
            }
        );
        assert_eq!(
            ok(json!({"type":"mark_read","all":true})).command,
            Command::MarkRead { ids: None }
        );
        for bad in [
            json!({"type":"mark_read"}),
            json!({"type":"mark_read","ids":[]}),
            json!({"type":"mark_read","ids":[5]}),
            json!({"type":"mark_read","ids":["x"],"all":true}),
            json!({"type":"mark_read","all":"yes"}),
            json!({"type":"notifications","limit":0}),
            json!({"type":"notifications","before":"a b"}),
            json!({"type":"notifications","unread_only":1}),
        ] {
            assert_eq!(
                parse(&bad.to_string(), &LIMITS).unwrap_err().code,
                ErrorCode::InvalidField,
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_json() {
        for text in [
            "",
            "{",
            "nope",
            "[1]",
            "\"s\"",
            "3",
            "null",
            &"[".repeat(10_000),
        ] {
            assert_eq!(err(text).code, ErrorCode::BadJson, "{text:.20}");
        }
    }

    #[test]
    fn unknown_type() {
        for text in [r#"{}"#, r#"{"type":5}"#, r#"{"type":"nope","ref":1}"#] {
            assert_eq!(err(text).code, ErrorCode::UnknownType, "{text}");
        }
        assert_eq!(err(r#"{"type":"nope","ref":1}"#).reference, Some(json!(1)));
    }

    #[test]
    fn invalid_fields_carry_the_ref() {
        let cases = [
            json!({"type":"join"}),
            json!({"type":"join","room":""}),
            json!({"type":"join","room":5}),
            json!({"type":"join","room":"a b"}),
            json!({"type":"join","room":"a".repeat(129)}),
            json!({"type":"join","room":"a","since":"x"}),
            json!({"type":"join","room":"a","since":5}),
            json!({"type":"join","room":"a","epoch":"bad epoch"}),
            json!({"type":"join","room":"a","epoch":""}),
            json!({"type":"message","room":"a"}),
            json!({"type":"message","room":"a","content":""}),
            json!({"type":"message","room":"a","content":"12345678901"}),
            json!({"type":"message","room":"a","content":["x"]}),
            json!({"type":"typing","room":"a"}),
            json!({"type":"typing","room":"a","is_typing":"yes"}),
            json!({"type":"direct","content":"x"}),
            json!({"type":"direct","to":"","content":"x"}),
            json!({"type":"history","room":"a","limit":0}),
            json!({"type":"history","room":"a","limit":101}),
            json!({"type":"history","room":"a","limit":1.5}),
            json!({"type":"history","room":"a","before":"zz"}),
        ];
        for mut case in cases {
            case["ref"] = json!("r");
            let e = parse(&case.to_string(), &LIMITS).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidField, "{case}");
            assert_eq!(e.reference, Some(json!("r")), "{case}");
        }
        assert_eq!(
            err(r#"{"type":"ping","ref":{}}"#).code,
            ErrorCode::InvalidField
        );
    }

    #[test]
    fn content_limit_counts_utf8_bytes() {
        // 5 two-byte characters = 10 bytes: allowed; 6 = 12 bytes: refused.
        assert!(parse(
            &json!({"type":"message","room":"a","content":"ééééé"}).to_string(),
            &LIMITS
        )
        .is_ok());
        assert!(parse(
            &json!({"type":"message","room":"a","content":"éééééé"}).to_string(),
            &LIMITS
        )
        .is_err());
    }
}
