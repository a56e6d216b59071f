//! `refresh`: the session takes a new token without reconnecting. The token is checked
//! as a handshake's is ([`crate::auth::Authenticator::verify_refreshing`]) and must name
//! the same user; its `exp` moves the writer's expiry timer (and with it the next
//! `refresh_needed`), its `rooms` claim replaces the session's grants, and private rooms
//! it no longer grants are left. The display name stays the session's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use wsgate_protocol::server::ServerFrame;
use wsgate_protocol::{CloseCode, ErrorCode, FrameError};

use super::Session;
use crate::auth::Identity;
use crate::node::Node;
use crate::writer::expiry::Expiry;

/// The `reason` of a `left` sent because a refreshed token no longer grants the room.
const REVOKED: &str = "revoked";

/// The expiry a session with this identity is held to (none in development mode).
pub(super) fn expiry_of(node: &Node, identity: &Identity) -> Option<Arc<Expiry>> {
    let at = identity.expires_at?;
    let notices = node
        .metrics
        .frames_out
        .get_or_create(&vec![("type", "refresh_needed")])
        .clone();
    Some(Expiry::new(
        at,
        Duration::from_secs(node.config.jwt.refresh_notice_s),
        notices,
    ))
}

impl Session {
    /// Serves `refresh`: `refreshed` with the new `exp`, or `invalid_field` (the token
    /// does not verify), `forbidden` (another user's token; development mode). A refusal
    /// leaves the session's token, grants and expiry as they were.
    pub(super) async fn refresh(
        &mut self,
        token: String,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        let Some(expiry) = self.expiry.clone() else {
            return Err(development_mode());
        };
        if self.too_late(&expiry) {
            return Ok(());
        }
        let verified = self.node.auth.verify_refreshing(&token).await;
        drop(token);
        // The check may have waited for a key set fetch.
        if self.too_late(&expiry) {
            return Ok(());
        }
        let identity = match verified {
            None => return Err(development_mode()),
            Some(Err(e)) => return Err(FrameError::invalid(format!("token refused: {e}"))),
            Some(Ok(identity)) => identity,
        };
        if identity.user.user_id != self.identity.user.user_id {
            tracing::debug!("refresh refused: the token names another user");
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                "the token is for another user (sub); the session keeps its token",
            ));
        }
        let Some(at) = identity.expires_at else {
            return Err(FrameError::invalid("token refused: no exp"));
        };
        self.identity.grants = identity.grants;
        self.identity.expires_at = Some(at);
        expiry.set(at);
        tracing::debug!(exp = expiry.exp(), "token refreshed");
        self.revoke_rooms().await;
        self.send(
            &ServerFrame::Refreshed {
                reference,
                exp: expiry.exp(),
            },
            "refreshed",
        );
        Ok(())
    }

    /// Whether the session's token has expired already: then no refresh saves it (the
    /// writer closes it with 1008, which this makes sure of).
    fn too_late(&self, expiry: &Expiry) -> bool {
        let late = expiry.has_passed(SystemTime::now());
        if late {
            self.handle.control.close(CloseCode::Policy);
        }
        late
    }

    /// Leaves the rooms the session's grants no longer open (presence `leave` to the
    /// room, as for a `leave`), telling the client with `left` `{reason: "revoked"}`.
    async fn revoke_rooms(&mut self) {
        let gone: Vec<String> = self
            .rooms
            .keys()
            .filter(|room| self.require_access(room).is_err())
            .cloned()
            .collect();
        for room in gone {
            tracing::debug!(%room, "left: the refreshed token does not grant it");
            self.leave_room(&room, false).await;
            self.send(
                &ServerFrame::Left {
                    reference: None,
                    room,
                    reason: Some(REVOKED.to_owned()),
                },
                "left",
            );
        }
    }
}

fn development_mode() -> FrameError {
    FrameError::new(
        ErrorCode::Forbidden,
        "this gateway runs without tokens (development mode): there is no token to refresh",
    )
}
