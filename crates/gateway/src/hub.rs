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
use wsgate_broker::Channel;
use wsgate_protocol::server::frame_id;
use wsgate_protocol::MessageId;

use crate::handle::{SessionHandle, SlowConsumer};
use crate::queue::Outbound;

/// Local sessions by room and by user.
#[derive(Default)]
pub struct Hub {
    /// A std mutex: it is held only for map updates and `try_send`s, never across an
    /// `.await`.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, HashMap<u64, RoomMember>>,
    users: HashMap<String, HashMap<u64, SessionHandle>>,
    all: HashMap<u64, SessionHandle>,
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
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
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
        let sessions = st.users.entry(user_id.to_owned()).or_default();
        sessions.insert(handle.id, handle.clone());
        sessions.len() == 1
    }

    /// Removes a session. Returns `true` when it was the user's last local session.
    pub fn unregister(&self, user_id: &str, id: u64) -> bool {
        let mut st = self.lock();
        st.all.remove(&id);
        let Some(sessions) = st.users.get_mut(user_id) else {
            return false;
        };
        sessions.remove(&id);
        if sessions.is_empty() {
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
        let members = st.rooms.entry(room.to_owned()).or_default();
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
    /// member live.
    ///
    /// # Errors
    /// [`SlowConsumer`] when the queue was full (the session is being closed).
    pub fn finish_join(
        &self,
        room: &str,
        id: u64,
        mut head: Vec<Utf8Bytes>,
        seen: Option<MessageId>,
    ) -> Result<(), SlowConsumer> {
        let mut st = self.lock();
        let Some(member) = st.rooms.get_mut(room).and_then(|m| m.get_mut(&id)) else {
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
        let Some(members) = st.rooms.get_mut(room) else {
            return false;
        };
        members.remove(&id);
        if members.is_empty() {
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
            .flat_map(|(room, members)| {
                members
                    .values()
                    .filter_map(|m| m.handle.presence.clone())
                    .map(move |p| (room.clone(), p))
            })
            .collect()
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
        let mut out = Fanout::default();
        let mut st = self.lock();
        let offer =
            |out: &mut Fanout, h: &SessionHandle| match h.offer(Outbound::Frame(frame.clone())) {
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
                let Some(members) = st.rooms.get_mut(r) else {
                    return out;
                };
                // The id is read (off the frame's prefix) only when a join is pending.
                let mut id: Option<Option<MessageId>> = None;
                for m in members.values_mut() {
                    match &mut m.pending {
                        None => {
                            if let Some(through) = m.skip_through {
                                match *id.get_or_insert_with(|| frame_id(frame.as_str())) {
                                    Some(fid) if fid <= through => continue,
                                    Some(_) => m.skip_through = None,
                                    None => {}
                                }
                            }
                            offer(&mut out, &m.handle)
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
                            let fid = *id.get_or_insert_with(|| frame_id(frame.as_str()));
                            pending.push((fid, frame.clone()));
                            m.pending_bytes += frame.len();
                            out.delivered += 1;
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    use crate::handle::Control;
    use crate::queue::Queue;

    /// The consumer side of a session's queue, as the tests read it.
    struct Rx(Arc<Queue>);

    impl Rx {
        fn try_recv(&mut self) -> Result<Outbound, ()> {
            self.0.try_pop().ok_or(())
        }
    }

    fn cap(frames: usize) -> PendingCap {
        PendingCap {
            frames,
            bytes: 1 << 20,
        }
    }

    fn session(id: u64, cap: usize) -> (SessionHandle, Rx) {
        let queue = Queue::new(cap, 1 << 20);
        let control = Arc::new(Control::new(CancellationToken::new()));
        (
            SessionHandle {
                id,
                key: Arc::from(format!("s{id}")),
                queue: queue.clone(),
                control,
                presence: None,
            },
            Rx(queue),
        )
    }

    fn text(o: Outbound) -> Vec<String> {
        match o {
            Outbound::Frame(f) => vec![f.to_string()],
            Outbound::Batch(fs) => fs.into_iter().map(|f| f.to_string()).collect(),
            Outbound::Binary(_) => panic!("the hub never queues binary frames"),
        }
    }

    fn msg(id: &str) -> Utf8Bytes {
        Utf8Bytes::from(format!(r#"{{"type":"message","id":"{id}","room":"r"}}"#))
    }

    #[test]
    fn fanout_hands_the_same_bytes_to_live_members_only_of_that_room() {
        let hub = Hub::new();
        let (a, mut ra) = session(1, 8);
        let (b, mut rb) = session(2, 8);
        let (c, mut rc) = session(3, 8);
        assert!(hub.join("r", &a, cap(8)));
        assert!(!hub.join("r", &b, cap(8)));
        hub.join("other", &c, cap(8));
        hub.finish_join("r", 1, vec![], None).unwrap();
        hub.finish_join("r", 2, vec![], None).unwrap();
        hub.finish_join("other", 3, vec![], None).unwrap();
        for r in [&mut ra, &mut rb, &mut rc] {
            assert_eq!(text(r.try_recv().unwrap()), Vec::<String>::new());
        }
        let f = msg("1-0");
        assert_eq!(
            hub.dispatch(&Channel::Room("r".into()), &f),
            Fanout {
                delivered: 2,
                slow: 0
            }
        );
        match (ra.try_recv().unwrap(), rb.try_recv().unwrap()) {
            (Outbound::Frame(x), Outbound::Frame(y)) => {
                assert_eq!(
                    x.as_str().as_ptr(),
                    y.as_str().as_ptr(),
                    "one allocation for all"
                )
            }
            _ => panic!("expected frames"),
        }
        assert!(rc.try_recv().is_err());
    }

    #[test]
    fn pending_join_follows_replay_without_duplicates() {
        let hub = Hub::new();
        let (a, mut ra) = session(1, 8);
        hub.join("r", &a, cap(8));
        // Live frames arrive while the replay is read: 5-0 is also in the replay.
        hub.dispatch(&Channel::Room("r".into()), &msg("5-0"));
        hub.dispatch(
            &Channel::Room("r".into()),
            &Utf8Bytes::from(r#"{"type":"presence","room":"r"}"#),
        );
        hub.dispatch(&Channel::Room("r".into()), &msg("6-0"));
        assert!(ra.try_recv().is_err(), "nothing goes out before joined");
        let head = vec![
            msg("4-0"),
            msg("5-0"),
            Utf8Bytes::from(r#"{"type":"joined"}"#),
        ];
        hub.finish_join("r", 1, head, Some(MessageId::new(5, 0)))
            .unwrap();
        let got = text(ra.try_recv().unwrap());
        let ids: Vec<_> = got
            .iter()
            .map(|f| frame_id(f).map(|i| i.to_string()))
            .collect();
        assert_eq!(
            ids,
            vec![
                Some("4-0".into()),
                Some("5-0".into()),
                None,
                None,
                Some("6-0".into())
            ]
        );
        assert!(got[2].contains("joined") && got[3].contains("presence"));
        // A frame published before the replay was read but dispatched only now is
        // not delivered twice.
        hub.dispatch(&Channel::Room("r".into()), &msg("5-0"));
        assert!(ra.try_recv().is_err(), "5-0 was in the replay");
        // Now live.
        hub.dispatch(&Channel::Room("r".into()), &msg("7-0"));
        assert_eq!(text(ra.try_recv().unwrap()), vec![msg("7-0").to_string()]);
    }

    #[test]
    fn a_full_queue_closes_only_that_session() {
        let hub = Hub::new();
        let (slow, _rs) = session(1, 2);
        let (fast, mut rf) = session(2, 64);
        for h in [&slow, &fast] {
            hub.join("r", h, cap(64));
            hub.finish_join("r", h.id, vec![], None).unwrap();
        }
        let mut slow_closes = 0;
        for i in 0..10 {
            slow_closes += hub
                .dispatch(&Channel::Room("r".into()), &msg(&format!("{i}-0")))
                .slow;
        }
        assert!(slow.control.token.is_cancelled());
        assert_eq!(slow.control.code(), Some(1013));
        assert!(slow_closes >= 1);
        assert!(!fast.control.token.is_cancelled());
        let mut n = 0;
        while let Ok(o) = rf.try_recv() {
            n += text(o).len();
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn users_and_broadcast() {
        let hub = Hub::new();
        let (a1, mut r1) = session(1, 8);
        let (a2, mut r2) = session(2, 8);
        let (b, mut rb) = session(3, 8);
        assert!(hub.register("alice", &a1));
        assert!(!hub.register("alice", &a2));
        assert!(hub.register("bob", &b));
        let f = Utf8Bytes::from(r#"{"type":"direct"}"#);
        assert_eq!(
            hub.dispatch(&Channel::User("alice".into()), &f).delivered,
            2
        );
        assert_eq!(hub.dispatch(&Channel::Broadcast, &f).delivered, 3);
        assert_eq!(
            (
                r1.try_recv().is_ok(),
                r2.try_recv().is_ok(),
                rb.try_recv().is_ok()
            ),
            (true, true, true)
        );
        assert!(!hub.unregister("alice", 1));
        assert!(hub.needs(&Channel::User("alice".into())));
        assert!(hub.unregister("alice", 2));
        assert!(!hub.needs(&Channel::User("alice".into())));
    }
}
