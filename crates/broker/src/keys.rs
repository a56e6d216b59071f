//! Every Redis key and channel name of a cluster, made in one place under its prefix,
//! so two clusters can share one Redis. On a Redis Cluster ([`Keys::sharded`]) the same
//! names carry hash tags: `{room}` for everything of a room, `{u:user}` for a user's,
//! `{registry}` for the registry's, and slot tags ([`crate::slots::tag_for`]) for the
//! per-slot store epoch and node room indexes (docs/architecture.md has the table).
//! The table below is the layout on one Redis:
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
//! | `P:webhooks` | stream | webhook events owed (fields `n`, `r`, `u`, `m`), consumer group `wsgate`; on a cluster one per slot in use, `P:webhooks:{TAG}` |
//! | `P:webhooks-dirty` | hash | on a cluster: outbox stream → a counter bumped after each recording (which streams to read) |
//! | `P:user-sessions:{user}` | hash | session id → node, for `user_offline` |
//! | `P:node-users:{node}` | hash | user → the node's sessions counted in `user-sessions` (for the reaper); on a cluster one per node and slot |

use crate::broker::Channel;
use crate::slots;

/// How many sharded channels carry broadcasts in a Redis Cluster: each node publishes
/// its broadcasts on one of them (chosen by its node id) and subscribes all of them,
/// so broadcast load spreads over the slots like rooms do, with no one hot shard.
pub const BROADCAST_CHANNELS: u16 = 16;

/// The names of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The prefix, without the trailing `:`.
    prefix: String,
    /// Redis Cluster layout: every name carries the hash tag of what it belongs to.
    sharded: bool,
    /// Which of the [`BROADCAST_CHANNELS`] this node publishes broadcasts on.
    broadcast_pick: u16,
}

impl Keys {
    /// Names under `prefix` on one Redis (or Sentinel's master).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches(':').to_owned(),
            sharded: false,
            broadcast_pick: 0,
        }
    }

    /// Names under `prefix` on a Redis Cluster, for node `node_id`. Each room's keys
    /// and channel share the hash tag `{room}`, each user's `{u:user}`, the registry's
    /// `{registry}`: one script call stays on one slot. (`prefix` must not hold `{`
    /// or `}`: the configuration refuses it.)
    pub fn sharded(prefix: &str, node_id: &str) -> Self {
        Keys {
            prefix: prefix.trim_end_matches(':').to_owned(),
            sharded: true,
            broadcast_pick: slots::slot(node_id) % BROADCAST_CHANNELS,
        }
    }

    /// Whether names follow the Redis Cluster layout.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// The command that publishes on a channel of this layout (`SPUBLISH` on a
    /// cluster: sharded Pub/Sub, delivered by the channel's shard only).
    pub fn publish_command(&self) -> &'static str {
        if self.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// A script's text for this layout (`SPUBLISH` on a cluster).
    pub fn script(&self, text: &str) -> String {
        if self.sharded {
            text.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
        } else {
            text.to_owned()
        }
    }

    fn room_key(&self, kind: &str, room: &str) -> String {
        if self.sharded {
            format!("{}:{kind}:{{{room}}}", self.prefix)
        } else {
            format!("{}:{kind}:{room}", self.prefix)
        }
    }

    fn user_key(&self, kind: &str, user: &str) -> String {
        if self.sharded {
            format!("{}:{kind}:{{u:{user}}}", self.prefix)
        } else {
            format!("{}:{kind}:{user}", self.prefix)
        }
    }

    fn registry_key(&self, kind: &str) -> String {
        if self.sharded {
            format!("{}:{{registry}}:{kind}", self.prefix)
        } else {
            format!("{}:{kind}", self.prefix)
        }
    }

    fn broadcast_channel(&self, i: u16) -> String {
        let slot = (u32::from(i) * u32::from(slots::SLOTS) / u32::from(BROADCAST_CHANNELS)) as u16;
        format!("{}:broadcast:{{{}}}", self.prefix, slots::tag_for(slot))
    }

    /// The Pub/Sub channel of `channel` (on a cluster, `Broadcast` is the one of the
    /// broadcast channels this node publishes on).
    pub fn channel(&self, channel: &Channel) -> String {
        match channel {
            Channel::Broadcast if self.sharded => self.broadcast_channel(self.broadcast_pick),
            Channel::Broadcast => format!("{}:broadcast", self.prefix),
            Channel::Room(r) => self.room_key("room", r),
            Channel::User(u) => self.user_key("user", u),
        }
    }

    /// Every channel name a node subscribes for `channel` (all the broadcast channels
    /// on a cluster).
    pub fn subscriptions(&self, channel: &Channel) -> Vec<String> {
        match channel {
            Channel::Broadcast if self.sharded => (0..BROADCAST_CHANNELS)
                .map(|i| self.broadcast_channel(i))
                .collect(),
            other => vec![self.channel(other)],
        }
    }

    /// The [`Channel`] a Pub/Sub channel name stands for, if it is one of ours.
    pub fn parse_channel(&self, name: &str) -> Option<Channel> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        if self.sharded {
            if rest.starts_with("broadcast:{") {
                return Some(Channel::Broadcast);
            }
            let tagged = |kind: &str| rest.strip_prefix(kind)?.strip_suffix('}');
            if let Some(room) = tagged("room:{") {
                return Some(Channel::Room(room.to_owned()));
            }
            return tagged("user:{u:").map(|u| Channel::User(u.to_owned()));
        }
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
        self.room_key("history", room)
    }

    /// The store's own epoch (random, made once; gone when Redis loses its data) as
    /// `room`'s scripts read it: on a cluster, the one of the room's slot.
    pub fn store_epoch(&self, room: &str) -> String {
        if self.sharded {
            let tag = slots::tag_for(slots::slot(&self.history(room)));
            format!("{}:store-epoch:{{{tag}}}", self.prefix)
        } else {
            format!("{}:store-epoch", self.prefix)
        }
    }

    /// A room's history metadata (epoch).
    pub fn room_meta(&self, room: &str) -> String {
        self.room_key("room-meta", room)
    }

    /// A room's presence entries by session.
    pub fn presence(&self, room: &str) -> String {
        self.room_key("presence", room)
    }

    /// A room's session counts by user.
    pub fn presence_users(&self, room: &str) -> String {
        self.room_key("presence-users", room)
    }

    /// A room's display names by user (what `members` pages scan).
    pub fn presence_names(&self, room: &str) -> String {
        self.room_key("presence-names", room)
    }

    /// Set while a room is over its `presence_max_members`.
    pub fn presence_over(&self, room: &str) -> String {
        self.room_key("presence-over", room)
    }

    /// A room's `presence_count` slot (held for a period by whoever publishes).
    pub fn presence_count_slot(&self, room: &str) -> String {
        self.room_key("presence-count-slot", room)
    }

    /// The count a room's last `presence_count` carried.
    pub fn presence_count_last(&self, room: &str) -> String {
        self.room_key("presence-count-last", room)
    }

    /// A room's typing flags.
    pub fn typing(&self, room: &str) -> String {
        self.room_key("typing", room)
    }

    /// The node registry.
    pub fn nodes(&self) -> String {
        self.registry_key("nodes")
    }

    /// A node's liveness key.
    pub fn node_alive(&self, node: &str) -> String {
        self.registry_key(&format!("node:{node}"))
    }

    /// The index of the rooms a node has presence entries in that holds `room`: one
    /// hash per node on one Redis; on a cluster one per node and slot, in the room's
    /// slot (so the presence scripts keep it in the same call).
    pub fn node_rooms(&self, node: &str, room: &str) -> String {
        if self.sharded {
            self.node_rooms_in(node, slots::slot(&self.history(room)))
        } else {
            format!("{}:node-room-counts:{node}", self.prefix)
        }
    }

    /// On a cluster, the index of `node`'s rooms in `slot`.
    pub fn node_rooms_in(&self, node: &str, slot: u16) -> String {
        format!(
            "{}:node-rooms:{{{}}}:{node}",
            self.prefix,
            slots::tag_for(slot)
        )
    }

    /// On a cluster, the slots `node` has room indexes in (a set, for the reaper).
    pub fn node_slots(&self, node: &str) -> String {
        self.registry_key(&format!("node-slots:{node}"))
    }

    /// A user's stored notifications.
    pub fn notifications(&self, user: &str) -> String {
        self.user_key("notifications", user)
    }

    /// What a publish with an idempotency key answered (for its retries); on a
    /// cluster in the slot of the channel it publishes on.
    pub fn idempotency(&self, channel: &Channel, key: &str) -> String {
        if self.sharded {
            let tag = slots::tag_for(slots::slot(&self.channel(channel)));
            format!("{}:idem:{{{tag}}}:{key}", self.prefix)
        } else {
            format!("{}:idem:{key}", self.prefix)
        }
    }

    /// A user's saved session state (rooms and last ids).
    pub fn restore(&self, user: &str) -> String {
        self.user_key("restore", user)
    }

    /// The lock for reaping a dead node.
    pub fn reap_lock(&self, node: &str) -> String {
        self.registry_key(&format!("reap:{node}"))
    }

    /// The webhook outbox `room`'s transitions are recorded in: one stream on one
    /// Redis; on a cluster, the one of the room's slot (a script touches one slot).
    pub fn webhooks(&self, room: &str) -> String {
        self.webhooks_beside(&self.history(room))
    }

    /// The webhook outbox `user`'s `user_offline` is recorded in.
    pub fn webhooks_of_user(&self, user: &str) -> String {
        self.webhooks_beside(&self.user_sessions(user))
    }

    fn webhooks_beside(&self, key: &str) -> String {
        if self.sharded {
            self.webhooks_in(slots::slot(key))
        } else {
            format!("{}:webhooks", self.prefix)
        }
    }

    /// On a cluster, the webhook outbox of `slot`.
    pub fn webhooks_in(&self, slot: u16) -> String {
        format!("{}:webhooks:{{{}}}", self.prefix, slots::tag_for(slot))
    }

    /// On a cluster, the outbox streams that may hold events (stream → a counter
    /// bumped after each recording there).
    pub fn webhooks_dirty(&self) -> String {
        self.registry_key("webhooks-dirty")
    }

    /// A user's sessions (session id → node), for `user_offline`.
    pub fn user_sessions(&self, user: &str) -> String {
        self.user_key("user-sessions", user)
    }

    /// The index of the users `node` has sessions of that holds `user`: one hash per
    /// node on one Redis; on a cluster one per node and slot, in the user's slot.
    pub fn node_users(&self, node: &str, user: &str) -> String {
        if self.sharded {
            self.node_users_in(node, slots::slot(&self.user_sessions(user)))
        } else {
            format!("{}:node-users:{node}", self.prefix)
        }
    }

    /// On a cluster, the index of `node`'s users in `slot`.
    pub fn node_users_in(&self, node: &str, slot: u16) -> String {
        format!(
            "{}:node-users:{{{}}}:{node}",
            self.prefix,
            slots::tag_for(slot)
        )
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

    #[test]
    fn a_cluster_keeps_each_room_and_user_on_one_slot() {
        use crate::slots::slot;
        let k = Keys::sharded("wsgate", "gw-1");
        for ch in [
            Channel::Broadcast,
            Channel::Room("team:eng".into()),
            Channel::User("auth0|4}2{".into()),
        ] {
            assert_eq!(k.parse_channel(&k.channel(&ch)), Some(ch));
        }
        let room = "team:eng";
        let s = slot(&k.channel(&Channel::Room(room.into())));
        for key in [
            k.history(room),
            k.room_meta(room),
            k.store_epoch(room),
            k.presence(room),
            k.presence_users(room),
            k.presence_names(room),
            k.presence_over(room),
            k.presence_count_slot(room),
            k.presence_count_last(room),
            k.typing(room),
            k.node_rooms("gw-1", room),
            k.idempotency(&Channel::Room(room.into()), "room:team:eng:k1"),
            k.webhooks(room),
        ] {
            assert_eq!(slot(&key), s, "{key}");
        }
        let user = "auth0|4}2{";
        let u = slot(&k.channel(&Channel::User(user.into())));
        for key in [
            k.notifications(user),
            k.restore(user),
            k.idempotency(&Channel::User(user.into()), "user:x:k"),
            k.user_sessions(user),
            k.node_users("gw-1", user),
            k.webhooks_of_user(user),
        ] {
            assert_eq!(slot(&key), u, "{key}");
        }
        let r = slot(&k.nodes());
        for key in [
            k.node_alive("gw-2"),
            k.reap_lock("gw-2"),
            k.node_slots("gw-2"),
            k.webhooks_dirty(),
        ] {
            assert_eq!(slot(&key), r, "{key}");
        }
        // Broadcasts: sixteen channels over sixteen parts of the slot space.
        let subs = k.subscriptions(&Channel::Broadcast);
        assert_eq!(subs.len(), 16);
        let mut spread: Vec<u16> = subs.iter().map(|c| slot(c) / 1024).collect();
        spread.dedup();
        assert_eq!(spread, (0..16).collect::<Vec<_>>());
        assert!(subs.contains(&k.channel(&Channel::Broadcast)));
        assert!(subs
            .iter()
            .all(|c| k.parse_channel(c) == Some(Channel::Broadcast)));
        assert_eq!(
            k.script("redis.call('PUBLISH', c, m)"),
            "redis.call('SPUBLISH', c, m)"
        );
        // One Redis keeps the names it always had.
        let one = Keys::new("wsgate");
        assert_eq!(one.history(room), "wsgate:history:team:eng");
        assert_eq!(one.store_epoch(room), "wsgate:store-epoch");
        assert_eq!(one.node_rooms("gw-1", room), "wsgate:node-room-counts:gw-1");
        assert_eq!(one.webhooks(room), one.webhooks_of_user("u"));
        assert_eq!(one.node_users("gw-1", "u"), "wsgate:node-users:gw-1");
        assert_eq!(
            one.idempotency(&Channel::Broadcast, "broadcast:k"),
            "wsgate:idem:broadcast:k"
        );
        assert_eq!(
            one.subscriptions(&Channel::Broadcast),
            vec!["wsgate:broadcast"]
        );
    }
}
