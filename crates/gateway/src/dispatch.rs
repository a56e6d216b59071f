//! The dispatcher: where every frame the broker delivers to this node starts its
//! fan-out to local sessions ([`crate::hub::Hub`]), and where the broker's link going
//! down and up is noticed.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_broker::{open_envelope, BrokerEvent, Channel};
use wsgate_protocol::server::frame_type;

use crate::metrics::type_label;
use crate::node::Node;

/// Fans broker events out to local sessions until the broker goes away. This is the
/// one place where delivery starts: the frame is checked as UTF-8 once and then
/// shared by reference with every recipient.
pub async fn run(node: Arc<Node>, mut events: mpsc::Receiver<BrokerEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            BrokerEvent::Message { channel, frame } => dispatch(&node, &channel, frame),
            BrokerEvent::Down => {
                node.metrics.broker_up.set(0);
                node.metrics.broker_disconnects.inc();
            }
            BrokerEvent::Up => {
                node.metrics.broker_up.set(1);
                // The broker resubscribed what it knew; make sure every channel a
                // local session needs is there, including ones whose subscription
                // failed during the outage.
                let node = node.clone();
                tokio::spawn(async move {
                    for channel in node.hub.channels() {
                        if let Err(e) = node.subs.ensure(&channel).await {
                            tracing::warn!(%channel, error = %e, "resubscribe failed");
                        }
                    }
                });
            }
        }
    }
}

fn dispatch(node: &Node, channel: &Channel, payload: Bytes) {
    // A user-channel frame may name a session to skip (`#skip:<id>\n<frame>`).
    let (skip, inner) = {
        let (skip, frame) = open_envelope(&payload);
        (
            skip.map(str::to_owned),
            skip.is_some().then(|| payload.slice_ref(frame)),
        )
    };
    let frame = inner.unwrap_or(payload);
    let frame = match Utf8Bytes::try_from(frame) {
        Ok(f) => f,
        Err(_) => {
            tracing::warn!(%channel, "dropping a broker frame that is not UTF-8");
            return;
        }
    };
    let out = node.hub.dispatch_except(channel, &frame, skip.as_deref());
    node.metrics.fanout_deliveries.inc_by(out.delivered as u64);
    node.metrics
        .frames_out(type_label(frame_type(frame.as_str())), out.delivered as u64);
    // Slow consumers closed here are counted when their session ends.
}
