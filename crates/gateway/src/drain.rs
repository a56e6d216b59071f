//! A storm-safe drain: a node that is shutting down closes its sessions one by one,
//! evenly over `--drain-spread-ms`, instead of all at once, and tells each where and
//! when to come back (`reconnect`, with a delay drawn from `--reconnect-window-ms`),
//! so the rest of the cluster sees the reconnections as a trickle, not a wave.

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_protocol::server::ServerFrame;

use crate::node::Node;
use crate::queue::Outbound;

/// However few the sessions, a drain closes at least this many a second.
const MIN_RATE: u32 = 100;

/// How long closing `n` sessions takes with a spread of `spread`: the spread, or less
/// when `n` is small (at least [`MIN_RATE`] closes a second).
pub fn window(n: usize, spread: Duration) -> Duration {
    let at_min_rate = Duration::from_secs(1) * u32::try_from(n).unwrap_or(u32::MAX) / MIN_RATE;
    spread.min(at_min_rate)
}

/// Closes every session of the node (WebSocket sessions and SSE streams), in random
/// order, evenly over the drain window; returns once the last one was told. Each
/// session gets its queued frames, then `reconnect`, then 1001.
pub async fn spread(node: &Arc<Node>) {
    let spread = node.config.drain_spread();
    let mut sessions = node.hub.sessions();
    if sessions.is_empty() || spread.is_zero() {
        return;
    }
    sessions.shuffle(&mut rand::rng());
    let window = window(sessions.len(), spread);
    let step = window / u32::try_from(sessions.len()).unwrap_or(u32::MAX);
    tracing::info!(
        sessions = sessions.len(),
        window_ms = window.as_millis() as u64,
        "draining: closing sessions one by one"
    );
    let reconnect_window = node.config.reconnect_window_ms;
    let started = Instant::now();
    for (i, session) in sessions.into_iter().enumerate() {
        let delay_ms = rand::rng().random_range(0..=reconnect_window);
        let hint = ServerFrame::Reconnect {
            delay_ms,
            url: node.config.reconnect_url.clone(),
            reason: "draining".into(),
        };
        // A full queue means a slow consumer, closed with 1013 by the offer itself.
        let _ = session.offer(Outbound::Frame(Utf8Bytes::from(hint.encode())));
        // Cancelled without a code: the writer sends what is queued, then 1001.
        session.control.token.cancel();
        // On schedule, but never faster than twice the pace: a drain task held back
        // by a busy machine catches up over the following closes instead of closing
        // everything it fell behind on at once (a herd the spread exists to avoid).
        let due = started + step * (i as u32 + 1);
        tokio::time::sleep_until(due.max(Instant::now() + step / 2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_sessions_drain_fast_many_drain_over_the_spread() {
        let spread = Duration::from_secs(5);
        assert_eq!(window(0, spread), Duration::ZERO);
        assert_eq!(window(10, spread), Duration::from_millis(100));
        assert_eq!(window(300, spread), Duration::from_secs(3));
        assert_eq!(window(3000, spread), spread);
        assert_eq!(window(3000, Duration::ZERO), Duration::ZERO);
    }
}
