//! The broker: how gateway nodes share rooms, history, presence and per-user state.
//!
//! # Layout
//!
//! One narrow trait per concern, each with its embedded (memory) and Redis
//! implementation beside it, held to one conformance suite (`tests/conformance`):
//!
//! | concern | trait | memory | Redis |
//! |---|---|---|---|
//! | publishing, subscriptions, history | [`broker`] | [`broker_memory`] | [`broker_redis`] |
//! | presence and typing | [`presence`] | [`presence_memory`] | [`presence_redis`] |
//! | notifications, saved session state | [`inbox`] | [`inbox_memory`] | [`inbox_redis`] |
//! | the node registry | [`registry`] | [`registry_memory`] | [`registry_redis`] |
//! | webhook events owed | [`outbox`] | [`outbox_memory`] | [`outbox_redis`] |
//! | sessions per user (`user_offline`) | [`online`] | [`online_memory`] | [`online_redis`] |
//!
//! [`backend::Backend`] builds them together over one store. Presence, online counts
//! and the reaper record webhook events in the outbox in the same step as the
//! transition they report (the Lua of [`scripts_webhooks`]). What they share:
//! in memory, [`bus`] (the in-process Pub/Sub); in Redis, [`redis_link`] (the command
//! connection and settings, over the topology of [`redis_conn`]: one Redis, Sentinel
//! or a Redis Cluster) and [`redis_pubsub`] / [`redis_sharded`] (the node's Pub/Sub:
//! one connection, or sharded Pub/Sub on a cluster), with every key in [`keys`] (hash
//! slots in [`slots`]) and every script in [`scripts`]. [`envelope`] marks a
//! user-channel frame that one session must skip; [`error`] is the crate's [`Error`].
//!
//! Inbound traffic (what other publishers sent on channels this node subscribed to)
//! arrives as [`BrokerEvent`]s through one channel handed over when the backend is
//! built, so the gateway has one place where fan-out starts.

pub mod backend;
pub mod broker;
pub mod broker_memory;
pub mod broker_redis;
pub mod bus;
pub mod envelope;
pub mod error;
pub mod inbox;
pub mod inbox_memory;
pub mod inbox_redis;
pub mod keys;
pub mod once_memory;
pub mod online;
pub mod online_memory;
pub mod online_redis;
pub mod outbox;
pub mod outbox_memory;
pub mod outbox_redis;
pub mod presence;
pub mod presence_memory;
pub mod presence_redis;
pub mod redis_conn;
pub mod redis_link;
pub mod redis_pubsub;
pub mod redis_sharded;
pub mod registry;
pub mod registry_memory;
pub mod registry_redis;
pub mod rules;
pub mod scripts;
pub mod scripts_webhooks;
pub mod slots;

pub use backend::Backend;
pub use broker::{Broker, BrokerEvent, Channel, HistoryPage, Replay, RoomState};
pub use envelope::{open_envelope, skip_envelope};
pub use error::{Error, Result};
pub use inbox::{Inbox, NotificationPage};
pub use online::Online;
pub use outbox::{Event, EventName, EventSet, Outbox, Recording, Taken};
pub use presence::{
    Added, CountDue, MembersPage, Presence, PresenceChange, SessionRef, MEMBERS_PAGE_MAX,
    TYPING_MAX,
};
pub use redis_conn::RedisTopology;
pub use redis_link::RedisSettings;
pub use registry::{ClusterStats, NodeReport, Registry};
pub use rules::{FixedRules, RoomPolicy, RoomRules};
