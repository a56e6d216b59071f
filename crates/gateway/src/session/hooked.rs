//! The back-end hooks a session's commands ask ([`crate::hooks`]): the join hook before
//! a room is joined ([`Session::ask_join`]), the publish hook before a batch of
//! `message`s is stored ([`Session::screen`]). Only called when the hook is configured,
//! and boxed by the callers: sessions without hooks carry none of this.

use std::time::Duration;

use wsgate_protocol::server::StoredEntry;
use wsgate_protocol::{ErrorCode, FrameError};

use super::publishing::Pending;
use super::Session;
use crate::clock::now_ts;
use crate::hooks::answer;
use crate::hooks::calls::{JoinCall, PublishCall, Transport};
use crate::hooks::Verdict;

impl Session {
    /// Whether the join hook lets this session join `room`: refused, `forbidden` with
    /// the hook's message; failed under the `closed` policy, `unavailable`.
    pub(super) async fn ask_join(&self, room: &str) -> Result<(), FrameError> {
        let Some(hook) = &self.node.hooks.join else {
            return Ok(());
        };
        let call = JoinCall {
            hook: "join",
            node_id: &self.node.node_id,
            session_id: &self.session.session_id,
            transport: Transport::Websocket,
            user: &self.session.user,
            room,
        };
        match hook.call(&call, Duration::MAX, answer::join).await {
            Verdict::Allowed(()) | Verdict::FailedOpen => Ok(()),
            Verdict::Refused(r) => Err(FrameError::new(ErrorCode::Forbidden, r.message)),
            Verdict::FailedClosed => Err(FrameError::new(
                ErrorCode::Unavailable,
                "the join hook did not answer; not joined, retry later",
            )),
        }
    }

    /// Asks the publish hook about every `message` of a batch, all at once (one
    /// round trip for the batch, not one per message), and puts the content it
    /// replaces into `entries`. Returns, per message in order, the error that answers
    /// it instead of an `ack` (`forbidden` with the hook's message; `unavailable` when
    /// the call failed under the `closed` policy), or `None` to publish it.
    pub(super) async fn screen(
        &self,
        entries: &mut [(String, StoredEntry)],
        pending: &[Pending],
    ) -> Vec<Option<FrameError>> {
        let Some(hook) = &self.node.hooks.publish else {
            return Vec::new();
        };
        let max = self.node.config.max_message_bytes;
        let calls = entries
            .iter()
            .zip(pending)
            .map(|((room, _), p)| async move {
                let call = PublishCall {
                    hook: "publish",
                    node_id: &self.node.node_id,
                    session_id: &self.session.session_id,
                    user: &self.session.user,
                    room,
                    content: p.content.as_deref().unwrap_or_default(),
                };
                hook.call(&call, Duration::MAX, |b| answer::publish(b, max))
                    .await
            });
        let verdicts = futures_util::future::join_all(calls).await;
        verdicts
            .into_iter()
            .zip(entries.iter_mut())
            .map(|(verdict, (room, entry))| match verdict {
                Verdict::Allowed(None) | Verdict::FailedOpen => None,
                Verdict::Allowed(Some(content)) => {
                    *entry = StoredEntry::message(room, &self.session.user, &content, &now_ts());
                    None
                }
                Verdict::Refused(r) => Some(FrameError::new(ErrorCode::Forbidden, r.message)),
                Verdict::FailedClosed => Some(FrameError::new(
                    ErrorCode::Unavailable,
                    "the publish hook did not answer; not published, retry later",
                )),
            })
            .collect()
    }
}
