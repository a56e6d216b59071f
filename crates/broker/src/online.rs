//! [`Online`]: which users have a session anywhere in the cluster, for the
//! `user_offline` webhook event. Implementations side by side:
//! [`crate::online_memory`] and [`crate::online_redis`] (a hash of the user's sessions
//! under the user's hash tag; a dead node's sessions are removed by the reaper of
//! [`crate::registry_redis`], which records `user_offline` where it took a user's last
//! session).

use async_trait::async_trait;

use crate::error::Result;
use crate::presence::SessionRef;

/// Sessions per user, cluster-wide.
#[async_trait]
pub trait Online: Send + Sync + 'static {
    /// Counts `session` as one of its user's sessions (counting it twice counts it
    /// once).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn connect(&self, session: &SessionRef) -> Result<()>;

    /// Stops counting `session`. Returns whether it was its user's last session
    /// anywhere; `user_offline` is then recorded in the same step, when the recording
    /// selects it (removing a session not counted changes nothing and records
    /// nothing).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`]: nothing changed.
    async fn disconnect(&self, session: &SessionRef) -> Result<bool>;
}
