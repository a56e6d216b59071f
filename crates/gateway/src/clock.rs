//! Time as the protocol writes it.

use std::time::SystemTime;

/// The current time as RFC 3339 UTC with milliseconds (`ts` of every frame).
pub fn now_ts() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
