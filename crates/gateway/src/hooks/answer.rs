//! What a hook answers, parsed strictly: a JSON object with `allow` and only the
//! fields its hook defines. Anything else (an unknown or misspelled field, a field of
//! the wrong type, a duplicate, a refusal carrying grants, a user id or content the
//! gateway would refuse from a client) is a bad answer: the call failed, and the hook's
//! failure policy decides. A misspelled `rooms` or `content` must not silently change
//! what a user may do.
//!
//! | hook | allow | refuse |
//! |---|---|---|
//! | connect | `{"allow":true, "user_id"?, "username"?, "rooms"?}` | `{"allow":false, "code"?: "forbidden"\|"unauthorized", "message"?}` |
//! | join | `{"allow":true}` | `{"allow":false, "code"?: "forbidden", "message"?}` |
//! | publish | `{"allow":true, "content"?}` | `{"allow":false, "code"?: "forbidden", "message"?}` |

use serde::Deserialize;
use wsgate_protocol::names;

/// Largest answer body read.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;
/// Longest refusal message passed on to the client, in bytes (longer ones are cut).
pub const MAX_MESSAGE_BYTES: usize = 200;
/// Most private-room grants a connect answer may give.
pub const MAX_GRANTS: usize = 1000;
/// The message of a refusal that gave none.
const DEFAULT_MESSAGE: &str = "refused by the back end";

/// A parsed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Allowed, with what the hook adds.
    Allow(T),
    /// Refused.
    Refuse(Refusal),
}

/// A refusal as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `unauthorized` (a connect only: HTTP 401, "log in again") or `forbidden`.
    pub unauthorized: bool,
    /// The hook's message, sanitized and bounded.
    pub message: String,
}

/// What an allowing connect answer sets; what it leaves out comes from the token (or,
/// without one, `username` is the user id and no private room is granted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectGrant {
    /// The user id.
    pub user_id: Option<String>,
    /// The display name.
    pub username: Option<String>,
    /// Private rooms granted (entries as a token's `rooms` claim: a room, or a prefix
    /// ending with `*`); replaces the token's.
    pub rooms: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectBody {
    allow: bool,
    code: Option<String>,
    message: Option<String>,
    user_id: Option<String>,
    username: Option<String>,
    rooms: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    allow: bool,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    allow: bool,
    code: Option<String>,
    message: Option<String>,
    content: Option<String>,
}

/// A connect hook's answer. `need_user`: no token named the user, so an allowing
/// answer must.
///
/// # Errors
/// Why the answer is bad.
pub fn connect(body: &[u8], need_user: bool) -> Result<Answer<ConnectGrant>, String> {
    let a: ConnectBody = parse(body)?;
    let grants = a.user_id.is_some() || a.username.is_some() || a.rooms.is_some();
    if !a.allow {
        if grants {
            return Err("a refusal carries no user_id, username or rooms".into());
        }
        return refusal(a.code, a.message, true).map(Answer::Refuse);
    }
    no_refusal_fields(&a.code, &a.message)?;
    match &a.user_id {
        Some(u) if !names::valid_user_id(u) => {
            return Err("user_id must be 1-128 bytes without control characters".into())
        }
        None if need_user => {
            return Err("user_id is required: no token names the user".into());
        }
        _ => {}
    }
    if a.username
        .as_deref()
        .is_some_and(|n| !names::valid_username(n))
    {
        return Err("username must be at most 128 bytes without control characters".into());
    }
    if let Some(rooms) = &a.rooms {
        if rooms.len() > MAX_GRANTS {
            return Err(format!("rooms holds more than {MAX_GRANTS} grants"));
        }
        if let Some(bad) = rooms.iter().find(|g| !valid_grant(g)) {
            return Err(format!(
                "rooms entry {:?} is not a room name or a prefix ending with *",
                bad.chars().take(64).collect::<String>()
            ));
        }
    }
    Ok(Answer::Allow(ConnectGrant {
        user_id: a.user_id,
        username: a.username.filter(|n| !n.is_empty()),
        rooms: a.rooms,
    }))
}

/// A join hook's answer.
///
/// # Errors
/// Why the answer is bad.
pub fn join(body: &[u8]) -> Result<Answer<()>, String> {
    let a: JoinBody = parse(body)?;
    if !a.allow {
        return refusal(a.code, a.message, false).map(Answer::Refuse);
    }
    no_refusal_fields(&a.code, &a.message)?;
    Ok(Answer::Allow(()))
}

/// A publish hook's answer: allowed with the content to store instead, if any, which
/// must pass the rules of a client's content (not empty, at most `max_content` bytes).
///
/// # Errors
/// Why the answer is bad.
pub fn publish(body: &[u8], max_content: usize) -> Result<Answer<Option<String>>, String> {
    let a: PublishBody = parse(body)?;
    if !a.allow {
        if a.content.is_some() {
            return Err("a refusal carries no content".into());
        }
        return refusal(a.code, a.message, false).map(Answer::Refuse);
    }
    no_refusal_fields(&a.code, &a.message)?;
    match &a.content {
        Some(c) if c.is_empty() => Err("content is empty".into()),
        Some(c) if c.len() > max_content => Err(format!(
            "content is longer than {max_content} bytes (--max-message-bytes)"
        )),
        _ => Ok(Answer::Allow(a.content)),
    }
}

/// `message` as a client may be shown it: control and invisible formatting characters
/// replaced by spaces, trimmed, at most [`MAX_MESSAGE_BYTES`] (cut on a character
/// boundary), a default when nothing is left.
pub fn sanitize(message: &str) -> String {
    let cleaned: String = message
        .chars()
        .map(|c| if invisible(c) { ' ' } else { c })
        .collect();
    let mut out = cleaned.trim();
    if out.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out = out[..end].trim_end();
    }
    if out.is_empty() {
        DEFAULT_MESSAGE.to_owned()
    } else {
        out.to_owned()
    }
}

/// Control characters, and the formatting ones that hide or reorder text (zero-width,
/// bidirectional overrides and isolates, the byte order mark).
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A grant: a room name, or a prefix of one followed by `*`.
fn valid_grant(g: &str) -> bool {
    names::valid_room(g.strip_suffix('*').unwrap_or(g))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("not a valid answer: {e}"))
}

fn no_refusal_fields(code: &Option<String>, message: &Option<String>) -> Result<(), String> {
    if code.is_some() || message.is_some() {
        return Err("code and message go with \"allow\": false".into());
    }
    Ok(())
}

fn refusal(
    code: Option<String>,
    message: Option<String>,
    connect: bool,
) -> Result<Refusal, String> {
    let unauthorized = match code.as_deref() {
        None | Some("forbidden") => false,
        Some("unauthorized") if connect => true,
        Some(_) if connect => return Err("code must be \"forbidden\" or \"unauthorized\"".into()),
        Some(_) => return Err("code must be \"forbidden\"".into()),
    };
    Ok(Refusal {
        unauthorized,
        message: sanitize(message.as_deref().unwrap_or("")),
    })
}

#[cfg(test)]
mod tests;
