//! [`Broker`]: publishing, node-level subscriptions and room history, the concern every
//! message of a room passes through. Implementations side by side:
//! [`crate::broker_memory`] (one node, in process) and [`crate::broker_redis`] (a
//! cluster: Pub/Sub and Streams).

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use wsgate_protocol::server::StoredEntry;
use wsgate_protocol::MessageId;

use crate::error::Result;

/// A Pub/Sub channel. Nodes subscribe per channel, not per client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Every node of the cluster.
    Broadcast,
    /// One room.
    Room(String),
    /// Every session of one user.
    User(String),
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Broadcast => f.write_str("broadcast"),
            Channel::Room(r) => write!(f, "room:{r}"),
            Channel::User(u) => write!(f, "user:{u}"),
        }
    }
}

/// What the broker hands the gateway.
#[derive(Debug, Clone)]
pub enum BrokerEvent {
    /// A frame published on a channel this node is subscribed to. `frame` is the
    /// exact text every local recipient gets.
    Message {
        /// Where it was published.
        channel: Channel,
        /// The encoded frame (UTF-8 JSON).
        frame: Bytes,
    },
    /// The broker lost its backing store: deliveries may have been missed.
    Down,
    /// The broker is back and has resubscribed every channel.
    Up,
}

/// The epoch of a room without history: the store's epoch and the number of the
/// history-TTL period `now_s` falls in. A room keeps it when its first message is
/// stored; a history that expired as a whole did so at least one TTL after its last
/// message, so whoever saw the room empty before comes back in a later period and is
/// told another epoch. (Both brokers use this rule; Redis computes it in its scripts.)
pub fn empty_epoch(store_epoch: &str, now_s: u64, ttl_s: u64) -> String {
    let store = &store_epoch[..store_epoch.len().min(16)];
    format!("{store}-{}", now_s / ttl_s.max(1))
}

/// A room's history as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    /// Changes whenever the room's history is lost as a whole.
    pub epoch: String,
    /// The newest id in the room's history; `None` when it has none.
    pub last_id: Option<MessageId>,
}

/// What a rejoin with `since` gets back.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Stored frames with ids after `since`, oldest first.
    pub entries: Vec<(MessageId, Bytes)>,
    /// The room's state when the range was read.
    pub state: RoomState,
    /// `true` when nothing after `since` has been trimmed away, `since` is not ahead
    /// of the history, and the byte bound did not cut the replay: it has no gap.
    pub complete: bool,
}

/// A page of a room's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// Stored frames, oldest first.
    pub frames: Vec<Bytes>,
    /// `true` when the byte bound cut the page short: older messages within the count
    /// asked for exist (page on with `before`).
    pub more: bool,
}

/// Publishing, subscriptions and history: the path of every room message.
///
/// Both implementations keep the same rules, held by one conformance suite:
///
/// - a node receives a channel's frames only while it is subscribed to it, and
///   receives them in publish order, its own publishes included;
/// - [`Broker::publish_entry`] stores the entry in the room's history and publishes
///   its final frame in one atomic step, so delivery order is history order, and the
///   frame is byte for byte [`StoredEntry::frame`] of the new id.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// A short name of the implementation (`memory`, `redis`), for logs and stats.
    fn kind(&self) -> &'static str;

    /// Subscribes this node to `channel`. Idempotent.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the backing store cannot be reached.
    async fn subscribe(&self, channel: &Channel) -> Result<()>;

    /// Unsubscribes this node from `channel`. Idempotent.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the backing store cannot be reached.
    async fn unsubscribe(&self, channel: &Channel) -> Result<()>;

    /// Appends `entry` to `room`'s history, trimming it to the configured length,
    /// and publishes the final frame on the room's channel. Returns the new id.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: nothing was stored or published.
    async fn publish_entry(&self, room: &str, entry: &StoredEntry) -> Result<MessageId>;

    /// [`Broker::publish_entry`] at most once per idempotency `key` within `ttl`, on
    /// every node of the cluster: a retry with the same key is answered the first
    /// publish's id and stores and publishes nothing. Returns the id and whether this
    /// call published it (`false` for a retry).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: nothing was stored or published.
    async fn publish_entry_once(
        &self,
        room: &str,
        entry: &StoredEntry,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<(MessageId, bool)>;

    /// [`Broker::publish`] at most once per idempotency `key` within `ttl`; `false`
    /// for a retry (nothing published).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: nothing was published.
    async fn publish_once(
        &self,
        channel: &Channel,
        frame: Bytes,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<bool>;

    /// [`Broker::publish_entry`] for several entries (room, entry), stored and
    /// published in the given order, each with its own outcome. A client's burst of
    /// messages goes this way: in one round trip (one Redis pipeline), where one
    /// publish after another would each wait for the last.
    async fn publish_entries(&self, entries: &[(String, StoredEntry)]) -> Vec<Result<MessageId>> {
        let mut out = Vec::with_capacity(entries.len());
        for (room, entry) in entries {
            out.push(self.publish_entry(room, entry).await);
        }
        out
    }

    /// Publishes a frame that is not stored (presence, typing, direct, broadcast).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: nothing was published.
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<()>;

    /// The room's epoch and newest id.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn room_state(&self, room: &str) -> Result<RoomState>;

    /// The stored frames after `since`, at most `max_bytes` of them (the newest when
    /// there are more, and then the replay is not complete), and whether the replay
    /// is complete.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn replay(&self, room: &str, since: MessageId, max_bytes: usize) -> Result<Replay>;

    /// Up to `limit` stored frames strictly before `before` (or the newest), at most
    /// `max_bytes` of them (the newest), oldest first.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn history(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<HistoryPage>;

    /// Checks that the backing store answers (readiness).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn ping(&self) -> Result<()>;
}
