//! The dispatcher: where every frame the broker delivers to this node starts its
//! fan-out to local sessions ([`crate::hub::Hub`]), and where the broker's link going
//! down and up is noticed and its gap repaired ([`crate::gap_repair`]).

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
    // The gap the link is in (0: none yet) and the repair of the last one.
    let mut gap = 0;
    let mut repair: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(event) = events.recv().await {
        match event {
            BrokerEvent::Message { channel, frame } => dispatch(&node, &channel, frame),
            BrokerEvent::Down => {
                node.metrics.broker_up.set(0);
                node.metrics.broker_disconnects.inc();
                // Every frame of the lost link has been dispatched (events arrive in
                // order): from here on the rooms hold what arrives until refilled.
                gap = node.hub.hold_all();
                if let Some(r) = repair.take() {
                    r.abort();
                }
            }
            BrokerEvent::Up => {
                node.metrics.broker_up.set(1);
                if let Some(r) = repair.take() {
                    r.abort();
                }
                repair = Some(tokio::spawn(crate::gap_repair::run(node.clone(), gap)));
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
