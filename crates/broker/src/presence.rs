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

/// What an add or a remove did to a room's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceChange {
    /// On an add: it was the user's first session in the room (a `join` is owed); on
    /// a remove: it was the user's last (a `leave` is owed).
    pub edge: bool,
    /// Distinct users in the room after the change.
    pub count: u64,
    /// The room is over its `presence_max_members` (a `full` room then shows only its
    /// count, until it is back to nine tenths of the limit).
    pub over: bool,
}

/// One page of a room's distinct users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersPage {
    /// At most the page's limit, each user once.
    pub members: Vec<Member>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

/// What an add did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// The session is in the room, with the first page of its members asked for.
    In(PresenceChange, MembersPage),
    /// The room holds its `max_members` distinct users and the session's user is not
    /// one of them: nothing was added.
    Full,
}

/// Whether a count-mode room's `presence_count` is due now ([`Presence::count_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountDue {
    /// Publish this count now: this caller holds the room's slot for the period.
    Publish(u64),
    /// The count is the one published last: nothing to publish.
    Unchanged,
    /// Another publish holds the slot: ask again after this long.
    Later(std::time::Duration),
}

/// Most users a [`Presence::members`] page may hold.
pub const MEMBERS_PAGE_MAX: usize = 1000;

/// Room membership and typing flags, cluster-wide.
///
/// Presence counts sessions, so "first session of a user" and "last session of a
/// user" are answered for the whole cluster. No operation reads a room's whole member
/// set: each costs the same in a room of 10 and of 100,000 (the rooms' limits come
/// from the [`crate::RoomPolicy`] the backend was built with).
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records that a session is in `room`, unless the room is full (its
    /// `max_members` distinct users, the session's user not among them), and returns
    /// the first page of at most `first_page` members (none for 0, nor when the room is
    /// over its `presence_max_members`: it lists no members then).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn add(&self, room: &str, session: &SessionRef, first_page: usize) -> Result<Added>;

    /// Records that a session left `room`.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn remove(&self, room: &str, session: &SessionRef) -> Result<PresenceChange>;

    /// The room's distinct users now, and whether it is over its
    /// `presence_max_members`.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn count(&self, room: &str) -> Result<(u64, bool)>;

    /// A page of at most `limit` (≤ [`MEMBERS_PAGE_MAX`]) distinct users, from
    /// `cursor` (a page's `next_cursor`; `None` for the first page). Users who join or
    /// leave during a scan may be missed or seen twice across pages, never twice in
    /// one page; a full scan of a room that does not change lists each user once.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]; [`crate::Error::Invalid`] for a cursor this
    /// backend did not make.
    async fn members(&self, room: &str, cursor: Option<&str>, limit: usize) -> Result<MembersPage>;

    /// Takes the room's `presence_count` slot for `period` if it is free, cluster-wide:
    /// the caller that gets [`CountDue::Publish`] publishes the count; one that gets
    /// [`CountDue::Later`] asks again then, so the last change is always published,
    /// at most once per period per room.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn count_due(&self, room: &str, period: std::time::Duration) -> Result<CountDue>;

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
