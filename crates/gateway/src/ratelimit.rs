//! A per-connection token bucket.

use std::time::Instant;

/// Allows `rate` events per second on average with bursts of `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// Most tokens held at once.
    burst: f64,
    /// Tokens now (as of `last`).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t0);
        assert_eq!((0..25).filter(|_| b.try_take(t0)).count(), 20);
        // 0.5 s later: 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..25).filter(|_| b.try_take(t1)).count(), 5);
        // Never more than the burst, however long it rested.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.try_take(t2)).count(), 20);
    }
}
