//! [`Lifetime`]: what every kind of session (a `/ws` session, an SSE stream, an echo
//! connection) does when it opens and when it closes: its queue and kill switch, its
//! connection slot, and the counting of both ends.

use std::sync::Arc;

use wsgate_protocol::CloseCode;

use crate::handle::{Control, SessionHandle};
use crate::node::Node;
use crate::queue::Queue;
use crate::slot::Slot;

/// An open session's place in the node, given back by [`Lifetime::close`].
pub struct Lifetime {
    /// The node it counts in.
    node: Arc<Node>,
    /// Its connection slot, released at the close.
    slot: Slot,
    /// The session as the hub sees it: queue and kill switch.
    pub handle: SessionHandle,
}

impl Lifetime {
    /// Opens a session holding `slot`, with a fresh queue and a kill switch under the
    /// node's shutdown token. `key` is its cluster-wide id; `presence`, how presence
    /// knows it (for `/ws` sessions).
    pub fn open(
        node: &Arc<Node>,
        slot: Slot,
        key: &str,
        presence: Option<Arc<wsgate_broker::SessionRef>>,
    ) -> Self {
        node.metrics.connections_total.inc();
        node.metrics.connections_active.inc();
        let handle = SessionHandle {
            id: node.next_session_id(),
            key: Arc::from(key),
            queue: Queue::new(node.config.send_queue, node.config.send_queue_bytes),
            control: Arc::new(Control::new(node.root.child_token())),
            presence,
        };
        Lifetime {
            node: node.clone(),
            slot,
            handle,
        }
    }

    /// Counts the close (by WebSocket close code when there is one; as a slow consumer
    /// when that was why) and gives the slot back.
    pub fn close(self, code: Option<u16>) {
        let metrics = &self.node.metrics;
        if let Some(code) = code {
            metrics.close(code);
        }
        // Counted by the reason chosen, even when the close frame could not be written.
        if self.handle.control.code() == Some(CloseCode::TryAgainLater.code()) {
            metrics.slow_consumer_closes.inc();
        }
        self.handle.queue.close();
        metrics.connections_active.dec();
        drop(self.slot);
    }
}
