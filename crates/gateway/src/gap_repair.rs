//! Repairing a broker gap in place. When the node's Pub/Sub link drops, every room
//! holds its live frames ([`crate::hub::Hub::hold_all`]); once the link is back (and
//! has resubscribed), each held room is refilled from its stream after its mark, and
//! the held frames follow minus what the refill already gave. Members stay connected
//! and get every stored message once, in order. Where the stream does not reach back,
//! or its epoch changed, they get `resync` and reload the room. Nothing is skipped
//! silently.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_broker::Channel;

use crate::hub::{Finished, GapStart, Refill};
use crate::node::Node;

/// Rooms refilled at once.
const CONCURRENCY: usize = 16;
/// Reads of one room's stream before the repair gives up refilling it (live frames
/// kept overflowing the hold) and sends `resync` instead.
const MAX_ROUNDS: u32 = 4;
/// Longest pause between attempts while the broker fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs after the broker's link came back: makes sure every channel a local session
/// needs is subscribed (including ones whose subscription failed during the outage),
/// then refills every room held for `gap`.
pub async fn run(node: Arc<Node>, gap: u64) {
    for channel in node.hub.channels() {
        if let Err(e) = node.subs.ensure(&channel).await {
            tracing::warn!(%channel, error = %e, "resubscribe failed");
        }
    }
    let rooms = node.hub.held_rooms(gap);
    if rooms.is_empty() {
        return;
    }
    tracing::info!(
        rooms = rooms.len(),
        gap,
        "refilling rooms after a broker gap"
    );
    futures_util::stream::iter(rooms)
        .for_each_concurrent(CONCURRENCY, |room| {
            let node = node.clone();
            async move { repair_room(&node, &room, gap).await }
        })
        .await;
}

/// Refills one room, retrying while the broker fails, until the room is live again
/// or a later gap (or its emptying) makes the work stale.
async fn repair_room(node: &Arc<Node>, room: &str, gap: u64) {
    let mut backoff = Duration::from_millis(50);
    let mut rounds = 0;
    loop {
        match attempt(node, room, gap, rounds >= MAX_ROUNDS).await {
            Ok(Finished::Live(_)) | Ok(Finished::Stale) => return,
            Ok(Finished::ReadAgain) => rounds += 1,
            Err(e) => {
                tracing::warn!(%room, error = %e, "refill failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn attempt(
    node: &Arc<Node>,
    room: &str,
    gap: u64,
    give_up: bool,
) -> Result<Finished, wsgate_broker::Error> {
    let start = node.hub.gap_start(room, gap);
    if start == GapStart::Stale {
        return Ok(Finished::Stale);
    }
    // Live frames must flow (into the hold) before the stream is read.
    node.subs.ensure(&Channel::Room(room.to_owned())).await?;
    let refill = match start {
        GapStart::From(mark) if !give_up => {
            let replay = node
                .broker
                .replay(room, mark.id, node.config.replay_max_bytes())
                .await?;
            if replay.complete && replay.state.epoch == mark.epoch {
                Refill::Entries(
                    replay
                        .entries
                        .into_iter()
                        .filter_map(|(id, f)| Some((id, Utf8Bytes::try_from(f).ok()?)))
                        .collect(),
                )
            } else {
                Refill::Resync(replay.state)
            }
        }
        _ => Refill::Resync(node.broker.room_state(room).await?),
    };
    let (refilled, resync) = match &refill {
        Refill::Entries(e) => (e.len() as u64, false),
        Refill::Resync(_) => (0, true),
    };
    let finished = node.hub.finish_refill(room, gap, refill);
    if let Finished::Live(out) = finished {
        node.metrics.fanout_deliveries.inc_by(out.delivered as u64);
    }
    if finished != Finished::Stale {
        if resync {
            node.metrics.gap_resyncs.inc();
            tracing::warn!(%room, "broker gap not refillable: members told to resync");
        } else {
            node.metrics.gap_refills.inc();
            node.metrics.gap_refilled_messages.inc_by(refilled);
        }
    }
    Ok(finished)
}
