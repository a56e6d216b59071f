//! A session's token expiry: [`Expiry`] is shared by the session's reader (a `refresh`
//! moves it) and its writer, whose [`ExpiryTimer`] queues `refresh_needed` ahead of
//! it, once per token, and ends the session with 1008 at it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;
use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_protocol::server::ServerFrame;
use wsgate_protocol::CloseCode;

use crate::handle::Control;
use crate::queue::{Outbound, PushError, Queue};

/// Longest a timer is armed for: a token valid for centuries must not overflow it.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// When the session's token expires, and how early it is told so.
#[derive(Debug)]
pub struct Expiry {
    /// The token's `exp`, seconds since the Unix epoch.
    exp: AtomicU64,
    /// How long before `exp` the session gets `refresh_needed` (`--refresh-notice-s`);
    /// zero: never.
    notice: Duration,
    /// The writer's task, woken when `exp` moves (it re-arms its timer).
    writer: AtomicWaker,
    /// `wsgate_frames_out_total{type="refresh_needed"}`.
    notices: Counter,
}

impl Expiry {
    /// The expiry of a token valid until `at`.
    pub fn new(at: SystemTime, notice: Duration, notices: Counter) -> Arc<Self> {
        Arc::new(Expiry {
            exp: AtomicU64::new(seconds(at)),
            notice,
            writer: AtomicWaker::new(),
            notices,
        })
    }

    /// The current token's `exp`.
    pub fn exp(&self) -> u64 {
        self.exp.load(Ordering::Acquire)
    }

    /// Whether the current token has expired at `now`.
    pub fn has_passed(&self, now: SystemTime) -> bool {
        now >= at(self.exp())
    }

    /// The session holds a new token, valid until `at`: the writer re-arms its timer
    /// (the next `refresh_needed` is this token's).
    pub fn set(&self, at: SystemTime) {
        self.exp.store(seconds(at), Ordering::Release);
        self.writer.wake();
    }
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn at(exp: u64) -> SystemTime {
    // Tokens are refused at the handshake when their `exp` is past what the clock
    // holds; a year on stands in for it all the same.
    UNIX_EPOCH
        .checked_add(Duration::from_secs(exp))
        .unwrap_or_else(|| SystemTime::now() + MAX_WAIT)
}

/// What an [`ExpiryTimer`] says is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The token expiring at this `exp` is within the notice: send `refresh_needed`.
    Notice(u64),
    /// The token has expired: close with 1008.
    Expired,
}

/// The writer's view of an [`Expiry`]: one timer, armed for the notice and then for
/// the expiry of whichever token the session holds.
#[derive(Debug)]
pub struct ExpiryTimer {
    /// What the reader moves.
    shared: Arc<Expiry>,
    /// The `exp` the timer is armed for.
    armed: u64,
    /// The `exp` whose notice went out (each token gets one).
    noticed: Option<u64>,
    /// Armed once and reset: a fresh sleep per loop turn would register a timer on
    /// every burst.
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl ExpiryTimer {
    /// A timer over `shared`, armed for its next due time.
    pub fn new(shared: Arc<Expiry>) -> Self {
        let armed = shared.exp();
        let mut timer = ExpiryTimer {
            shared,
            armed,
            noticed: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        timer.arm(Duration::ZERO);
        timer
    }

    /// Whether the armed token's notice is still to be sent.
    fn notice_pending(&self) -> bool {
        !self.shared.notice.is_zero() && self.noticed != Some(self.armed)
    }

    /// Arms the sleep for the next due time (the notice, else the expiry), at least
    /// `least` from now.
    fn arm(&mut self, least: Duration) {
        let expires = at(self.armed);
        let due = if self.notice_pending() {
            expires
                .checked_sub(self.shared.notice)
                .unwrap_or(UNIX_EPOCH)
        } else {
            expires
        };
        let left = due
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .clamp(least, MAX_WAIT);
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + left);
    }

    /// Ready with what is due; once expired, it stays so.
    pub fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<Due> {
        self.shared.writer.register(cx.waker());
        loop {
            let exp = self.shared.exp();
            if exp != self.armed {
                self.armed = exp;
                self.arm(Duration::ZERO);
            }
            if self.sleep.as_mut().poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            let now = SystemTime::now();
            let expires = at(self.armed);
            if now >= expires {
                return Poll::Ready(Due::Expired);
            }
            if self.notice_pending() && now + self.shared.notice >= expires {
                self.noticed = Some(self.armed);
                self.arm(Duration::ZERO);
                return Poll::Ready(Due::Notice(self.armed));
            }
            // Woken a little early (the timer's clock is not the wall clock): again,
            // at least a millisecond on, so that this cannot spin.
            self.arm(Duration::from_millis(1));
        }
    }
}

/// What is due next, when the session has a token (never, without one).
pub async fn due(timer: &mut Option<Box<ExpiryTimer>>) -> Due {
    match timer {
        Some(t) => std::future::poll_fn(|cx| t.poll_due(cx)).await,
        None => std::future::pending().await,
    }
}

/// Queues `refresh_needed` for the token expiring at `exp`, as any answer of the
/// session is queued: a full queue closes the session as a slow consumer.
pub fn queue_notice(expiry: &Expiry, queue: &Queue, control: &Control, exp: u64) {
    let frame = ServerFrame::RefreshNeeded { exp }.encode();
    match queue.push(Outbound::Frame(Utf8Bytes::from(frame))) {
        Ok(()) => {
            expiry.notices.inc();
        }
        Err(PushError::Full(_)) => control.close(CloseCode::TryAgainLater),
        Err(PushError::Closed(_)) => {}
    }
}

#[cfg(test)]
mod tests;
