//! The broker: how gateway nodes share rooms, history and presence.
//!
//! # Layout
//!
//! - [`broker`]: the [`Broker`] trait, the contract every implementation keeps
//!   (node-level subscribe/unsubscribe, publish that returns the message id, history
//!   and exact recovery, presence, typing), and the types it speaks in.
//! - [`memory`]: [`MemoryBroker`], the embedded broker of a single node.
//! - [`redis`]: [`RedisBroker`], the cluster broker: Pub/Sub for fan-out, Streams for
//!   history, hashes for presence; [`keys`] names every key and channel it uses, and
//!   [`scripts`] holds its Lua scripts.
//! - [`error`]: the crate's [`Error`].
//!
//! Inbound traffic (what other publishers sent on channels this node subscribed to)
//! arrives as [`BrokerEvent`]s through one channel handed to the broker when it is
//! built, so the gateway has one place where fan-out starts.

pub mod broker;
pub mod error;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod scripts;

pub use broker::{
    open_envelope, skip_envelope, Broker, BrokerEvent, Channel, ClusterStats, NodeReport, Replay,
    RoomState, SessionRef,
};
pub use error::{Error, Result};
pub use memory::MemoryBroker;
pub use redis::{RedisBroker, RedisSettings};
