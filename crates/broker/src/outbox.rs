//! [`Outbox`]: the webhook events a cluster owes its back end, kept until a node has
//! delivered them. Implementations side by side: [`crate::outbox_memory`] (one node, in
//! process, bounded) and [`crate::outbox_redis`] (Redis Streams with a consumer group:
//! any node delivers, and what a node took and did not acknowledge is taken over by
//! another once it has been idle for a while).
//!
//! Presence transitions (`room_occupied`, `room_vacated`, `member_added`,
//! `member_removed`) are recorded by [`crate::Presence`] and `user_offline` by
//! [`crate::Online`], in the same atomic step as the transition (in Redis, the same
//! script), so exactly one event is recorded per transition however many nodes
//! watched it. [`Outbox::record`] is for the rest (`client_message`).

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// The kinds of webhook events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventName {
    /// A room's first user arrived (its distinct users went from 0 to 1).
    RoomOccupied,
    /// A room's last user left (1 to 0), after the presence grace.
    RoomVacated,
    /// A user's first session in a room arrived.
    MemberAdded,
    /// A user's last session in a room left, after the presence grace.
    MemberRemoved,
    /// A user's last session anywhere closed, after the presence grace.
    UserOffline,
    /// A client sent a message in a room whose namespace asks for these events.
    ClientMessage,
}

impl EventName {
    /// Every kind, in the order of [`EventSet::mask`].
    pub const ALL: [EventName; 6] = [
        EventName::RoomOccupied,
        EventName::RoomVacated,
        EventName::MemberAdded,
        EventName::MemberRemoved,
        EventName::UserOffline,
        EventName::ClientMessage,
    ];

    /// Its name in a webhook body.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::RoomOccupied => "room_occupied",
            EventName::RoomVacated => "room_vacated",
            EventName::MemberAdded => "member_added",
            EventName::MemberRemoved => "member_removed",
            EventName::UserOffline => "user_offline",
            EventName::ClientMessage => "client_message",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`EventName`]s: which events are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventSet(u8);

impl EventSet {
    /// No event.
    pub const NONE: EventSet = EventSet(0);

    /// Every event.
    pub fn all() -> Self {
        EventName::ALL.into_iter().fold(Self::NONE, Self::with)
    }

    /// This set and `e`.
    pub fn with(self, e: EventName) -> Self {
        EventSet(self.0 | e.bit())
    }

    /// Whether `e` is in the set.
    pub fn has(self, e: EventName) -> bool {
        self.0 & e.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// One `0`/`1` per kind in the order of [`EventName::ALL`] (how the Redis scripts
    /// are told).
    pub fn mask(self) -> String {
        EventName::ALL
            .iter()
            .map(|e| if self.has(*e) { '1' } else { '0' })
            .collect()
    }
}

/// What the backend records, and how much it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recording {
    /// The events recorded (an event not in the set is never written).
    pub events: EventSet,
    /// Most events one outbox holds (waiting or being delivered); recording one more
    /// drops the oldest, counted by [`Outbox::dropped`]. On a Redis Cluster, per
    /// outbox stream (one per hash slot in use).
    pub max_len: usize,
}

impl Default for Recording {
    fn default() -> Self {
        Recording::OFF
    }
}

impl Recording {
    /// Nothing recorded (no webhooks).
    pub const OFF: Recording = Recording {
        events: EventSet::NONE,
        max_len: 1,
    };

    /// Whether `e` is recorded.
    pub fn records(&self, e: EventName) -> bool {
        self.events.has(e)
    }
}

/// One webhook event as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub name: EventName,
    /// Where (every event but `user_offline`).
    pub room: Option<String>,
    /// Who (`member_*`, `user_offline`, `client_message`).
    pub user_id: Option<String>,
    /// `client_message`: the message frame as clients got it (JSON text).
    pub message: Option<String>,
}

impl Event {
    /// An event of a room, with its user when there is one.
    pub fn room(name: EventName, room: &str, user_id: Option<&str>) -> Self {
        Event {
            name,
            room: Some(room.to_owned()),
            user_id: user_id.map(str::to_owned),
            message: None,
        }
    }
}

/// One event taken for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Unique in the cluster and the same on every delivery of the event: what a
    /// back end de-duplicates on.
    pub id: String,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The event.
    pub event: Event,
    /// Which outbox holds it (what [`Outbox::ack`] needs).
    pub outbox: String,
    /// Its place in that outbox.
    pub entry: String,
}

/// The webhook events a cluster owes, until delivered.
///
/// Delivery is at least once: an event leaves only by [`Outbox::ack`]; one taken and
/// neither acknowledged nor held for `stale` (its node died, or gave it up) is taken
/// again, by whichever node asks next.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Records `events` (those the recording selects; the rest are ignored) in the
    /// outbox that `room`'s transitions go to.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: nothing was recorded.
    async fn record(&self, room: &str, events: &[Event]) -> Result<()>;

    /// Takes up to `max` events for delivery by this node, oldest first: events taken
    /// by no node yet, and events taken (by any node) and neither acknowledged nor
    /// held within `stale`.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn take(&self, max: usize, stale: Duration) -> Result<Vec<Taken>>;

    /// Keeps events this node took from going stale for another `stale` (their
    /// delivery is being retried).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn hold(&self, taken: &[Taken]) -> Result<()>;

    /// Removes events for good (delivered, or given up).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: they stay, and will be taken again.
    async fn ack(&self, taken: &[Taken]) -> Result<()>;

    /// Events in the outbox (waiting or being delivered) when [`Outbox::take`] last
    /// looked (the embedded outbox: now).
    fn depth(&self) -> u64;

    /// Events this node's recordings dropped since it started because their outbox
    /// was full (the oldest go).
    fn dropped(&self) -> u64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_masks() {
        for e in EventName::ALL {
            assert_eq!(EventName::parse(e.as_str()), Some(e));
        }
        assert_eq!(EventName::parse("nope"), None);
        let s = EventSet::NONE
            .with(EventName::RoomOccupied)
            .with(EventName::UserOffline);
        assert_eq!(s.mask(), "100010");
        assert!(s.has(EventName::UserOffline) && !s.has(EventName::RoomVacated));
        assert_eq!(EventSet::all().mask(), "111111");
        assert!(EventSet::NONE.is_empty() && !Recording::OFF.records(EventName::RoomOccupied));
    }
}
