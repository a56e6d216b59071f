//! The envelope of a frame on a user channel that is not for one of the user's
//! sessions (`#skip:<session>\n<frame>`): `notifications_read` goes to every *other*
//! session of the user. Only the gateway's dispatcher reads it; clients never see it.

/// Wraps `frame` so that the session `session_id` skips it.
pub fn skip_envelope(session_id: &str, frame: &str) -> String {
    format!("#skip:{session_id}\n{frame}")
}

/// Splits a published payload into the session to skip (if any) and the frame.
pub fn open_envelope(payload: &[u8]) -> (Option<&str>, &[u8]) {
    if let Some(rest) = payload.strip_prefix(b"#skip:") {
        if let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            if let Ok(session) = std::str::from_utf8(&rest[..nl]) {
                return (Some(session), &rest[nl + 1..]);
            }
        }
    }
    (None, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let wrapped = skip_envelope("s-1", r#"{"type":"x"}"#);
        assert_eq!(
            open_envelope(wrapped.as_bytes()),
            (Some("s-1"), &br#"{"type":"x"}"#[..])
        );
        assert_eq!(open_envelope(b"{}"), (None, &b"{}"[..]));
        assert_eq!(
            open_envelope(b"#skip:no-newline"),
            (None, &b"#skip:no-newline"[..])
        );
    }
}
