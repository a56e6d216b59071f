//! Admission control: at most `--accept-rate` new sessions (WebSocket and SSE
//! handshakes) a second on this node. Beyond it a handshake gets 503 with a
//! `Retry-After` drawn at random from a range that grows with how far demand exceeds
//! the rate, so a reconnection storm is spread over the next seconds instead of being
//! refused in lockstep, and every client gets in eventually.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Response, StatusCode};
use rand::Rng;

use crate::ratelimit::TokenBucket;
use crate::response::{error_response, Body};

/// The longest `Retry-After` given, in seconds.
const MAX_RETRY_S: u64 = 30;

/// The node's admission state.
pub struct Admission {
    /// `None`: no limit.
    state: Option<Mutex<State>>,
    rate: u32,
}

struct State {
    bucket: TokenBucket,
    /// Refusals in the current one-second window, and when it began: how far demand
    /// exceeds the rate.
    refused: u64,
    window: Instant,
}

impl Admission {
    /// `rate` new sessions a second (0: unlimited), in bursts of a twentieth of it
    /// (at least one): no one-second window ever admits much more than `rate`.
    pub fn new(rate: u32) -> Self {
        let now = Instant::now();
        let state = (rate > 0).then(|| {
            let rate = f64::from(rate);
            Mutex::new(State {
                bucket: TokenBucket::new(rate, (rate / 20.0).max(1.0), now),
                refused: 0,
                window: now,
            })
        });
        Admission { state, rate }
    }

    /// Admits one new session, or says how many seconds the client should wait.
    pub fn admit(&self, now: Instant) -> Result<(), u64> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if st.bucket.try_take(now) {
            return Ok(());
        }
        if now.saturating_duration_since(st.window) >= Duration::from_secs(1) {
            st.window = now;
            st.refused = 0;
        }
        st.refused += 1;
        // Those refused this second come back over as many seconds as the rate needs
        // to admit them all, at random within that range.
        let spread = st
            .refused
            .div_ceil(u64::from(self.rate))
            .clamp(1, MAX_RETRY_S);
        Err(rand::rng().random_range(1..=spread.max(2)))
    }
}

/// The refusal: 503, `unavailable`, `Retry-After: secs`.
pub fn refusal(secs: u64) -> Response<Body> {
    let mut res = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "this node admits no more new connections this second; retry after the Retry-After delay",
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_admits_everything() {
        let a = Admission::new(0);
        let now = Instant::now();
        assert!((0..10_000).all(|_| a.admit(now).is_ok()));
    }

    #[test]
    fn admits_the_rate_and_spreads_the_rest() {
        let a = Admission::new(100);
        let t0 = Instant::now();
        // A burst of 5 (a twentieth), then one every 10 ms.
        let first: Vec<_> = (0..1000).map(|_| a.admit(t0)).collect();
        assert_eq!(first.iter().filter(|r| r.is_ok()).count(), 5);
        let waits: Vec<u64> = first.iter().filter_map(|r| r.err()).collect();
        assert!(
            waits.iter().all(|w| (1..=10).contains(w)),
            "995 over 100/s: ≤ 10 s"
        );
        assert!(waits.iter().any(|w| *w >= 5), "spread, not all at 1 s");
        // Over one second of steady demand, about the rate gets in.
        let mut admitted = 0;
        for ms in 1..=1000 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..5 {
                admitted += usize::from(a.admit(now).is_ok());
            }
        }
        assert!((99..=101).contains(&admitted), "{admitted}");
        assert!(waits.iter().all(|w| *w <= MAX_RETRY_S));
    }
}
