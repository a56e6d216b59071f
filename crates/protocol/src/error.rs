//! Error codes carried by `error` frames (and by HTTP error bodies).

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame. A bad frame never closes the connection: the
/// server answers with one of these and carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a JSON object.
    BadJson,
    /// `type` missing or unknown.
    UnknownType,
    /// A field missing, of the wrong type, empty or too long.
    InvalidField,
    /// `message`/`typing` to a room the session has not joined.
    NotMember,
    /// A private room not granted by the token.
    Forbidden,
    /// Over the per-connection room limit.
    TooManyRooms,
    /// Over the per-connection message rate.
    RateLimited,
    /// The broker is unreachable: the frame was not accepted; the client may retry.
    Unavailable,
    /// The room holds its namespace's `max_members` distinct users.
    RoomFull,
}

impl ErrorCode {
    /// Every code, for metrics that pre-register their label values.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidField,
        ErrorCode::NotMember,
        ErrorCode::Forbidden,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::RoomFull,
    ];

    /// The wire spelling of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::NotMember => "not_member",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RoomFull => "room_full",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client frame that cannot be served, with what the `error` frame needs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    /// The contract's error code.
    pub code: ErrorCode,
    /// A short human-readable reason; never echoes large input back.
    pub message: String,
    /// The client's `ref`, when the frame carried a usable one.
    pub reference: Option<serde_json::Value>,
}

impl FrameError {
    /// An error with no `ref` attached yet.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            reference: None,
        }
    }

    /// Shorthand for an `invalid_field` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        FrameError::new(ErrorCode::InvalidField, message)
    }

    /// Attaches the client's `ref` so the error answers the right request.
    pub fn with_ref(mut self, reference: Option<serde_json::Value>) -> Self {
        self.reference = reference;
        self
    }
}
