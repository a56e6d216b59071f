//! Room names with a meaning to the gateway itself.

/// The reserved room where every node publishes its stats once a second, for the
/// dashboard. Read-only for clients; joinable with a token granting it (or by anyone
/// in development mode).
pub const SYSTEM_ROOM: &str = "system:stats";
