//! Admission control: at most `--accept-rate` new sessions (WebSocket and SSE
//! handshakes) in any one-second window on this node (a sliding window over the
//! last `rate` admissions: exact, and a quiet node takes a burst of up to `rate`). Beyond it a handshake gets 503 with a
//! `Retry-After` drawn at random from a range that grows with how far demand exceeds
//! the rate, so a reconnection storm is spread over the next seconds instead of being
//! refused in lockstep, and every client gets in eventually.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Response, StatusCode};
use rand::Rng;

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
    /// When the last `rate` sessions were admitted, oldest first.
    admitted: VecDeque<Instant>,
    /// Refusals in the current one-second window, and when it began: how far demand
    /// exceeds the rate.
    refused: u64,
    window: Instant,
}

impl Admission {
    /// `rate` new sessions in any one second (0: unlimited).
    pub fn new(rate: u32) -> Self {
        let now = Instant::now();
        let state = (rate > 0).then(|| {
            Mutex::new(State {
                // Grows to at most `rate` entries (the flag is bounded); nothing up front.
                admitted: VecDeque::new(),
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
        let second = Duration::from_secs(1);
        while st
            .admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= second)
        {
            st.admitted.pop_front();
        }
        if st.admitted.len() < self.rate as usize {
            st.admitted.push_back(now);
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
    fn admits_the_rate_in_any_second_and_spreads_the_rest() {
        let a = Admission::new(100);
        let t0 = Instant::now();
        let first: Vec<_> = (0..1000).map(|_| a.admit(t0)).collect();
        assert_eq!(
            first.iter().filter(|r| r.is_ok()).count(),
            100,
            "a burst of the rate"
        );
        let waits: Vec<u64> = first.iter().filter_map(|r| r.err()).collect();
        assert!(
            waits.iter().all(|w| (1..=9).contains(w)),
            "900 over 100/s: ≤ 9 s"
        );
        assert!(waits.iter().any(|w| *w >= 5), "spread, not all at 1 s");
        assert!(waits.iter().all(|w| *w <= MAX_RETRY_S));
        // Within that second nothing more; then steady demand gets the rate.
        assert!(a.admit(t0 + Duration::from_millis(999)).is_err());
        let mut admitted = Vec::new();
        for ms in 1000..3000 {
            let now = t0 + Duration::from_millis(ms);
            for _ in 0..5 {
                if a.admit(now).is_ok() {
                    admitted.push(ms);
                }
            }
        }
        // No one-second window holds more than the rate.
        for (i, start) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|t| **t < start + 1000)
                .count();
            assert!(
                within <= 100,
                "{within} admitted in the second from {start} ms"
            );
        }
        assert_eq!(admitted.len(), 200);
    }
}
