//! The wsgate gateway node.
//!
//! # Layout
//!
//! - [`config`]: flags with `WSGATE_*` environment fallbacks.
//! - [`server`]: the listener, the accept loop and graceful shutdown.
//! - [`node`]: [`node::Node`], the composition root every task shares, and the
//!   dispatcher that fans broker events out.
//! - [`http`]: routing of plain HTTP (health, readiness, stats, metrics, CORS).
//! - [`api`]: the back-end HTTP API (publish, notifications); [`sse`]: Server-Sent
//!   Events for one-way consumers.
//! - [`upgrade`]: the `/ws` handshake and the `WebSocketConfig`.
//! - [`proxy`]: the client address behind trusted proxies.
//! - [`auth`]: identities from HS256 tokens or development query parameters.
//! - [`session`]: one connection's reader loop and the commands it serves;
//!   [`writer`]: its writer task; [`handle`]: what others hold of it.
//! - [`hub`]: local sessions by room and user, and the fan-out itself.
//! - [`subscriptions`]: node-level broker subscriptions with deferred release.
//! - [`ratelimit`], [`metrics`]: per-connection rate limits and Prometheus metrics.

pub mod api;
pub mod auth;
pub mod config;
pub mod echo;
pub mod handle;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod proxy;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod sse;
pub mod subscriptions;
pub mod upgrade;
pub mod writer;

pub use config::{Config, LogFormat};
pub use server::Server;
