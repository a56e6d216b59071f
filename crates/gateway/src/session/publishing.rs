//! A session's `message` publishes in flight: the reader does not wait for the broker
//! to answer one before it reads the next frame, so a client that sends a burst has
//! its messages pipelined to Redis on the shared connection instead of paying one
//! round trip each (a round trip that, on a node busy fanning out, waits behind every
//! writer it woke: a 400-message burst took 3.7 s to publish on 3 busy nodes).
//!
//! Order is kept: the publishes are started in the order the frames arrived (a
//! [`FuturesOrdered`] polls new futures first-in first-out, and the broker call sends
//! its command on its first poll, on the one multiplexed connection), and answered in
//! that order. Any other command first waits for every publish in flight
//! ([`Session::settle_publishing`]), so its answer follows theirs and it sees them
//! (a `history` after a `message` holds it).

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use serde_json::Value;
use wsgate_protocol::server::ServerFrame;
use wsgate_protocol::MessageId;

use super::Session;

/// Most publishes a session has in flight; the reader stops reading at this many.
pub(super) const MAX_IN_FLIGHT: usize = 64;

/// A publish the broker has answered.
pub(super) struct Published {
    reference: Option<Value>,
    room: String,
    result: Result<MessageId, wsgate_broker::Error>,
}

/// The publishes in flight, oldest first.
///
/// Created on a session's first `message` (boxed: a `FuturesOrdered` allocates up front
/// and is ~100 bytes, and most sessions never publish). In a mutex only to be `Sync` (a session is borrowed
/// across awaits, and boxed futures are `Send` but not `Sync`); every access has
/// `&mut` and never locks.
#[derive(Default)]
pub(super) struct InFlight {
    futures: Option<Box<std::sync::Mutex<Futures>>>,
}

type Futures = FuturesOrdered<BoxFuture<'static, Published>>;

impl InFlight {
    fn get(&mut self) -> Option<&mut Futures> {
        self.futures
            .as_mut()
            .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&mut self, publish: BoxFuture<'static, Published>) {
        self.futures
            .get_or_insert_with(Default::default)
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(publish);
    }

    /// Publishes in flight.
    pub(super) fn len(&mut self) -> usize {
        self.get().map_or(0, |f| f.len())
    }

    /// Whether none is.
    pub(super) fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// The oldest publish, once answered (`None` when none is in flight).
    pub(super) async fn next(&mut self) -> Option<Published> {
        match self.get() {
            Some(f) => std::future::poll_fn(|cx| f.poll_next_unpin(cx)).await,
            None => None,
        }
    }
}

impl Session {
    /// Starts publishing `entry`'s message into `room` (its answer comes from
    /// [`Session::published`]).
    pub(super) fn start_publish(
        &mut self,
        room: String,
        entry: wsgate_protocol::server::StoredEntry,
        reference: Option<Value>,
    ) {
        let broker = self.node.broker.clone();
        let publish = async move {
            let result = broker.publish_entry(&room, &entry).await;
            Published {
                reference,
                room,
                result,
            }
        };
        self.publishing.push(Box::pin(publish));
    }

    /// Answers one publish: `ack` (when the frame had a `ref`) or `unavailable`.
    pub(super) fn published(&self, p: Published) {
        match p.result {
            Ok(id) => {
                if p.reference.is_some() {
                    self.send(
                        &ServerFrame::Ack {
                            reference: p.reference,
                            room: Some(p.room),
                            id: id.to_string(),
                        },
                        "ack",
                    );
                }
            }
            Err(e) => {
                let err = self.unavailable(e).with_ref(p.reference);
                self.error(err);
            }
        }
    }

    /// Waits for every publish in flight and answers each, in order.
    pub(super) async fn settle_publishing(&mut self) {
        while let Some(p) = self.publishing.next().await {
            self.published(p);
        }
    }
}
