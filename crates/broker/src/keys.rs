//! Every Redis key and channel name of a cluster, made in one place under its prefix,
//! so two clusters can share one Redis.
//!
//! | name | type | holds |
//! |---|---|---|
//! | `P:broadcast` | channel | frames for every connection of the cluster |
//! | `P:room:{room}` | channel | a room's frames (messages, presence, typing) |
//! | `P:user:{user}` | channel | frames for every session of one user (direct) |
//! | `P:history:{room}` | stream | the room's stored frames: fields `k` (kind), `b` (body without id) |
//! | `P:room-meta:{room}` | hash | `epoch` of the history and `stream` (1 once it held messages); only for rooms with messages |
//! | `P:store-epoch` | string | the store's epoch, the base of the epoch of rooms without messages |
//! | `P:presence:{room}` | hash | session id → `{"u","n","node"}` |
//! | `P:presence-users:{room}` | hash | user id → number of sessions in the room |
//! | `P:typing:{room}` | hash | user id → `expiry_ms|name` |
//! | `P:nodes` | hash | node id → `{"connections","ts"}`, the registry |
//! | `P:node:{node}` | string | exists while the node is alive (expires) |
//! | `P:node-room-counts:{node}` | hash | room → the node's presence entries there (for the reaper); a room goes at 0 |
//! | `P:reap:{node}` | string | lock held by the node that reaps a dead node |
//! | `P:notifications:{user}` | list | `ms|r|id|json` items, newest first, capped, expiring |
//! | `P:restore:{user}` | hash | room → `{"room","last_id","epoch"}` saved when sessions close |

use crate::broker::Channel;

/// The names of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The prefix, without the trailing `:`.
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches(':').to_owned(),
        }
    }

    /// The Pub/Sub channel of `channel`.
    pub fn channel(&self, channel: &Channel) -> String {
        match channel {
            Channel::Broadcast => format!("{}:broadcast", self.prefix),
            Channel::Room(r) => format!("{}:room:{r}", self.prefix),
            Channel::User(u) => format!("{}:user:{u}", self.prefix),
        }
    }

    /// The [`Channel`] a Pub/Sub channel name stands for, if it is one of ours.
    pub fn parse_channel(&self, name: &str) -> Option<Channel> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        if rest == "broadcast" {
            return Some(Channel::Broadcast);
        }
        if let Some(room) = rest.strip_prefix("room:") {
            return Some(Channel::Room(room.to_owned()));
        }
        rest.strip_prefix("user:")
            .map(|u| Channel::User(u.to_owned()))
    }

    /// A room's history stream.
    pub fn history(&self, room: &str) -> String {
        format!("{}:history:{room}", self.prefix)
    }

    /// The store's own epoch (random, made once; gone when Redis loses its data).
    pub fn store_epoch(&self) -> String {
        format!("{}:store-epoch", self.prefix)
    }

    /// A room's history metadata (epoch).
    pub fn room_meta(&self, room: &str) -> String {
        format!("{}:room-meta:{room}", self.prefix)
    }

    /// A room's presence entries by session.
    pub fn presence(&self, room: &str) -> String {
        format!("{}:presence:{room}", self.prefix)
    }

    /// A room's session counts by user.
    pub fn presence_users(&self, room: &str) -> String {
        format!("{}:presence-users:{room}", self.prefix)
    }

    /// A room's display names by user (what `members` pages scan).
    pub fn presence_names(&self, room: &str) -> String {
        format!("{}:presence-names:{room}", self.prefix)
    }

    /// Set while a room is over its `presence_max_members`.
    pub fn presence_over(&self, room: &str) -> String {
        format!("{}:presence-over:{room}", self.prefix)
    }

    /// A room's `presence_count` slot (held for a period by whoever publishes).
    pub fn presence_count_slot(&self, room: &str) -> String {
        format!("{}:presence-count-slot:{room}", self.prefix)
    }

    /// The count a room's last `presence_count` carried.
    pub fn presence_count_last(&self, room: &str) -> String {
        format!("{}:presence-count-last:{room}", self.prefix)
    }

    /// A room's typing flags.
    pub fn typing(&self, room: &str) -> String {
        format!("{}:typing:{room}", self.prefix)
    }

    /// The node registry.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// A node's liveness key.
    pub fn node_alive(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// The rooms a node has presence entries in.
    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}:node-room-counts:{node}", self.prefix)
    }

    /// A user's stored notifications.
    pub fn notifications(&self, user: &str) -> String {
        format!("{}:notifications:{user}", self.prefix)
    }

    /// What a publish with an idempotency key answered (for its retries).
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// A user's saved session state (rooms and last ids).
    pub fn restore(&self, user: &str) -> String {
        format!("{}:restore:{user}", self.prefix)
    }

    /// The lock for reaping a dead node.
    pub fn reap_lock(&self, node: &str) -> String {
        format!("{}:reap:{node}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip() {
        let k = Keys::new("wsgate:");
        for ch in [
            Channel::Broadcast,
            Channel::Room("team:eng".into()),
            Channel::User("auth0|42".into()),
        ] {
            assert_eq!(k.parse_channel(&k.channel(&ch)), Some(ch));
        }
        assert_eq!(k.channel(&Channel::Room("a".into())), "wsgate:room:a");
        assert_eq!(k.parse_channel("other:room:a"), None);
        assert_eq!(k.parse_channel("wsgate:history:a"), None);
        assert_eq!(Keys::new("a").history("r"), "a:history:r");
    }
}
