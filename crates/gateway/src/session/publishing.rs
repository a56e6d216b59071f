//! A session's `message`s, published in batches: the frames a client sent together
//! (everything its socket has ready when the reader gets to it, up to
//! [`MAX_BATCH`]) are stored and published in one broker call
//! ([`wsgate_broker::Broker::publish_entries`]: one Redis pipeline, one round trip),
//! then each is answered (`ack` or `unavailable`) in order.
//!
//! Why: on a node busy fanning out, each publish's round trip waits behind every
//! writer the previous message woke, so publishing a burst one message at a time took
//! seconds (a 400-message burst to 3,000 subscribers on 3 nodes: 3.7 s). Why not
//! several publishes in flight instead: commands started concurrently on the shared
//! Redis connection may reach Redis in another order than they were started (a
//! command waiting for room in the connection's queue is overtaken by the next one),
//! and a room's messages from one client must be stored in the order sent. One
//! batch at a time, one pipeline per batch, keeps that order by construction.
//!
//! Any other command first publishes the batch before it ([`Session::settle_publishing`]),
//! so its answer follows theirs and it sees them (a `history` after a `message`
//! holds it).

use serde_json::Value;
use wsgate_protocol::server::{ServerFrame, StoredEntry};

use super::Session;

/// Most `message`s published in one batch.
pub(super) const MAX_BATCH: usize = 64;

/// The `message`s read and not yet published (their rooms, entries and `ref`s).
#[derive(Default)]
pub(super) struct Batch {
    entries: Vec<(String, StoredEntry)>,
    refs: Vec<Option<Value>>,
}

impl Batch {
    /// Whether none is waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `message`s waiting.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch is as large as it gets.
    pub(super) fn is_full(&self) -> bool {
        self.entries.len() >= MAX_BATCH
    }
}

impl Session {
    /// Adds a `message` to the batch (published by [`Session::settle_publishing`]).
    pub(super) fn start_publish(
        &mut self,
        room: String,
        entry: StoredEntry,
        reference: Option<Value>,
    ) {
        self.publishing.entries.push((room, entry));
        self.publishing.refs.push(reference);
    }

    /// Publishes the batch and answers each message, in order.
    pub(super) async fn settle_publishing(&mut self) {
        if self.publishing.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.publishing.entries);
        let refs = std::mem::take(&mut self.publishing.refs);
        let results = self.node.broker.publish_entries(&entries).await;
        for (((room, _), reference), result) in entries.into_iter().zip(refs).zip(results) {
            match result {
                Ok(id) => {
                    if reference.is_some() {
                        self.send(
                            &ServerFrame::Ack {
                                reference,
                                room: Some(room),
                                id: id.to_string(),
                            },
                            "ack",
                        );
                    }
                }
                Err(e) => {
                    let err = self.unavailable(e).with_ref(reference);
                    self.error(err);
                }
            }
        }
    }
}
