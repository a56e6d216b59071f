//! The presence grace: when a `/ws` session closes, its presence entries stay for
//! `--presence-grace-ms` before they are removed, so a user who comes back within it
//! (a deploy, a network blip, a page reload) is still counted when the new session
//! joins: the room hears neither a leave nor a join. An explicit `leave` is not
//! delayed. The grace is the same for every entry, so deadlines come in order and
//! the queue is a FIFO; [`run`] removes entries as they fall due, and at shutdown
//! [`drain`] removes what is left (a node that dies instead is reaped by the cluster).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wsgate_broker::SessionRef;
use wsgate_protocol::server::PresenceEvent;

use crate::node::Node;

/// Removes one entry and announces what it changed (an entry of the session itself:
/// its user's online count, [`crate::webhooks`]).
async fn remove(node: &Arc<Node>, room: &str, session: &SessionRef) {
    if room == crate::grace_queue::SESSION {
        return crate::webhooks::disconnect(node, session).await;
    }
    if let Some(change) = node.presence_remove(room, session).await {
        crate::announce::presence_changed(node, room, PresenceEvent::Leave, &session.user, change)
            .await;
    }
}

/// Removes entries as their grace ends, until the node shuts down.
pub async fn run(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = node.root.cancelled() => return,
        }
        loop {
            let due = node.grace.take_due(Some(Instant::now()), 256);
            if due.is_empty() {
                break;
            }
            for (room, session) in due {
                remove(&node, &room, &session).await;
            }
        }
    }
}

/// At shutdown: waits for entries to fall due until `deadline`, then removes every
/// entry left.
pub async fn drain(node: &Arc<Node>, deadline: Instant) {
    while !node.grace.is_empty() {
        let now = Instant::now();
        let due = node
            .grace
            .take_due(if now >= deadline { None } else { Some(now) }, 256);
        if due.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for (room, session) in due {
            remove(node, &room, &session).await;
        }
    }
}
