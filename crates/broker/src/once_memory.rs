//! [`OnceKeys`]: the embedded broker's memory of idempotency keys (what a publish with
//! a key answered, for its retries within the key's lifetime).
//!
//! Bounded: keys expire in the order they were set (one lifetime per node), and past
//! [`MAX_KEYS`] the oldest is forgotten before its lifetime ends (a retry of it would
//! publish again). With 256-byte keys that is ~40 MiB at most; at the default 24 h
//! lifetime it holds every key of a back end publishing about one keyed message a
//! second. Past that, run on Redis, where keys live their whole lifetime.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wsgate_protocol::MessageId;

/// Most keys remembered at once.
pub const MAX_KEYS: usize = 100_000;

/// Idempotency keys and their answers.
#[derive(Default)]
pub struct OnceKeys {
    /// Key → the id its publish got (`None` for a publish that is not stored).
    answers: HashMap<Arc<str>, Option<MessageId>>,
    /// Keys in the order they were set, with when they expire (the same strings).
    order: VecDeque<(Instant, Arc<str>)>,
}

impl OnceKeys {
    /// The answer remembered for `key` (`Some(None)`: published, not stored).
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Option<MessageId>> {
        self.expire(now);
        self.answers.get(key).copied()
    }

    /// Remembers `key`'s answer for `ttl`.
    pub fn set(&mut self, key: &str, answer: Option<MessageId>, ttl: Duration, now: Instant) {
        self.expire(now);
        while self.order.len() >= MAX_KEYS {
            if let Some((_, old)) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
        if !self.answers.contains_key(key) {
            let key: Arc<str> = Arc::from(key);
            self.answers.insert(key.clone(), answer);
            self.order.push_back((now + ttl, key));
        }
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, key)) = self.order.pop_front() {
                self.answers.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_answer_until_they_expire() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut k = OnceKeys::default();
        assert_eq!(k.get("a", t0), None);
        k.set("a", Some(MessageId::new(5, 0)), ttl, t0);
        k.set("b", None, ttl, t0 + Duration::from_secs(5));
        assert_eq!(
            k.get("a", t0 + Duration::from_secs(9)),
            Some(Some(MessageId::new(5, 0)))
        );
        assert_eq!(k.get("b", t0 + Duration::from_secs(9)), Some(None));
        assert_eq!(k.get("a", t0 + Duration::from_secs(10)), None, "expired");
        assert_eq!(k.get("b", t0 + Duration::from_secs(14)), Some(None));
        assert_eq!(k.get("b", t0 + Duration::from_secs(15)), None);
        assert!(k.order.is_empty() && k.answers.is_empty());
    }
}
