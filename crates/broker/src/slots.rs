//! Redis Cluster hash slots: which of the 16,384 slots a key or a sharded channel
//! lives in (CRC16/XMODEM of its hash tag, the part between the first `{` and the next
//! `}`, or of the whole name), and for each slot a short tag that lands in it.
//!
//! The tags let a key that is not named after a room still live beside a room's keys:
//! the store epoch a room's scripts read is `P:store-epoch:{TAG}` with the tag of the
//! room's slot, so one script call touches one slot, and each slot (so each shard) has
//! its own store epoch, lost with that shard's data and with nothing else.

use std::sync::OnceLock;

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// CRC16/XMODEM (polynomial 0x1021, initial 0), what Redis Cluster hashes with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key or sharded channel name, by Redis Cluster's hash-tag rule.
pub fn slot(name: &str) -> u16 {
    let b = name.as_bytes();
    let hashed = match b.iter().position(|&c| c == b'{') {
        Some(open) => match b[open + 1..].iter().position(|&c| c == b'}') {
            Some(len) if len > 0 => &b[open + 1..open + 1 + len],
            _ => b,
        },
        None => b,
    };
    crc16(hashed) % SLOTS
}

/// A short tag (`[0-9a-z]`, 1–4 characters) whose slot is `slot`.
pub fn tag_for(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); usize::from(SLOTS)];
        let mut left = usize::from(SLOTS);
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut word = Vec::new();
        // Every string of 1, 2, 3, then 4 characters, in order, until each slot has one.
        'lengths: for len in 1..=4 {
            let mut digits = vec![0usize; len];
            loop {
                word.clear();
                word.extend(digits.iter().map(|&d| ALPHABET[d]));
                let s = usize::from(crc16(&word) % SLOTS);
                if tags[s].is_empty() {
                    tags[s] = String::from_utf8(word.clone()).unwrap_or_default();
                    left -= 1;
                    if left == 0 {
                        break 'lengths;
                    }
                }
                let mut i = len;
                loop {
                    if i == 0 {
                        continue 'lengths;
                    }
                    i -= 1;
                    digits[i] += 1;
                    if digits[i] < ALPHABET.len() {
                        break;
                    }
                    digits[i] = 0;
                }
            }
        }
        tags
    });
    &tags[usize::from(slot % SLOTS)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis() {
        // Values from Redis's CLUSTER KEYSLOT.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("a:{r}:x"), slot("b:{r}"));
        // An empty tag does not count: the whole name is hashed.
        assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }

    #[test]
    fn every_slot_has_a_tag() {
        for s in 0..SLOTS {
            let t = tag_for(s);
            assert!(!t.is_empty() && t.len() <= 4, "slot {s}: {t:?}");
            assert_eq!(slot(&format!("x:{{{t}}}:y")), s);
        }
    }
}
