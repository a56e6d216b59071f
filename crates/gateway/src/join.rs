//! Joining a room with catch-up, shared by `/ws` sessions and SSE streams: the member
//! is put in the hub with its live frames held back, the node subscribes, the replay
//! (or the room's state) is read, and the held-back frames follow the replay without
//! a gap or a duplicate. A join that fails before [`RoomJoin::finish`] is rolled back
//! when dropped, so a failed join never leaves a member that receives nothing.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_broker::{Channel, RoomState};
use wsgate_protocol::MessageId;

use crate::handle::{SessionHandle, SlowConsumer};
use crate::hub::PendingCap;
use crate::node::Node;

/// A join in progress.
pub struct RoomJoin<'a> {
    /// The node.
    node: &'a Arc<Node>,
    /// The joining session.
    handle: &'a SessionHandle,
    /// The room.
    room: &'a str,
    /// Whether dropping this undoes the join (until it is finished).
    armed: bool,
}

/// What a joining member gets before live frames.
pub struct CatchUp {
    /// Stored frames after `since`, oldest first (none without a `since`).
    pub frames: Vec<Utf8Bytes>,
    /// The newest id the member has seen once the frames are delivered: live frames
    /// up to it are dropped for this member. `None` without a `since`; the newest
    /// replayed id when the replay is not complete.
    pub seen: Option<MessageId>,
    /// The room's state when the replay was read.
    pub state: RoomState,
    /// Whether the replay is complete (always with no `since`).
    pub complete: bool,
}

impl<'a> RoomJoin<'a> {
    /// Puts `handle` in `room` with its live frames held back and makes sure the node
    /// is subscribed.
    ///
    /// # Errors
    /// The broker's error; the join is undone.
    pub async fn start(
        node: &'a Arc<Node>,
        handle: &'a SessionHandle,
        room: &'a str,
    ) -> Result<Self, wsgate_broker::Error> {
        let cap = PendingCap {
            frames: node.config.send_queue,
            bytes: node.config.replay_max_bytes(),
        };
        node.hub.join(room, handle, cap);
        let join = RoomJoin {
            node,
            handle,
            room,
            armed: true,
        };
        node.subs.ensure(&Channel::Room(room.to_owned())).await?;
        Ok(join)
    }

    /// Reads what the member must get first: with `since`, the stored frames after it;
    /// without, only the room's state.
    ///
    /// # Errors
    /// The broker's error.
    pub async fn catch_up(
        &self,
        since: Option<MessageId>,
    ) -> Result<CatchUp, wsgate_broker::Error> {
        let broker = &self.node.broker;
        Ok(match since {
            Some(since) => {
                let replay = broker
                    .replay(self.room, since, self.node.config.replay_max_bytes())
                    .await?;
                let last = replay.entries.last().map(|(id, _)| *id);
                // Live frames up to `since` are skipped only when the replay vouches for
                // the range: after an incomplete one (`since` trimmed away, from another
                // epoch, or ahead of the history) nothing live is skipped.
                let seen = if replay.complete {
                    last.unwrap_or(since).max(since)
                } else {
                    last.unwrap_or(MessageId::ZERO)
                };
                CatchUp {
                    frames: replay
                        .entries
                        .into_iter()
                        .filter_map(|(_, f)| Utf8Bytes::try_from(f).ok())
                        .collect(),
                    seen: Some(seen),
                    state: replay.state,
                    complete: replay.complete,
                }
            }
            None => CatchUp {
                frames: Vec::new(),
                seen: None,
                state: broker.room_state(self.room).await?,
                complete: true,
            },
        })
    }

    /// Queues `head` (the replay and the answer), then the frames held back since the
    /// start except those up to `seen`, and makes the member live. `state` is what
    /// [`RoomJoin::catch_up`] read.
    ///
    /// # Errors
    /// [`SlowConsumer`] when the queue was full (the session is being closed).
    pub fn finish(
        mut self,
        head: Vec<Utf8Bytes>,
        seen: Option<MessageId>,
        state: &RoomState,
    ) -> Result<(), SlowConsumer> {
        self.armed = false;
        self.node
            .hub
            .finish_join(self.room, self.handle.id, head, seen, state)
    }
}

impl Drop for RoomJoin<'_> {
    fn drop(&mut self) {
        if self.armed && self.node.hub.leave(self.room, self.handle.id) {
            self.node.release_later(Channel::Room(self.room.to_owned()));
        }
    }
}
