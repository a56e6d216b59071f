//! The dashboard's feed: every node publishes its stats into
//! [`crate::reserved::SYSTEM_ROOM`] once a second (not stored: one Pub/Sub message per
//! node per second, whatever the number of dashboards).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wsgate_broker::Channel;
use wsgate_protocol::server::ServerFrame;

use crate::clock::now_ts;
use crate::node::Node;
use crate::reserved::SYSTEM_ROOM;

/// Publishes this node's stats once a second until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let messages_in = || {
        node.metrics
            .frames_in
            .get_or_create(&vec![("type", "message")])
            .get()
    };
    let mut last = (
        messages_in(),
        node.metrics.fanout_deliveries.get(),
        Instant::now(),
    );
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = node.root.cancelled() => return,
        }
        let now = (
            messages_in(),
            node.metrics.fanout_deliveries.get(),
            Instant::now(),
        );
        let secs = now.2.duration_since(last.2).as_secs_f64().max(0.001);
        let data = serde_json::json!({
            "node_id": node.node_id,
            "connections": node.active(),
            "capacity": node.config.max_connections,
            "rooms": node.hub.room_count(),
            "messages_in_per_s": ((now.0 - last.0) as f64 / secs).round(),
            "deliveries_per_s": ((now.1 - last.1) as f64 / secs).round(),
            "slow_consumer_closes": node.metrics.slow_consumer_closes.get(),
            "uptime_s": node.started.elapsed().as_secs(),
            "broker": node.broker.kind(),
        });
        last = now;
        let frame = ServerFrame::Publish {
            id: None,
            room: Some(SYSTEM_ROOM.to_owned()),
            user_id: None,
            data,
            ts: now_ts(),
        };
        let _ = node
            .broker
            .publish(
                &Channel::Room(SYSTEM_ROOM.to_owned()),
                frame.encode().into(),
            )
            .await;
    }
}
