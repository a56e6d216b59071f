//! The send stamp carried in every bench message's `content`, and the cheap scan that
//! finds it again in a delivered frame without parsing the JSON.
//!
//! Content: `b:<run>:<publisher>:<seq>:<nanos>:` padded with `x` to the wanted size.
//! `nanos` counts from one process-wide [`Instant`], so latency is `now − nanos` in the
//! same process; `(publisher, seq)` numbers the messages of one run for loss, duplicate
//! and order checks; `run` tells a measured window from warm-up traffic (run 0).

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use memchr::memmem::Finder;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Fixes the process-wide time origin (call once, early).
pub(crate) fn init() {
    EPOCH.get_or_init(Instant::now);
}

/// Nanoseconds since the process-wide origin.
pub(crate) fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The `Instant` of a stamp value.
pub(crate) fn instant_of(ns: u64) -> Instant {
    *EPOCH.get_or_init(Instant::now) + std::time::Duration::from_nanos(ns)
}

/// Nanoseconds since the origin of an `Instant` (0 if before it).
pub(crate) fn ns_of(t: Instant) -> u64 {
    t.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_nanos() as u64
}

/// A command-line duration: seconds (`2.5`) or humantime (`10s`, `500ms`, `2m`).
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs >= 0.0 && secs.is_finite() => Ok(std::time::Duration::from_secs_f64(secs)),
        _ => humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 10s, 500ms, 2m)")),
    }
}

/// A decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Which run (0: warm-up, not measured).
    pub run: u32,
    /// Publisher index.
    pub publisher: u32,
    /// Sequence number of this publisher within the run, from 0.
    pub seq: u64,
    /// Send time, ns since the process origin.
    pub nanos: u64,
}

/// Writes the content of one message into `buf` (cleared first).
pub(crate) fn encode(buf: &mut String, s: Stamp, size: usize) {
    buf.clear();
    let _ = write!(buf, "b:{}:{}:{}:{}:", s.run, s.publisher, s.seq, s.nanos);
    while buf.len() < size {
        buf.push('x');
    }
}

/// Finds `"content":"b:` in a frame and decodes the stamp after it.
pub(crate) struct Scanner {
    finder: Finder<'static>,
}

const NEEDLE: &[u8] = b"\"content\":\"b:";

impl Scanner {
    /// A scanner.
    pub(crate) fn new() -> Self {
        Scanner {
            finder: Finder::new(NEEDLE),
        }
    }

    /// The stamp of a delivered frame, if it carries one.
    pub(crate) fn scan(&self, frame: &[u8]) -> Option<Stamp> {
        let at = self.finder.find(frame)? + NEEDLE.len();
        let mut rest = &frame[at..];
        let mut field = || -> Option<u64> {
            let mut v: u64 = 0;
            for (n, &b) in rest.iter().enumerate() {
                if b == b':' {
                    rest = &rest[n + 1..];
                    return if n == 0 { None } else { Some(v) };
                }
                if !b.is_ascii_digit() || n >= 20 {
                    return None;
                }
                v = v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            }
            None
        };
        let run = field()? as u32;
        let publisher = field()? as u32;
        let seq = field()?;
        let nanos = field()?;
        Some(Stamp {
            run,
            publisher,
            seq,
            nanos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_both_wire_formats() {
        let s = Stamp {
            run: 3,
            publisher: 7,
            seq: 123456,
            nanos: 987654321012,
        };
        let mut c = String::new();
        encode(&mut c, s, 100);
        assert_eq!(c.len(), 100);
        let ws = format!(
            r#"{{"type":"message","id":"1-0","room":"r","user_id":"u","username":"u","content":"{c}","ts":"x"}}"#
        );
        let sio = format!(r#"42["message",{{"room":"r","content":"{c}"}}]"#);
        let sc = Scanner::new();
        assert_eq!(sc.scan(ws.as_bytes()), Some(s));
        assert_eq!(sc.scan(sio.as_bytes()), Some(s));
        assert_eq!(sc.scan(br#"{"type":"presence"}"#), None);
        assert_eq!(sc.scan(br#"{"content":"b:1:2"}"#), None);
        let mut small = String::new();
        encode(&mut small, s, 4);
        assert_eq!(
            sc.scan(format!(r#""content":"{small}""#).as_bytes()),
            Some(s)
        );
    }
}
