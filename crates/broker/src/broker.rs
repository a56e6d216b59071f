//! The [`Broker`] trait and the types it speaks in.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use wsgate_protocol::server::{Member, Notification, Restore, RestoreRoom, StoredEntry};
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
    /// `true` when nothing after `since` has been trimmed away and `since` is
    /// not ahead of the history: the replay has no gap.
    pub complete: bool,
}

/// One session's membership, for presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// The session's id (unique across the cluster).
    pub session_id: String,
    /// Who the session belongs to.
    pub user: Member,
}

/// Marks a frame on a user channel as not for one session (`#skip:<session>\n<frame>`):
/// `notifications_read` goes to every *other* session of the user. Only the gateway's
/// dispatcher reads it; clients never see the header.
pub fn skip_envelope(session_id: &str, frame: &str) -> String {
    format!("#skip:{session_id}\n{frame}")
}

/// Splits a published payload into the session to skip (if any) and the frame.
pub fn open_envelope(payload: &[u8]) -> (Option<&str>, &[u8]) {
    if let Some(rest) = payload.strip_prefix(b"#skip:") {
        if let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            if let Ok(session) = std::str::from_utf8(&rest[..nl]) {
                return (Some(session), &rest[nl + 1..]);
            }
        }
    }
    (None, payload)
}

/// What a node reports about itself to the cluster registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeReport {
    /// Open WebSocket connections on the node.
    pub connections: u64,
}

/// Totals over the live nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterStats {
    /// Ids of the nodes alive now (sorted).
    pub nodes: Vec<String>,
    /// Open connections over those nodes.
    pub connections: u64,
}

/// The contract between a gateway node and the rest of the cluster.
///
/// Implementations: [`crate::MemoryBroker`] (one node, in process) and the Redis
/// broker (a cluster). Both keep the same rules, held by one conformance suite:
///
/// - a node receives a channel's frames only while it is subscribed to it, and
///   receives them in publish order, its own publishes included;
/// - [`Broker::publish_entry`] stores the entry in the room's history and publishes
///   its final frame in one atomic step, so delivery order is history order;
/// - presence counts sessions, so "first session of a user" and "last session of a
///   user" are answered cluster-wide.
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

    /// Every stored frame after `since`, and whether that replay is complete.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn replay(&self, room: &str, since: MessageId) -> Result<Replay>;

    /// Up to `limit` stored frames strictly before `before` (or the newest), oldest
    /// first.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn history(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Bytes>>;

    /// Records that a session is in `room`. Returns `true` when it is the user's
    /// first session there (the room should hear a presence `join`).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn presence_add(&self, room: &str, session: &SessionRef) -> Result<bool>;

    /// Records that a session left `room`. Returns `true` when it was the user's
    /// last session there (the room should hear a presence `leave`).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn presence_remove(&self, room: &str, session: &SessionRef) -> Result<bool>;

    /// The distinct users present in `room`, ordered by user id.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn presence_members(&self, room: &str) -> Result<Vec<Member>>;

    /// Sets or clears `user`'s typing flag in `room`; a set flag expires after `ttl`
    /// unless set again. Returns who is typing now.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn typing_set(
        &self,
        room: &str,
        user: &Member,
        typing: bool,
        ttl: Duration,
    ) -> Result<Vec<Member>>;

    /// Drops expired typing flags of `room`. Returns who is typing now when a flag was
    /// dropped, `None` when nothing changed.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn typing_expire(&self, room: &str) -> Result<Option<Vec<Member>>>;

    /// Stores each notification (one per user, newest kept: at most `cap` per user,
    /// each for `ttl`) and publishes a `notification` frame on its user's channel, all
    /// in one step. Returns each user's unread count after it, in order.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: nothing was stored or sent.
    async fn notify(&self, items: &[Notification], cap: usize, ttl: Duration) -> Result<Vec<u64>>;

    /// A page of `user`'s notifications, newest first, and the unread count.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn notifications(
        &self,
        user: &str,
        limit: usize,
        before: Option<&str>,
        unread_only: bool,
        ttl: Duration,
    ) -> Result<(Vec<Notification>, u64)>;

    /// Marks `ids` (or all when `None`) read; publishes `notifications_read` to every
    /// session of the user except `origin_session`. Returns the ids that changed and
    /// the unread count.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn mark_read(
        &self,
        user: &str,
        ids: Option<&[String]>,
        origin_session: &str,
        ttl: Duration,
    ) -> Result<(Vec<String>, u64)>;

    /// `user`'s unread count.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn unread(&self, user: &str, ttl: Duration) -> Result<u64>;

    /// Merges `rooms` into `user`'s saved state (one write), kept for `ttl`.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn save_restore(&self, user: &str, rooms: &[RestoreRoom], ttl: Duration) -> Result<()>;

    /// Takes (reads and deletes) `user`'s saved state.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn take_restore(&self, user: &str) -> Result<Option<Restore>>;

    /// Called periodically (twice per heartbeat interval): keeps this node registered
    /// as alive, and removes from presence the sessions of nodes that stopped
    /// reporting (announcing `leave` where a user's last session went with them).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn heartbeat(&self, _report: NodeReport) -> Result<()> {
        Ok(())
    }

    /// Totals over the cluster's live nodes; `None` for a single node.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn cluster(&self) -> Result<Option<ClusterStats>> {
        Ok(None)
    }

    /// Removes this node from the registry (graceful shutdown).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn deregister(&self) -> Result<()> {
        Ok(())
    }

    /// Checks that the backing store answers (readiness).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn ping(&self) -> Result<()>;
}
