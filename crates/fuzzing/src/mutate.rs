//! A small deterministic mutator for replaying fuzz corpora in ordinary test runs: the
//! kinds of change libFuzzer makes (bit flips, byte changes, insertions, deletions,
//! duplicated ranges, dictionary tokens, splices of two inputs), driven by a seeded
//! xorshift generator so that a failure is reproduced by its seed.

/// A seeded pseudo-random generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Parses a libFuzzer dictionary: one `"token"` per line (optionally `name="token"`),
/// with `\\`, `\"` and `\xNN` escapes; `#` lines are comments.
pub fn parse_dict(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (Some(start), Some(end)) = (line.find('"'), line.rfind('"')) else {
            continue;
        };
        if end <= start {
            continue;
        }
        let body = &line.as_bytes()[start + 1..end];
        let mut token = Vec::with_capacity(body.len());
        let mut i = 0;
        while i < body.len() {
            if body[i] == b'\\' && i + 1 < body.len() {
                match body[i + 1] {
                    b'x' if i + 3 < body.len() => {
                        let hex = std::str::from_utf8(&body[i + 2..i + 4]).unwrap_or("");
                        if let Ok(b) = u8::from_str_radix(hex, 16) {
                            token.push(b);
                            i += 4;
                            continue;
                        }
                        token.push(b'x');
                    }
                    other => token.push(other),
                }
                i += 2;
            } else {
                token.push(body[i]);
                i += 1;
            }
        }
        out.push(token);
    }
    out
}

/// Values that often sit on a boundary, as text.
const INTERESTING: [&str; 12] = [
    "0",
    "-1",
    "1",
    "100",
    "101",
    "65536",
    "4294967296",
    "18446744073709551616",
    "1e400",
    "-0.0",
    "9007199254740993",
    "\u{0}",
];

/// Applies one to four random mutations to `input`, taking tokens from `dict` and
/// splice material from `other`; the result is at most `max_len` bytes.
pub fn mutate(
    rng: &mut Rng,
    input: &[u8],
    dict: &[Vec<u8>],
    other: &[u8],
    max_len: usize,
) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                data.insert(i, rng.next_u64() as u8);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(8)).min(len);
                data.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                let copy = data[a..b].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, copy);
            }
            5 | 6 if !dict.is_empty() => {
                let token = &dict[rng.below(dict.len())];
                let at = rng.below(len + 1);
                if rng.below(2) == 0 || at == len {
                    data.splice(at..at, token.iter().copied());
                } else {
                    let end = (at + token.len()).min(len);
                    data.splice(at..end, token.iter().copied());
                }
            }
            7 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            8 => {
                let value = INTERESTING[rng.below(INTERESTING.len())].as_bytes();
                // Replace a run of digits, or insert.
                match data.iter().position(|b| b.is_ascii_digit()) {
                    Some(start) if rng.below(2) == 0 => {
                        let end = data[start..]
                            .iter()
                            .position(|b| !b.is_ascii_digit())
                            .map_or(data.len(), |n| start + n);
                        data.splice(start..end, value.iter().copied());
                    }
                    _ => {
                        let at = rng.below(len + 1);
                        data.splice(at..at, value.iter().copied());
                    }
                }
            }
            _ if len > 1 => {
                let keep = rng.below(len);
                data.truncate(keep);
            }
            _ => data.push(rng.next_u64() as u8),
        }
    }
    data.truncate(max_len);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_parse_with_escapes() {
        let d = parse_dict("# c\n\"{\"\nname=\"a\\\"b\"\n\"\\x00\\\\\"\n\n");
        assert_eq!(d, vec![b"{".to_vec(), b"a\"b".to_vec(), b"\0\\".to_vec()]);
    }

    #[test]
    fn mutation_is_deterministic_and_bounded() {
        let dict = parse_dict("\"tok\"");
        let a: Vec<Vec<u8>> = {
            let mut rng = Rng::new(7);
            (0..100)
                .map(|_| mutate(&mut rng, b"{\"a\":1}", &dict, b"xyz", 32))
                .collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut rng = Rng::new(7);
            (0..100)
                .map(|_| mutate(&mut rng, b"{\"a\":1}", &dict, b"xyz", 32))
                .collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|m| m.len() <= 32));
        assert!(a.iter().any(|m| m.as_slice() != b"{\"a\":1}"));
    }
}
