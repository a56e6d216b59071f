//! [`Presence`]: who is in a room (counted per session, announced per user) and who
//! is typing there. Implementations side by side: [`crate::presence_memory`] and
//! [`crate::presence_redis`].

use std::time::Duration;

use async_trait::async_trait;
use wsgate_protocol::server::Member;

use crate::error::Result;

/// Most users flagged as typing in one room at once: a further one is not listed, so
/// neither the stored flags nor the `typing` frame grow with the room.
pub const TYPING_MAX: usize = 20;

/// One session's membership, for presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// The session's id (unique across the cluster).
    pub session_id: String,
    /// Who the session belongs to.
    pub user: Member,
}

/// Room membership and typing flags, cluster-wide.
///
/// Presence counts sessions, so "first session of a user" and "last session of a
/// user" are answered for the whole cluster.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records that a session is in `room`. Returns `true` when it is the user's
    /// first session there (the room should hear a presence `join`).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn add(&self, room: &str, session: &SessionRef) -> Result<bool>;

    /// Records that a session left `room`. Returns `true` when it was the user's
    /// last session there (the room should hear a presence `leave`).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn remove(&self, room: &str, session: &SessionRef) -> Result<bool>;

    /// The distinct users present in `room`, ordered by user id.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn members(&self, room: &str) -> Result<Vec<Member>>;

    /// Sets or clears `user`'s typing flag in `room`; a set flag expires after `ttl`
    /// unless set again; at most [`TYPING_MAX`] users are flagged (a further one is
    /// not). Returns who is typing now.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn typing_set(
        &self,
        room: &str,
        user: &Member,
        typing: bool,
        ttl: Duration,
    ) -> Result<Vec<Member>>;

    /// Drops expired typing flags of `room`. Returns who is typing now when a flag was
    /// dropped, `None` when nothing changed.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn typing_expire(&self, room: &str) -> Result<Option<Vec<Member>>>;
}
