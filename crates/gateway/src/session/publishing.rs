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
//!
//! With a publish hook, the batch is first shown to it (`hooked.rs`: one call per
//! message, all at once): what it refuses is answered with an error in its place and
//! not published, what it replaces is published with the new content, the rest as
//! sent, still in one broker call and in order.

use serde_json::Value;
use wsgate_protocol::server::{ServerFrame, StoredEntry};

use super::Session;

/// Most `message`s published in one batch.
pub(super) const MAX_BATCH: usize = 64;

/// The `message`s read and not yet published (their rooms and entries, and what
/// answering them needs).
#[derive(Default)]
pub(super) struct Batch {
    entries: Vec<(String, StoredEntry)>,
    pending: Vec<Pending>,
}

/// What a batched `message` needs besides its entry.
pub(super) struct Pending {
    /// Its `ref`.
    reference: Option<Value>,
    /// The content it was sent with, kept only when a publish hook must see it.
    pub(super) content: Option<String>,
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
    /// Adds a `message` to the batch (published by [`Session::settle_publishing`]);
    /// `content` only when a publish hook is configured.
    pub(super) fn start_publish(
        &mut self,
        room: String,
        entry: StoredEntry,
        reference: Option<Value>,
        content: Option<String>,
    ) {
        self.publishing.entries.push((room, entry));
        self.publishing.pending.push(Pending { reference, content });
    }

    /// Publishes the batch and answers each message, in order.
    pub(super) async fn settle_publishing(&mut self) {
        if self.publishing.is_empty() {
            return;
        }
        let mut entries = std::mem::take(&mut self.publishing.entries);
        let pending = std::mem::take(&mut self.publishing.pending);
        // Boxed: the rare path (a configured hook) stays out of every session's future.
        let refusals = if self.node.hooks.publish.is_some() {
            Box::pin(self.screen(&mut entries, &pending)).await
        } else {
            Vec::new()
        };
        let entries = if refusals.iter().any(Option::is_some) {
            entries
                .into_iter()
                .zip(&refusals)
                .filter_map(|(e, refused)| refused.is_none().then_some(e))
                .collect()
        } else {
            entries
        };
        let results = self.node.broker.publish_entries(&entries).await;
        if crate::webhooks::wants_client_messages(&self.node) {
            let user = &self.session.user.user_id;
            Box::pin(crate::webhooks::client_messages(
                &self.node, user, &entries, &results,
            ))
            .await;
        }
        let mut results = results.into_iter();
        let mut published = entries.into_iter();
        let mut refusals = refusals.into_iter();
        for Pending { reference, .. } in pending {
            if let Some(Some(refused)) = refusals.next() {
                self.error(refused.with_ref(reference));
                continue;
            }
            let (Some((room, _)), Some(result)) = (published.next(), results.next()) else {
                break;
            };
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
