//! The wsgate gateway node.
//!
//! # Layout
//!
//! The route of a room message, top to bottom (each file's first line says where it
//! sits):
//!
//! - [`server`]: the listener, the accept loop and graceful shutdown ([`drain`]
//!   closes sessions one by one, [`admission`] paces new ones); it starts the
//!   node's background tasks: [`dispatch`] (broker events → the hub, and
//!   [`gap_repair`] when the broker's link had a gap), [`heartbeat`]
//!   (the cluster registry), [`stats_room`] (the dashboard's feed) and
//!   [`presence_retry`] (presence removals that failed, retried until they hold),
//!   [`webhooks`] (the delivery of the webhook events the broker records).
//! - [`router`]: every HTTP request to its handler: [`upgrade`] (the `/ws` handshake),
//!   [`sse`] (`/events`), [`api`] (the back-end API), [`health`] (`/readyz`,
//!   `/api/stats`), [`assets`] (the demo pages and `client.js`); [`identify`] says who
//!   a `/ws` or `/events` request is (the token, then the connect hook).
//! - [`session`]: one `/ws` connection: its read loop and its commands, one group per
//!   file; [`echo`] is the echo endpoint on the same socket code ([`socket`]).
//! - Shared by every kind of session: [`lifecycle`] (open and close), [`join`] (join
//!   with catch-up and rollback), [`writer`] (the socket writer task).
//! - [`node`]: [`node::Node`], the composition root every task shares: config, the
//!   broker's four concerns, [`hub`] (local sessions by room and user, and the
//!   fan-out), [`subscriptions`] (node-level broker subscriptions), [`slot`]
//!   (connection limits), [`metrics`], [`auth`], [`hooks`] (the back-end hooks: signed
//!   calls that decide on connects, joins and publishes).
//! - Leaves: [`handle`] and [`queue`] (what the hub holds of a session), [`config`],
//!   [`response`] and [`query`] (HTTP building blocks), [`proxy`] (client addresses),
//!   [`ratelimit`], [`clock`], [`reserved`] (room names with a meaning),
//!   [`pending_removals`] (presence removals waiting for a retry), [`http_client`]
//!   (outbound HTTP(S): the JWKS fetch, the hooks' calls).

pub mod admission;
pub mod announce;
pub mod api;
pub mod assets;
pub mod auth;
pub mod clock;
pub mod config;
pub mod count_ticker;
pub mod dispatch;
pub mod drain;
pub mod echo;
pub mod gap_repair;
pub mod grace_queue;
pub mod handle;
pub mod health;
pub mod heartbeat;
pub mod hooks;
pub mod http_client;
pub mod hub;
pub mod identify;
pub mod join;
pub mod lifecycle;
pub mod metrics;
pub mod namespaces;
pub mod node;
pub mod pending_removals;
pub mod presence_count;
pub mod presence_grace;
pub mod presence_retry;
pub mod proxy;
pub mod query;
pub mod queue;
pub mod ratelimit;
pub mod reserved;
pub mod response;
pub mod router;
pub mod server;
pub mod session;
pub mod slot;
pub mod socket;
pub mod sse;
pub mod stats_room;
pub mod subscriptions;
pub mod upgrade;
pub mod webhooks;
pub mod writer;

pub use config::{Config, LogFormat};
pub use server::Server;
