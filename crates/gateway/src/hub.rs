//! The hub: which local sessions are in which room, and which belong to which user.
//!
//! It knows sessions by their [`SessionHandle`] (a queue and a kill switch) and
//! nothing of sockets or Redis. Fan-out takes the lock once per frame, hands the same
//! bytes to every recipient with a non-blocking `try_send`, and closes any session
//! whose queue is full, so one slow client never delays another.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_broker::{Channel, RoomState};
use wsgate_protocol::server::frame_id;
use wsgate_protocol::MessageId;

use crate::handle::{SessionHandle, SlowConsumer};
use crate::queue::{Outbound, StoredAt, Wakes};

mod gap;
mod user_sessions;
pub use gap::{Finished, GapStart, Refill};
use user_sessions::UserSessions;

/// Local sessions by room and by user.
pub struct Hub {
    /// A std mutex: it is held only for map updates and `try_send`s, never across an
    /// `.await`.
    state: Mutex<State>,
    /// Most a room may hold back while it is refilled after a gap.
    hold_cap: PendingCap,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Room>,
    users: HashMap<String, UserSessions>,
    all: HashMap<u64, SessionHandle>,
    /// Counts the broker's gaps: a refill started for one gap does not end the hold
    /// of a later one.
    gap: u64,
}

/// One room's local members and where its stream of stored frames stands.
#[derive(Default)]
struct Room {
    members: HashMap<u64, RoomMember>,
    /// The newest stored id handed to the members, in the epoch the first finished
    /// join read: where a refill after a broker gap starts. `None` until a join of
    /// the room finished.
    mark: Option<Mark>,
    /// After a refill up to this id, stored frames up to it that were still on their
    /// way (received before the hold ended, dispatched after) are dropped. Cleared by
    /// the first newer id.
    skip_through: Option<MessageId>,
    /// While the room is refilled after a gap, live frames wait here.
    held: Option<Held>,
}

/// Where a room's members stand in its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The history's epoch.
    pub epoch: String,
    /// The newest stored id the members were handed (or joined after).
    pub id: MessageId,
}

/// Live frames held back while a room is refilled.
struct Held {
    /// The gap this hold belongs to.
    gap: u64,
    frames: Vec<Utf8Bytes>,
    bytes: usize,
    /// Frames arrived past the bound and were dropped: the refill must read again.
    overflowed: bool,
}

struct RoomMember {
    handle: SessionHandle,
    /// While a join is being answered, live frames wait here (with their ids) so
    /// that they follow the replay and `joined`, minus what the replay already held.
    pending: Option<Vec<(Option<MessageId>, Utf8Bytes)>>,
    /// Most frames and bytes `pending` may hold: beyond that the session is as slow
    /// as a full queue.
    pending_cap: PendingCap,
    /// Bytes held in `pending`.
    pending_bytes: usize,
    /// After a replay up to this id, stored frames up to it that were still on their
    /// way to the hub (published before the replay was read, dispatched after the join
    /// finished) are dropped for this member. Cleared by the first newer id, since a
    /// room's frames arrive in id order.
    skip_through: Option<MessageId>,
}

/// How much a pending join may hold back.
#[derive(Debug, Clone, Copy)]
pub struct PendingCap {
    /// Frames.
    pub frames: usize,
    /// Bytes.
    pub bytes: usize,
}

/// What a fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Sessions the frame was handed to.
    pub delivered: usize,
    /// Sessions closed because their queue was full.
    pub slow: usize,
}

impl Hub {
    /// An empty hub whose rooms hold back at most `hold_cap` while they are
    /// refilled after a broker gap.
    pub fn new(hold_cap: PendingCap) -> Self {
        Hub {
            state: Mutex::new(State::default()),
            hold_cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; carry on with them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session. Returns `true` when it is the user's first local session (the
    /// node must then listen on the user's channel).
    pub fn register(&self, user_id: &str, handle: &SessionHandle) -> bool {
        let mut st = self.lock();
        st.all.insert(handle.id, handle.clone());
        match st.users.get_mut(user_id) {
            Some(sessions) => {
                sessions.insert(handle.clone());
                false
            }
            None => {
                st.users
                    .insert(user_id.to_owned(), UserSessions::One(handle.clone()));
                true
            }
        }
    }

    /// Removes a session. Returns `true` when it was the user's last local session.
    pub fn unregister(&self, user_id: &str, id: u64) -> bool {
        let mut st = self.lock();
        st.all.remove(&id);
        let Some(sessions) = st.users.get_mut(user_id) else {
            return false;
        };
        if sessions.remove(id) {
            st.users.remove(user_id);
            true
        } else {
            false
        }
    }

    /// Puts a session in `room`, holding its live frames back until
    /// [`Hub::finish_join`]. Returns `true` when it is the room's first local member.
    pub fn join(&self, room: &str, handle: &SessionHandle, pending_cap: PendingCap) -> bool {
        let mut st = self.lock();
        let members = &mut st.rooms.entry(room.to_owned()).or_default().members;
        let first = members.is_empty();
        members.insert(
            handle.id,
            RoomMember {
                handle: handle.clone(),
                pending: Some(Vec::new()),
                pending_cap,
                pending_bytes: 0,
                skip_through: None,
            },
        );
        first
    }

    /// Sends `head` (the replay and `joined`), then the frames held back since
    /// [`Hub::join`] except those with ids up to `seen`, as one batch, and makes the
    /// member live. `state` is the room's state the join read (after the node
    /// subscribed): the first finished join of a room sets where a refill would start.
    ///
    /// # Errors
    /// [`SlowConsumer`] when the queue was full (the session is being closed).
    pub fn finish_join(
        &self,
        room: &str,
        id: u64,
        mut head: Vec<Utf8Bytes>,
        seen: Option<MessageId>,
        state: &RoomState,
    ) -> Result<(), SlowConsumer> {
        let mut st = self.lock();
        let Some(entry) = st.rooms.get_mut(room) else {
            return Ok(());
        };
        if entry.mark.is_none() {
            entry.mark = Some(Mark {
                epoch: state.epoch.clone(),
                id: state.last_id.unwrap_or(MessageId::ZERO),
            });
        }
        let Some(member) = entry.members.get_mut(&id) else {
            return Ok(());
        };
        let pending = member.pending.take().unwrap_or_default();
        member.pending_bytes = 0;
        member.skip_through = seen;
        head.extend(
            pending
                .into_iter()
                .filter(|(fid, _)| match (fid, seen) {
                    (Some(fid), Some(seen)) => *fid > seen,
                    _ => true,
                })
                .map(|(_, f)| f),
        );
        member.handle.offer(Outbound::Batch(head))
    }

    /// Takes a session out of `room`. Returns `true` when the room has no local
    /// member left (the node may stop listening on it).
    pub fn leave(&self, room: &str, id: u64) -> bool {
        let mut st = self.lock();
        let Some(entry) = st.rooms.get_mut(room) else {
            return false;
        };
        entry.members.remove(&id);
        if entry.members.is_empty() {
            st.rooms.remove(room);
            true
        } else {
            false
        }
    }

    /// Whether any local session needs `channel`.
    pub fn needs(&self, channel: &Channel) -> bool {
        let st = self.lock();
        match channel {
            Channel::Broadcast => true,
            Channel::Room(r) => st.rooms.contains_key(r),
            Channel::User(u) => st.users.contains_key(u),
        }
    }

    /// Every channel local sessions need now.
    pub fn channels(&self) -> Vec<Channel> {
        let st = self.lock();
        let mut out = vec![Channel::Broadcast];
        out.extend(st.rooms.keys().map(|r| Channel::Room(r.clone())));
        out.extend(st.users.keys().map(|u| Channel::User(u.clone())));
        out
    }

    /// Every (room, session) of the local `/ws` members, for presence to re-add them.
    pub fn presence_entries(&self) -> Vec<(String, Arc<wsgate_broker::SessionRef>)> {
        let st = self.lock();
        st.rooms
            .iter()
            .flat_map(|(room, entry)| {
                entry
                    .members
                    .values()
                    .filter_map(|m| m.handle.presence.clone())
                    .map(move |p| (room.clone(), p))
            })
            .collect()
    }

    /// Every local session (WebSocket sessions and SSE streams).
    pub fn sessions(&self) -> Vec<SessionHandle> {
        self.lock().all.values().cloned().collect()
    }

    /// Whether `room` has local members.
    pub fn has_room(&self, room: &str) -> bool {
        self.lock().rooms.contains_key(room)
    }

    /// Rooms with local members.
    pub fn room_count(&self) -> usize {
        self.lock().rooms.len()
    }

    /// Hands `frame` to every local session on `channel`.
    pub fn dispatch(&self, channel: &Channel, frame: &Utf8Bytes) -> Fanout {
        self.dispatch_except(channel, frame, None)
    }

    /// Hands `frame` to every local session on `channel` except the session whose key
    /// is `skip` (used for a user's "other sessions").
    pub fn dispatch_except(
        &self,
        channel: &Channel,
        frame: &Utf8Bytes,
        skip: Option<&str>,
    ) -> Fanout {
        self.dispatch_deferred(channel, frame, skip, &mut Wakes::default())
    }

    /// [`Hub::dispatch_except`], leaving the recipients' writers to `wakes`: the
    /// dispatcher wakes them once per batch of broker messages.
    pub fn dispatch_deferred(
        &self,
        channel: &Channel,
        frame: &Utf8Bytes,
        skip: Option<&str>,
        wakes: &mut Wakes,
    ) -> Fanout {
        let mut out = Fanout::default();
        let mut st = self.lock();
        let mut offer = |out: &mut Fanout, h: &SessionHandle| match h
            .offer_deferred(Outbound::Frame(frame.clone()), wakes)
        {
            Ok(()) => out.delivered += 1,
            Err(SlowConsumer) => out.slow += 1,
        };
        match channel {
            Channel::Broadcast => st.all.values().for_each(|h| offer(&mut out, h)),
            Channel::User(u) => {
                if let Some(sessions) = st.users.get(u) {
                    sessions
                        .values()
                        .filter(|h| skip.is_none_or(|k| *h.key != *k))
                        .for_each(|h| offer(&mut out, h));
                }
            }
            Channel::Room(r) => {
                let Some(entry) = st.rooms.get_mut(r) else {
                    return out;
                };
                match &mut entry.held {
                    Some(held) => held.push(frame, self.hold_cap),
                    None => entry.deliver(frame, &mut out, wakes),
                }
            }
        }
        out
    }
}

impl Room {
    /// Hands a room's frame to its members: live ones get it (unless a replay or a
    /// refill already gave it to them), pending joins hold it.
    fn deliver(&mut self, frame: &Utf8Bytes, out: &mut Fanout, wakes: &mut Wakes) {
        // The id (and, for stored frames, the room's place) is read off the frame's
        // prefix once per frame, not per member.
        let stored = StoredAt::of(frame.as_str());
        let id = stored.map(|s| s.id).or_else(|| frame_id(frame.as_str()));
        let item = || match stored {
            Some(at) => Outbound::Stored(frame.clone(), at),
            None => Outbound::Frame(frame.clone()),
        };
        if let Some(id) = id {
            if let Some(through) = self.skip_through {
                if id <= through {
                    return;
                }
                self.skip_through = None;
            }
            if let Some(mark) = &mut self.mark {
                mark.id = id;
            }
        }
        for m in self.members.values_mut() {
            match &mut m.pending {
                None => {
                    if let (Some(through), Some(fid)) = (m.skip_through, id) {
                        if fid <= through {
                            continue;
                        }
                        m.skip_through = None;
                    }
                    match m.handle.offer_deferred(item(), wakes) {
                        Ok(()) => out.delivered += 1,
                        Err(SlowConsumer) => out.slow += 1,
                    }
                }
                Some(pending) => {
                    if pending.len() >= m.pending_cap.frames
                        || m.pending_bytes + frame.len() > m.pending_cap.bytes
                    {
                        m.handle
                            .control
                            .close(wsgate_protocol::CloseCode::TryAgainLater);
                        out.slow += 1;
                        continue;
                    }
                    pending.push((id, frame.clone()));
                    m.pending_bytes += frame.len();
                    out.delivered += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
