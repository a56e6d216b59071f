//! [`RoomRules`]: what a room's namespace configures that the broker must know
//! (history length and lifetime, presence mode and limits), and [`RoomPolicy`], where
//! the broker looks them up by room name. The gateway's namespaces implement the
//! policy; [`FixedRules`] gives every room the same rules.

use std::time::Duration;

use wsgate_protocol::server::PresenceMode;

/// The rules of one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRules {
    /// Entries kept in the room's history.
    pub history_len: usize,
    /// The room's history (and its epoch) expires after this long without a message.
    pub history_ttl: Duration,
    /// How much presence the room shows.
    pub presence: PresenceMode,
    /// A `full` room with more distinct users than this shows only a count, until it
    /// is back to nine tenths of it (hysteresis).
    pub presence_max_members: u64,
    /// Most distinct users in the room; a further user's join is refused.
    pub max_members: Option<u64>,
}

impl RoomRules {
    /// The rules of a room with `history_len` entries kept for `history_ttl`, full
    /// presence up to 1,000 users, and no member limit.
    pub fn with_history(history_len: usize, history_ttl: Duration) -> Self {
        RoomRules {
            history_len: history_len.max(1),
            history_ttl: history_ttl.max(Duration::from_secs(1)),
            presence: PresenceMode::Full,
            presence_max_members: 1000,
            max_members: None,
        }
    }

    /// The count at or below which a room over `presence_max_members` shows members
    /// again.
    pub fn presence_low_water(&self) -> u64 {
        self.presence_max_members.saturating_mul(9) / 10
    }
}

/// Where the broker finds a room's rules.
pub trait RoomPolicy: Send + Sync + 'static {
    /// The rules of `room` (a pure lookup: called on every publish and join).
    fn rules(&self, room: &str) -> RoomRules;
}

/// The same rules for every room.
#[derive(Debug, Clone, Copy)]
pub struct FixedRules(pub RoomRules);

impl RoomPolicy for FixedRules {
    fn rules(&self, _room: &str) -> RoomRules {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_water_is_nine_tenths() {
        let mut r = RoomRules::with_history(10, Duration::from_secs(60));
        r.presence_max_members = 1000;
        assert_eq!(r.presence_low_water(), 900);
        r.presence_max_members = 1;
        assert_eq!(r.presence_low_water(), 0);
    }
}
