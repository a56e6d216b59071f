//! Message ids: `ms-seq`, the shape of a Redis Stream id.

use std::fmt;
use std::str::FromStr;

/// A message id. Ids sort in publish order within a room: by milliseconds, then by
/// sequence within the same millisecond. `0-0` means "before everything".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MessageId {
    /// Milliseconds since the Unix epoch at publish time (never going backwards).
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

impl MessageId {
    /// The id before every real id.
    pub const ZERO: MessageId = MessageId { ms: 0, seq: 0 };

    /// A new id.
    pub const fn new(ms: u64, seq: u64) -> Self {
        MessageId { ms, seq }
    }

    /// The smallest id strictly greater than `self` within the same ordering.
    pub fn next(self) -> MessageId {
        match self.seq.checked_add(1) {
            Some(seq) => MessageId { ms: self.ms, seq },
            None => MessageId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The reason a string is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id (expected \"<ms>-<seq>\")")]
pub struct ParseIdError;

impl FromStr for MessageId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(ParseIdError)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(ParseIdError);
        }
        Ok(MessageId {
            ms: ms.parse().map_err(|_| ParseIdError)?,
            seq: seq.parse().map_err(|_| ParseIdError)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: MessageId = "1700000000000-12".parse().unwrap();
        assert_eq!(id, MessageId::new(1_700_000_000_000, 12));
        assert_eq!(id.to_string(), "1700000000000-12");
        assert_eq!("0-0".parse::<MessageId>().unwrap(), MessageId::ZERO);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            "1 -2",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn orders_by_ms_then_seq() {
        let a = MessageId::new(5, 9);
        let b = MessageId::new(6, 0);
        assert!(a < b);
        assert!(a < a.next());
        assert_eq!(MessageId::new(1, u64::MAX).next(), MessageId::new(2, 0));
    }
}
