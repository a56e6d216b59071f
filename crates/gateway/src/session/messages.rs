//! Message commands of a session: `message` into a joined room (stored, acked),
//! `direct` to every session of a user, and `history` pages.

use serde_json::Value;
use wsgate_broker::Channel;
use wsgate_protocol::server::{history_frame, ServerFrame, StoredEntry};
use wsgate_protocol::{ErrorCode, FrameError, MessageId};

use super::Session;
use crate::clock::now_ts;

impl Session {
    pub(super) fn message(
        &mut self,
        room: String,
        content: String,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        self.require_writable(&room)?;
        if !self.node.config.namespaces.for_room(&room).client_publish {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                "clients may not publish in this room (client_publish = false)",
            ));
        }
        let entry = StoredEntry::message(&room, &self.session.user, &content, &now_ts());
        // Answered later, in order (`publishing`): the next frame is read meanwhile.
        let hooked = self.node.hooks.publish.is_some().then_some(content);
        self.start_publish(room, entry, reference, hooked);
        Ok(())
    }

    pub(super) async fn direct(
        &mut self,
        to: String,
        content: String,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        let id = uuid::Uuid::new_v4().to_string();
        let frame = ServerFrame::Direct {
            id: id.clone(),
            from: self.session.user.clone(),
            content,
            ts: now_ts(),
        };
        self.node
            .broker
            .publish(&Channel::User(to), frame.encode().into())
            .await
            .map_err(|e| self.unavailable(e))?;
        if reference.is_some() {
            self.send(
                &ServerFrame::Ack {
                    reference,
                    room: None,
                    id,
                },
                "ack",
            );
        }
        Ok(())
    }

    pub(super) async fn history(
        &mut self,
        room: String,
        before: Option<MessageId>,
        limit: usize,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        self.require_access(&room)?;
        // Bounded in bytes as well as count, so the reply fits the outgoing frame
        // limit whatever the messages' sizes; `more` says the bound cut it.
        let page = self
            .node
            .broker
            .history(
                &room,
                before,
                limit,
                self.node.config.max_out_frame() - 1024,
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        // The stored frames are spliced in as they are: no decoding, no re-encoding.
        let text = history_frame(
            reference.as_ref(),
            &room,
            page.frames
                .iter()
                .filter_map(|f| std::str::from_utf8(f).ok()),
            page.more,
        );
        self.send_text(text, "history");
        Ok(())
    }
}
