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
use crate::queue::Wakes;

/// Most broker events one batch takes before the writers it fed are woken…
const BATCH_EVENTS: usize = 256;
/// … and most deliveries (a batch of a few big-room messages ends sooner): what a
/// batch adds to the first frame's latency stays a few milliseconds of fan-out work.
const BATCH_DELIVERIES: usize = 32 * 1024;

/// Fans broker events out to local sessions until the broker goes away. This is the
/// one place where delivery starts: the frame is checked as UTF-8 once and then
/// shared by reference with every recipient.
pub async fn run(node: Arc<Node>, mut events: mpsc::Receiver<BrokerEvent>) {
    // The gap the link is in (0: none yet) and the repair of the last one.
    let mut gap = 0;
    let mut repair: Option<tokio::task::JoinHandle<()>> = None;
    let mut wakes = Wakes::default();
    while let Some(first) = events.recv().await {
        // Everything already waiting is dispatched before any writer is woken: under
        // load, each writer then takes many frames at once and writes them in one
        // `write()`. With one message at a time this is exactly one event per batch.
        let (mut taken, mut delivered) = (0, 0);
        let mut next = Some(first);
        while let Some(event) = next.take() {
            taken += 1;
            match event {
                BrokerEvent::Message { channel, frame } => {
                    delivered += dispatch(&node, &channel, frame, &mut wakes);
                }
                link @ (BrokerEvent::Down | BrokerEvent::Up) => {
                    wakes.wake_all();
                    let up = matches!(link, BrokerEvent::Up);
                    on_link(&node, up, &mut gap, &mut repair);
                }
            }
            if taken < BATCH_EVENTS && delivered < BATCH_DELIVERIES {
                next = events.try_recv().ok();
            }
        }
        wakes.wake_all();
    }
}

/// The broker's link went down (`up == false`) or came back.
fn on_link(
    node: &Arc<Node>,
    up: bool,
    gap: &mut u64,
    repair: &mut Option<tokio::task::JoinHandle<()>>,
) {
    if up {
        node.metrics.broker_up.set(1);
        if let Some(r) = repair.take() {
            r.abort();
        }
        *repair = Some(tokio::spawn(crate::gap_repair::run(node.clone(), *gap)));
    } else {
        node.metrics.broker_up.set(0);
        node.metrics.broker_disconnects.inc();
        // Every frame of the lost link has been dispatched (events arrive in
        // order): from here on the rooms hold what arrives until refilled.
        *gap = node.hub.hold_all();
        if let Some(r) = repair.take() {
            r.abort();
        }
    }
}

/// Fans one broker frame out; returns the deliveries made (their writers are in
/// `wakes`).
fn dispatch(node: &Node, channel: &Channel, payload: Bytes, wakes: &mut Wakes) -> usize {
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
            return 0;
        }
    };
    let out = node
        .hub
        .dispatch_deferred(channel, &frame, skip.as_deref(), wakes);
    node.metrics.fanout_deliveries.inc_by(out.delivered as u64);
    node.metrics
        .frames_out(type_label(frame_type(frame.as_str())), out.delivered as u64);
    // Slow consumers closed here are counted when their session ends.
    out.delivered
}
