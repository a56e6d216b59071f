//! Validation of names the protocol carries: rooms, user ids, epochs.

/// Longest room name, in characters.
pub const MAX_ROOM_LEN: usize = 128;
/// Longest user id or display name, in bytes.
pub const MAX_USER_LEN: usize = 128;
/// Longest history epoch, in characters.
pub const MAX_EPOCH_LEN: usize = 32;

/// A room name is 1–128 characters of `[A-Za-z0-9_.:-]` (so it can never hold the
/// `;` and `=` that SSE cursors use as separators).
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROOM_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A user id is 1–128 bytes with no control characters.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_LEN && !id.chars().any(char::is_control)
}

/// A display name is at most 128 bytes with no control characters (it may be empty).
pub fn valid_username(name: &str) -> bool {
    name.len() <= MAX_USER_LEN && !name.chars().any(char::is_control)
}

/// An epoch is 1–32 characters of `[A-Za-z0-9_-]`.
pub fn valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH_LEN
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms() {
        assert!(valid_room("lobby"));
        assert!(valid_room("team:eng.backend-1_x"));
        assert!(valid_room(&"a".repeat(128)));
        assert!(!valid_room(&"a".repeat(129)));
        assert!(!valid_room(""));
        assert!(!valid_room("a b"));
        assert!(!valid_room("a;b"));
        assert!(!valid_room("a=b"));
        assert!(!valid_room("é"));
    }

    #[test]
    fn users_and_epochs() {
        assert!(valid_user_id("auth0|123@x"));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id("a\nb"));
        assert!(valid_epoch("Ab_-9"));
        assert!(!valid_epoch(""));
        assert!(!valid_epoch(&"e".repeat(33)));
        assert!(!valid_epoch("a.b"));
    }
}
