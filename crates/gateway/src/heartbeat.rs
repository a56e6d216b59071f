//! The node's heartbeat to the cluster registry: twice per heartbeat interval it
//! reports itself alive, and the registry reaps nodes that stopped reporting.

use std::sync::Arc;
use std::time::Duration;

use wsgate_broker::NodeReport;

use crate::node::Node;

/// Reports this node until it shuts down.
pub async fn run(node: Arc<Node>) {
    let period = Duration::from_millis(node.config.heartbeat_ms / 2).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = node.root.cancelled() => return,
        }
        let report = NodeReport {
            connections: node.active() as u64,
        };
        match node.registry.heartbeat(report).await {
            Ok(()) if failing => {
                tracing::info!("cluster heartbeat restored");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cluster heartbeat failing");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
