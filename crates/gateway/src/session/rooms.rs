//! Room commands of a session: `join` (with catch-up), `leave`, `typing`, and the
//! presence events they cause.

use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_broker::{Added, Channel, MembersPage, RoomState};
use wsgate_protocol::server::{Member, PresenceEvent, PresenceMode, ServerFrame};
use wsgate_protocol::{ErrorCode, FrameError, MessageId};

use super::Session;
use crate::join::RoomJoin;
use crate::reserved::SYSTEM_ROOM;

/// How long a typing flag lasts without a refresh.
const TYPING_TTL: Duration = Duration::from_secs(5);

impl Session {
    /// `message` and `typing` need a joined room that clients may write to.
    pub(super) fn require_writable(&self, room: &str) -> Result<(), FrameError> {
        if room == SYSTEM_ROOM {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                "the system room is read-only",
            ));
        }
        if self.rooms.contains_key(room) {
            Ok(())
        } else {
            Err(FrameError::new(ErrorCode::NotMember, "join the room first"))
        }
    }

    /// `join` and `history` need the room to be open to this identity.
    pub(super) fn require_access(&self, room: &str) -> Result<(), FrameError> {
        let private = self.node.config.namespaces.is_private(room);
        if self.identity.may_enter(room, private) {
            Ok(())
        } else {
            Err(FrameError::new(
                ErrorCode::Forbidden,
                "this private room is not granted to you",
            ))
        }
    }

    pub(super) async fn join(
        &mut self,
        room: String,
        since: Option<MessageId>,
        epoch: Option<String>,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        self.require_access(&room)?;
        let already = self.rooms.contains_key(&room);
        if !already && self.rooms.len() >= self.node.config.max_rooms_per_connection {
            return Err(FrameError::new(
                ErrorCode::TooManyRooms,
                format!(
                    "at most {} rooms per connection",
                    self.node.config.max_rooms_per_connection
                ),
            ));
        }
        if already {
            return self.rejoin(room, since, epoch, reference).await;
        }
        if !self.node.is_registered() {
            // A node restarted under the same id first clears what its previous run
            // left in presence; a join before that could be cleared with it.
            return Err(FrameError::new(
                ErrorCode::Unavailable,
                "this node is not yet registered in the cluster; retry later",
            ));
        }
        if !self.node.room_allowed(&room) {
            return Err(FrameError::new(
                ErrorCode::TooManyRooms,
                format!(
                    "this node holds its limit of {} rooms",
                    self.node.config.max_rooms
                ),
            ));
        }
        if self.node.hooks.join.is_some() {
            // Boxed: the rare path (a configured hook) must not grow every join.
            Box::pin(self.ask_join(&room)).await?;
        }
        let node = self.node.clone();
        let join = RoomJoin::start(&node, &self.handle, &room)
            .await
            .map_err(|e| self.unavailable(e))?;
        let mode = node.config.namespaces.for_room(&room).presence;
        let first_page = if mode == PresenceMode::Full {
            node.config.joined_members
        } else {
            0
        };
        let answer = async {
            let added = node.presence.add(&room, &self.session, first_page).await?;
            let Added::In(change, page) = added else {
                return Ok(None);
            };
            let catch_up = join.catch_up(since).await?;
            Ok::<_, wsgate_broker::Error>(Some((change, page, catch_up)))
        };
        let (change, page, catch_up) = match answer.await {
            Ok(Some(a)) => a,
            Ok(None) => {
                drop(join);
                return Err(FrameError::new(
                    ErrorCode::RoomFull,
                    "this room holds its most members",
                ));
            }
            Err(e) => {
                drop(join);
                // The add may have held before the failure: undo it (retried until it
                // holds, so a failed join never leaves a zombie member). No `leave`:
                // no `join` was announced.
                let _ = node.presence_remove(&room, &self.session).await;
                return Err(self.unavailable(e));
            }
        };
        // The epoch counts only with `since`: a join without one replays nothing and
        // is recovered whatever epoch it names.
        let epoch_ok =
            since.is_none() || epoch.as_deref().is_none_or(|e| e == catch_up.state.epoch);
        let mut head = catch_up.frames;
        let replayed = head.len() as u64;
        let state = catch_up.state;
        let joined_at = (state.epoch.clone(), state.last_id);
        let mark = RoomState {
            epoch: state.epoch.clone(),
            last_id: state.last_id,
        };
        let (members, members_count, members_more, presence) =
            self.joined_members(mode, change.count, change.over, page.members);
        let joined = ServerFrame::Joined {
            reference,
            room: room.clone(),
            members,
            members_count,
            members_more,
            presence,
            last_id: state.last_id.map(|id| id.to_string()),
            epoch: state.epoch,
            recovered: catch_up.complete && epoch_ok,
        };
        head.push(Utf8Bytes::from(joined.encode()));
        // Published before `joined` is queued: the session's own arrival reaches it
        // right after `joined` (held while the join is pending), and before anything
        // another client does once it has seen `joined`.
        crate::announce::presence_changed(
            &node,
            &room,
            PresenceEvent::Join,
            &self.session.user,
            change,
        )
        .await;
        if join.finish(head, catch_up.seen, &mark).is_ok() {
            node.metrics.frames_out("message", replayed);
            node.metrics.frames_out("joined", 1);
        }
        self.rooms.insert(room, joined_at);
        Ok(())
    }

    /// A `join` of a room this session is in already: the session has been a live
    /// member all along, so it gets `joined` with the room's state now and no replay
    /// (a second replay would duplicate what it received), and nothing else changes:
    /// no presence event, and a failure leaves its membership as it was.
    async fn rejoin(
        &mut self,
        room: String,
        since: Option<MessageId>,
        epoch: Option<String>,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        let node = self.node.clone();
        let mode = node.config.namespaces.for_room(&room).presence;
        let answer = async {
            let (count, over) = node.presence.count(&room).await?;
            let page = if crate::announce::effective(mode, over) == PresenceMode::Full {
                node.presence
                    .members(&room, None, node.config.joined_members.max(1))
                    .await?
            } else {
                MembersPage::default()
            };
            let state = node.broker.room_state(&room).await?;
            Ok::<_, wsgate_broker::Error>((count, over, page, state))
        };
        let (count, over, page, state) = answer.await.map_err(|e| self.unavailable(e))?;
        let recovered = since.is_none() || epoch.as_deref().is_none_or(|e| e == state.epoch);
        let (members, members_count, members_more, presence) =
            self.joined_members(mode, count, over, page.members);
        let joined = ServerFrame::Joined {
            reference,
            room,
            members,
            members_count,
            members_more,
            presence,
            last_id: state.last_id.map(|id| id.to_string()),
            epoch: state.epoch,
            recovered,
        };
        self.send(&joined, "joined");
        Ok(())
    }

    /// The presence part of a `joined`: the mode the room shows, the count, and in a
    /// `full` room at most `--joined-members` members (`members_more` when there are
    /// more): a frame that does not grow with the room. Returns `(members,
    /// members_count, members_more, presence)`.
    fn joined_members(
        &self,
        mode: PresenceMode,
        count: u64,
        over: bool,
        mut members: Vec<Member>,
    ) -> (Vec<Member>, u64, bool, PresenceMode) {
        let presence = crate::announce::effective(mode, over);
        let (members_count, members_more) = match presence {
            PresenceMode::Full => {
                members.truncate(self.node.config.joined_members);
                (count, count > members.len() as u64)
            }
            PresenceMode::Count => {
                members.clear();
                (count, false)
            }
            PresenceMode::Off => {
                members.clear();
                (0, false)
            }
        };
        (members, members_count, members_more, presence)
    }

    /// `members`: a page of a room's distinct users (not in an `off` room).
    pub(super) async fn members(
        &mut self,
        room: String,
        cursor: Option<String>,
        limit: usize,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        self.require_access(&room)?;
        if self.node.config.namespaces.for_room(&room).presence == PresenceMode::Off {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                "this room shows no members (presence off)",
            ));
        }
        let node = self.node.clone();
        let answer = async {
            let page = node
                .presence
                .members(&room, cursor.as_deref(), limit)
                .await?;
            let (count, _) = node.presence.count(&room).await?;
            Ok::<_, wsgate_broker::Error>((page, count))
        };
        let (page, count) = match answer.await {
            Ok(a) => a,
            Err(wsgate_broker::Error::Invalid(_)) => {
                return Err(FrameError::invalid(
                    "cursor must be a next_cursor of this room",
                ))
            }
            Err(e) => return Err(self.unavailable(e)),
        };
        self.send(
            &ServerFrame::Members {
                reference,
                room,
                members: page.members,
                next_cursor: page.next_cursor,
                count,
            },
            "members",
        );
        Ok(())
    }

    pub(super) async fn leave(
        &mut self,
        room: String,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        if !self.rooms.contains_key(&room) {
            return Err(FrameError::new(ErrorCode::NotMember, "not in this room"));
        }
        self.leave_room(&room, false).await;
        self.send(
            &ServerFrame::Left {
                reference,
                room,
                reason: None,
            },
            "left",
        );
        Ok(())
    }

    /// Takes the session out of `room` everywhere: hub, typing, presence. At the
    /// session's close (`grace`), its presence entry waits out `--presence-grace-ms`
    /// first ([`crate::presence_grace`]).
    pub(super) async fn leave_room(&mut self, room: &str, grace: bool) {
        self.rooms.remove(room);
        if self.node.hub.leave(room, self.handle.id) {
            self.node.release_later(Channel::Room(room.to_owned()));
        }
        if self.typing.remove(room) {
            if let Ok(users) = self
                .node
                .presence
                .typing_set(room, &self.session.user, false, TYPING_TTL)
                .await
            {
                self.publish_typing(room, users).await;
            }
        }
        let wait = std::time::Duration::from_millis(self.node.config.presence_grace_ms);
        if grace
            && !wait.is_zero()
            && self.node.grace.defer(
                tokio::time::Instant::now() + wait,
                room,
                std::sync::Arc::new(self.session.clone()),
            )
        {
            return;
        }
        if let Some(change) = self.node.presence_remove(room, &self.session).await {
            crate::announce::presence_changed(
                &self.node,
                room,
                PresenceEvent::Leave,
                &self.session.user,
                change,
            )
            .await;
        }
    }

    pub(super) async fn typing(&mut self, room: String, is_typing: bool) -> Result<(), FrameError> {
        self.require_writable(&room)?;
        let users = self
            .node
            .presence
            .typing_set(&room, &self.session.user, is_typing, TYPING_TTL)
            .await
            .map_err(|e| self.unavailable(e))?;
        if is_typing {
            self.typing.insert(room.clone());
            let node = self.node.clone();
            let room = room.clone();
            tokio::spawn(async move {
                tokio::time::sleep(TYPING_TTL + Duration::from_millis(50)).await;
                if let Ok(Some(users)) = node.presence.typing_expire(&room).await {
                    let frame = ServerFrame::Typing {
                        room: room.clone(),
                        users,
                    };
                    let _ = node
                        .broker
                        .publish(&Channel::Room(room), frame.encode().into())
                        .await;
                }
            });
        } else {
            self.typing.remove(&room);
        }
        self.publish_typing(&room, users).await;
        Ok(())
    }

    async fn publish_typing(&self, room: &str, users: Vec<Member>) {
        let frame = ServerFrame::Typing {
            room: room.to_owned(),
            users,
        };
        if let Err(e) = self
            .node
            .broker
            .publish(&Channel::Room(room.to_owned()), frame.encode().into())
            .await
        {
            tracing::warn!(%room, error = %e, "typing update lost");
        }
    }
}
