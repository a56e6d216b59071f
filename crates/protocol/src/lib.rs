//! The wsgate wire protocol, version 1: pure data, no I/O.
//!
//! # Layout
//!
//! - [`client`]: parsing one client text frame into a typed [`client::ClientFrame`],
//!   with every validation rule of the contract (names, sizes, field types).
//! - [`server`]: the frames the server sends, and [`server::StoredEntry`], a message
//!   encoded once *without* its id so that the broker can splice the id in and hand
//!   the final bytes to every recipient.
//! - [`id`]: [`MessageId`], the `ms-seq` ids that sort in publish order.
//! - [`names`]: room names, user ids and history epochs.
//! - [`sse`]: Server-Sent Events: the multi-room cursor and each event's text.
//! - [`error`]: the `error` frame codes; [`close`]: the WebSocket close codes.
//!
//! The contract itself is `docs/protocol.md` in the repository.

pub mod client;
pub mod close;
pub mod error;
pub mod id;
pub mod names;
pub mod server;
pub mod sse;

pub use close::CloseCode;
pub use error::{ErrorCode, FrameError};
pub use id::MessageId;

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
