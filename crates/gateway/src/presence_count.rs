//! `presence_count` of rooms that show only their count: a room whose count changed on
//! this node is marked here, and [`run`] publishes its count when the room's slot
//! (one per second per room, cluster-wide: [`wsgate_broker::Presence::count_due`]) is
//! free. The last change is always published; a storm of joins costs each room one
//! frame per second, whatever its size.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use wsgate_broker::{Channel, CountDue};
use wsgate_protocol::server::ServerFrame;

use crate::node::Node;

/// At most one `presence_count` per room per this long.
pub const COUNT_PERIOD: Duration = Duration::from_secs(1);

/// How often due rooms are looked at.
const TICK: Duration = Duration::from_millis(100);

/// Publishes due counts until the node shuts down.
pub async fn run(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = node.root.cancelled() => return,
        }
        let now = Instant::now();
        for room in node.counts.due(now) {
            match node.presence.count_due(&room, COUNT_PERIOD).await {
                Ok(CountDue::Publish(count)) => {
                    node.counts.done(&room);
                    let frame = ServerFrame::PresenceCount {
                        room: room.clone(),
                        count,
                    };
                    if let Err(e) = node
                        .broker
                        .publish(&Channel::Room(room.clone()), frame.encode().into())
                        .await
                    {
                        tracing::warn!(%room, error = %e, "presence count lost; retrying");
                        node.counts.touch(&room);
                    }
                }
                Ok(CountDue::Unchanged) => node.counts.done(&room),
                Ok(CountDue::Later(wait)) => node.counts.retry(&room, now + wait),
                Err(e) => {
                    tracing::warn!(%room, error = %e, "presence count slot unavailable");
                    node.counts.retry(&room, now + COUNT_PERIOD);
                }
            }
        }
    }
}
