//! Per-user commands of a session: the `notifications` page and `mark_read`, and the
//! rooms and last ids saved when the session closes, for the user's next `welcome`.

use serde_json::Value;
use wsgate_protocol::server::{RestoreRoom, ServerFrame};
use wsgate_protocol::FrameError;

use super::Session;
use crate::writer::Delivered;

impl Session {
    pub(super) async fn notifications(
        &self,
        limit: usize,
        before: Option<String>,
        unread_only: bool,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        let page = self
            .node
            .inbox
            .notifications(
                &self.session.user.user_id,
                limit,
                before.as_deref(),
                unread_only,
                self.node.config.notifications_ttl,
                self.node.config.max_out_frame() - 1024,
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        let frame = ServerFrame::Notifications {
            reference,
            items: page.items,
            unread: page.unread,
            more: page.more,
        };
        self.send(&frame, "notifications");
        Ok(())
    }

    pub(super) async fn mark_read(
        &self,
        ids: Option<Vec<String>>,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        let (ids, unread) = self
            .node
            .inbox
            .mark_read(
                &self.session.user.user_id,
                ids.as_deref(),
                &self.session.session_id,
                self.node.config.notifications_ttl,
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        self.send(
            &ServerFrame::MarkedRead {
                reference,
                ids,
                unread,
            },
            "marked_read",
        );
        Ok(())
    }

    /// Saves this session's rooms with the last id it delivered in each (or, where it
    /// delivered none, the `last_id` its `joined` announced) and their epochs, for the
    /// user's next `welcome`: one broker write per closing session, nothing per
    /// delivery.
    pub(super) async fn save_restore(&self, delivered: &Delivered) {
        if self.rooms.is_empty() {
            return;
        }
        let rooms: Vec<RestoreRoom> = self
            .rooms
            .iter()
            .map(|(room, (epoch, joined_last))| {
                let sent = delivered.iter().find(|(r, _)| r == room).map(|(_, id)| *id);
                RestoreRoom {
                    room: room.clone(),
                    last_id: sent.max(*joined_last).map(|id| id.to_string()),
                    epoch: epoch.clone(),
                }
            })
            .collect();
        let ttl = self.node.config.session_state_ttl;
        if let Err(e) = self
            .node
            .inbox
            .save_restore(&self.session.user.user_id, &rooms, ttl)
            .await
        {
            tracing::warn!(error = %e, "could not save the session state");
        }
    }
}
