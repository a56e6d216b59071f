//! The node's heartbeat to the cluster registry: twice per heartbeat interval it
//! reports itself alive, and the registry reaps nodes that stopped reporting.

use std::sync::Arc;
use std::time::Duration;

use wsgate_broker::{Added, NodeReport};
use wsgate_protocol::server::PresenceEvent;

use crate::node::Node;

/// Reports this node until it shuts down.
pub async fn run(node: Arc<Node>) {
    let period = Duration::from_millis(node.config.heartbeat_ms / 2).max(Duration::from_millis(50));
    // Until the first report is taken, joins wait for it: try again soon.
    let unregistered = period.min(Duration::from_millis(250));
    let mut failing = false;
    // Set while local sessions must be added to presence again, until that holds.
    let mut readd = false;
    loop {
        // `register` reported once already before the node served.
        let wait = if node.is_registered() {
            period
        } else {
            unregistered
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = node.deregistering.cancelled() => return,
        }
        let report = NodeReport {
            connections: node.active() as u64,
        };
        match node.registry.heartbeat(report).await {
            Ok(missing) => {
                node.registered
                    .store(true, std::sync::atomic::Ordering::Release);
                if failing {
                    tracing::info!("cluster heartbeat restored");
                    failing = false;
                }
                readd |= missing;
                if readd {
                    readd = !readd_presence(&node).await;
                }
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cluster heartbeat failing");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// One report before the node serves, bounded in time: with a reachable broker the
/// node is registered (and has cleared a previous run's presence) before its first
/// session; otherwise [`run`] registers it once the broker answers.
pub async fn register(node: &Arc<Node>) {
    let report = NodeReport { connections: 0 };
    let first = tokio::time::timeout(Duration::from_secs(5), node.registry.heartbeat(report));
    match first.await {
        Ok(Ok(_)) => node
            .registered
            .store(true, std::sync::atomic::Ordering::Release),
        Ok(Err(e)) => tracing::warn!(error = %e, "cluster registry not reachable at start"),
        Err(_) => tracing::warn!("cluster registry did not answer at start"),
    }
}

/// Adds every local `/ws` session to presence again (the registry did not know this
/// node: it was reaped while alive, or the store lost its data), announcing `join`
/// where a user is back. Adding an entry that is still there changes nothing.
/// Returns whether every entry was added.
async fn readd_presence(node: &Arc<Node>) -> bool {
    if !crate::webhooks::reconnect_all(node).await {
        tracing::warn!("re-adding online counts failed; the next heartbeat tries again");
        return false;
    }
    let entries = node.hub.presence_entries();
    if entries.is_empty() {
        return true;
    }
    tracing::warn!(
        entries = entries.len(),
        "this node was missing from the cluster registry: adding its sessions to presence again"
    );
    for (room, session) in entries {
        match node.presence.add(&room, &session, 0).await {
            Ok(Added::In(change, _)) => {
                crate::announce::presence_changed(
                    node,
                    &room,
                    PresenceEvent::Join,
                    &session.user,
                    change,
                )
                .await;
            }
            Ok(Added::Full) => {
                tracing::warn!(%room, "room full: a re-added session is not counted");
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-adding presence failed; the next heartbeat tries again");
                return false;
            }
        }
    }
    true
}
