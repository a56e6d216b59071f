//! What the rest of the node holds of a session: its send queue and its kill switch
//! ([`Control`]), the two together as [`SessionHandle`].

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wsgate_protocol::CloseCode;

use crate::queue::{Outbound, PushError, Queue, Wakes};

/// The close code recorded when a connection ends without a close frame.
pub const ABNORMAL: u16 = 1006;

/// Why and how a session ends; shared by its reader, its writer and the hub.
#[derive(Debug)]
pub struct Control {
    /// Cancelled when the session must end (a child of the node's root token, so
    /// shutdown cancels every session).
    pub token: CancellationToken,
    /// The close code chosen by whoever ended the session first; 0 while none was.
    code: AtomicU16,
}

impl Control {
    /// A control under `token`.
    pub fn new(token: CancellationToken) -> Self {
        Control {
            token,
            code: AtomicU16::new(0),
        }
    }

    /// Ends the session with `code`, unless another code was chosen first.
    pub fn close(&self, code: CloseCode) {
        let _ = self
            .code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Ends the session without a close frame: the peer vanished (recorded as 1006).
    pub fn vanish(&self) {
        let _ = self
            .code
            .compare_exchange(0, ABNORMAL, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// The chosen close code: `None` when the session ended because the node is
    /// shutting down (1001) rather than by an explicit choice.
    pub fn code(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }
}

/// A session as the hub sees it: no socket, only a queue and a kill switch.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Node-local id (a counter): cheaper to hash than the session's UUID.
    pub id: u64,
    /// The session's UUID (`welcome.session_id`): frames can be addressed to every
    /// session of a user but this one.
    pub key: Arc<str>,
    /// The bounded send queue drained by the session's writer.
    pub queue: Arc<Queue>,
    /// Shared end-of-session state.
    pub control: Arc<Control>,
    /// How presence knows the session (`/ws` sessions; SSE streams and echo
    /// connections are not in presence): lets the node re-add its members after its
    /// presence was reaped while it was alive.
    pub presence: Option<Arc<wsgate_broker::SessionRef>>,
}

/// The queue was full: the session has been closed as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowConsumer;

impl SessionHandle {
    /// Queues `item` without waiting. A full queue closes the session with 1013; a
    /// closed queue (the session is ending) drops the item quietly.
    ///
    /// # Errors
    /// [`SlowConsumer`] when the queue was full.
    pub fn offer(&self, item: Outbound) -> Result<(), SlowConsumer> {
        self.settle(self.queue.push(item))
    }

    /// [`SessionHandle::offer`], with the writer's wake-up left to `wakes` (fan-out
    /// of a batch of broker messages: the writer is woken once, after all of them).
    ///
    /// # Errors
    /// [`SlowConsumer`] when the queue was full.
    pub fn offer_deferred(&self, item: Outbound, wakes: &mut Wakes) -> Result<(), SlowConsumer> {
        self.settle(self.queue.push_deferred(item, wakes))
    }

    fn settle(&self, pushed: Result<(), PushError>) -> Result<(), SlowConsumer> {
        match pushed {
            Ok(()) | Err(PushError::Closed(_)) => Ok(()),
            Err(PushError::Full(_)) => {
                self.control.close(CloseCode::TryAgainLater);
                Err(SlowConsumer)
            }
        }
    }
}
