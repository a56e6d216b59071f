//! [`Inbox`]: what is kept per user between sessions: stored notifications and the
//! state a closed session leaves for the next `welcome`. Implementations side by
//! side: [`crate::inbox_memory`] and [`crate::inbox_redis`].

use std::time::Duration;

use async_trait::async_trait;
use wsgate_protocol::server::{Notification, Restore, RestoreRoom};

use crate::error::Result;

/// A page of a user's notifications.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotificationPage {
    /// Newest first.
    pub items: Vec<Notification>,
    /// The user's unread count.
    pub unread: u64,
    /// `true` when the byte bound cut the page short (page on with `before`).
    pub more: bool,
}

/// Per-user stored state.
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Stores each notification (one per user, newest kept: at most `cap` per user,
    /// each for `ttl`) and publishes a `notification` frame on its user's channel, all
    /// in one step. Returns each user's unread count after it, in order.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: nothing was stored or sent.
    async fn notify(&self, items: &[Notification], cap: usize, ttl: Duration) -> Result<Vec<u64>>;

    /// A page of `user`'s notifications, newest first, at most `limit` of them and
    /// `max_bytes` of their JSON, and the unread count.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn notifications(
        &self,
        user: &str,
        limit: usize,
        before: Option<&str>,
        unread_only: bool,
        ttl: Duration,
        max_bytes: usize,
    ) -> Result<NotificationPage>;

    /// Marks `ids` (or all when `None`) read; publishes `notifications_read` to every
    /// session of the user except `origin_session`. Returns the ids that changed and
    /// the unread count.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn mark_read(
        &self,
        user: &str,
        ids: Option<&[String]>,
        origin_session: &str,
        ttl: Duration,
    ) -> Result<(Vec<String>, u64)>;

    /// `user`'s unread count.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn unread(&self, user: &str, ttl: Duration) -> Result<u64>;

    /// Merges `rooms` into `user`'s saved state (one write), kept for `ttl`.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn save_restore(&self, user: &str, rooms: &[RestoreRoom], ttl: Duration) -> Result<()>;

    /// Takes (reads and deletes) `user`'s saved state.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn take_restore(&self, user: &str) -> Result<Option<Restore>>;
}
