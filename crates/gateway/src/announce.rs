//! What a room hears when its presence changes, by its mode: a `full` room a
//! `presence` join or leave with the count; a `count` room (or a `full` room over its
//! `presence_max_members`) one `presence_count` per second at most
//! ([`crate::presence_count`]); an `off` room nothing. Every place that adds or
//! removes presence (a join, a leave, a session's close after the grace, a retried
//! removal, a re-add after the registry forgot this node) announces through here.

use std::sync::Arc;

use wsgate_broker::{Channel, PresenceChange};
use wsgate_protocol::server::{Member, PresenceEvent, PresenceMode, ServerFrame};

use crate::node::Node;

/// The mode a room shows: its namespace's, except that a `full` room over its
/// `presence_max_members` shows only its count.
pub fn effective(mode: PresenceMode, over: bool) -> PresenceMode {
    match (mode, over) {
        (PresenceMode::Full, true) => PresenceMode::Count,
        (m, _) => m,
    }
}

/// Announces a presence change of `user` in `room` (only a user's first arrival or
/// last departure changes what the room shows).
pub async fn presence_changed(
    node: &Arc<Node>,
    room: &str,
    event: PresenceEvent,
    user: &Member,
    change: PresenceChange,
) {
    if !change.edge {
        return;
    }
    tracing::debug!(%room, user = %user.user_id, ?event, count = change.count, "presence edge");
    let mode = node.config.namespaces.for_room(room).presence;
    match effective(mode, change.over) {
        PresenceMode::Full => {
            let frame = ServerFrame::Presence {
                room: room.to_owned(),
                event,
                user: user.clone(),
                count: change.count,
            };
            if let Err(e) = node
                .broker
                .publish(&Channel::Room(room.to_owned()), frame.encode().into())
                .await
            {
                tracing::warn!(%room, error = %e, "presence event lost");
            }
        }
        PresenceMode::Count => node.counts.touch(room),
        PresenceMode::Off => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_room_over_its_limit_shows_its_count() {
        use PresenceMode::*;
        assert_eq!(effective(Full, false), Full);
        assert_eq!(effective(Full, true), Count);
        assert_eq!(effective(Count, false), Count);
        assert_eq!(effective(Count, true), Count);
        assert_eq!(effective(Off, true), Off);
    }
}
