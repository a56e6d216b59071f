//! Presence removals that failed (the broker was unreachable) are not dropped: they
//! wait here and are retried with backoff until they hold, and the room then hears the
//! `leave` it was owed. Without this, a short Redis error left a user a member forever
//! (a zombie), and that user's later leaves were never announced. If the node dies
//! first, the cluster's reaper removes its entries instead.

use std::sync::Arc;
use std::time::Duration;

use wsgate_broker::SessionRef;
use wsgate_protocol::server::PresenceEvent;

use crate::node::Node;
use crate::pending_removals::SessionKey;

/// Retries waiting removals until the node shuts down: every 200 ms while they
/// succeed, backing off to 5 s while the broker fails.
pub async fn run(node: Arc<Node>) {
    let mut pause = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = node.root.cancelled() => return,
        }
        let batch: Vec<(String, SessionKey)> =
            node.removals.lock().iter().take(256).cloned().collect();
        let mut failed = false;
        for (room, key) in batch {
            let session = SessionRef {
                session_id: key.session_id.clone(),
                user: wsgate_protocol::server::Member {
                    user_id: key.user_id.clone(),
                    username: key.username.clone(),
                },
            };
            if room == crate::grace_queue::SESSION {
                // The session's online count (`user_offline` webhooks).
                if node.online.disconnect(&session).await.is_err() {
                    failed = true;
                    break;
                }
                node.removals.lock().remove(&(room, key));
                continue;
            }
            match node.presence.remove(&room, &session).await {
                Ok(change) => {
                    node.removals.lock().remove(&(room.clone(), key));
                    node.metrics.presence_retries.inc();
                    crate::announce::presence_changed(
                        &node,
                        &room,
                        PresenceEvent::Leave,
                        &session.user,
                        change,
                    )
                    .await;
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        node.metrics
            .presence_removals_pending
            .set(node.removals.len() as i64);
        pause = if failed {
            (pause * 2).min(Duration::from_secs(5))
        } else {
            Duration::from_millis(200)
        };
    }
}
