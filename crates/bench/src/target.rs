//! [`Target`]: which server, and so which wire format, the bench talks to.

use serde::Serialize;

/// Which server the bench talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    /// The wsgate protocol (`/ws`, JSON frames).
    Wsgate,
    /// Socket.IO 4 over a WebSocket (the peer server in crates/bench/peers).
    Socketio,
}
