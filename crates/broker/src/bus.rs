//! [`MemoryBus`]: the in-process Pub/Sub of the embedded broker, shared by its
//! concerns (room messages, notifications): a set of subscribed channels and the
//! node's one event channel.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::broker::{BrokerEvent, Channel};
use crate::error::{Error, Result};

/// What the embedded broker's parts publish through.
pub struct MemoryBus {
    /// Channels the node listens on. A std mutex: held for a set lookup, never across
    /// an `.await`.
    subscribed: Mutex<HashSet<Channel>>,
    /// Where frames for subscribed channels go (the node's dispatcher).
    events: mpsc::Sender<BrokerEvent>,
}

impl MemoryBus {
    /// A bus that delivers into `events`.
    pub fn new(events: mpsc::Sender<BrokerEvent>) -> Self {
        MemoryBus {
            subscribed: Mutex::new(HashSet::new()),
            events,
        }
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<Channel>> {
        self.subscribed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Listens on `channel`.
    pub fn subscribe(&self, channel: &Channel) {
        self.set().insert(channel.clone());
    }

    /// Stops listening on `channel`.
    pub fn unsubscribe(&self, channel: &Channel) {
        self.set().remove(channel);
    }

    /// Delivers `frame` when the node listens on `channel`. Frames are delivered in
    /// the order the calls complete; a caller that needs an order across calls (ids
    /// in a room) holds its own lock around them.
    ///
    /// # Errors
    /// [`Error::Closed`] once the dispatcher is gone.
    pub async fn emit(&self, channel: &Channel, frame: Bytes) -> Result<()> {
        if !self.set().contains(channel) {
            return Ok(());
        }
        let event = BrokerEvent::Message {
            channel: channel.clone(),
            frame,
        };
        self.events.send(event).await.map_err(|_| Error::Closed)
    }

    /// Whether the dispatcher still listens.
    pub fn is_open(&self) -> bool {
        !self.events.is_closed()
    }
}
