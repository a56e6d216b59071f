//! [`MemoryBroker`]: the embedded broker of a single node.
//!
//! It plays Redis's part in process with the same contract: stream-shaped ids,
//! bounded history with exact recovery, session-counted presence, typing with expiry,
//! and subscriptions that decide what reaches the node. History lives as long as the
//! process, so the process has one epoch, made anew at every start: a client that
//! rejoins after a restart is told `recovered:false`, never handed a silent gap.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};
use wsgate_protocol::server::{
    Member, Notification, Restore, RestoreRoom, ServerFrame, StoredEntry,
};
use wsgate_protocol::MessageId;

use crate::broker::{skip_envelope, Broker, BrokerEvent, Channel, Replay, RoomState, SessionRef};
use crate::error::{Error, Result};

/// The embedded broker.
pub struct MemoryBroker {
    /// The process's history epoch: every room shares it (allowed by the contract).
    epoch: String,
    /// How many entries a room's history keeps.
    history_len: usize,
    /// Where frames for subscribed channels go.
    events: mpsc::Sender<BrokerEvent>,
    /// All state behind one async mutex: publishing holds it while the event is
    /// queued, which is what keeps delivery order equal to id order. Nothing else
    /// awaits while holding it, and the event consumer never calls back in here.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    subscribed: HashSet<Channel>,
    rooms: HashMap<String, History>,
    /// room → user id → (display name, session ids).
    presence: HashMap<String, BTreeMap<String, (String, HashSet<String>)>>,
    /// room → user id → (display name, expiry).
    typing: HashMap<String, BTreeMap<String, (String, Instant)>>,
    /// user id → (creation ms, notification), newest first.
    notifications: HashMap<String, VecDeque<(u64, Notification)>>,
    /// user id → (rooms, expiry).
    restore: HashMap<String, (BTreeMap<String, RestoreRoom>, Instant)>,
}

fn unread_of(list: &VecDeque<(u64, Notification)>) -> u64 {
    list.iter().filter(|(_, n)| !n.read).count() as u64
}

/// Drops notifications older than `ttl` (at the back: the list is newest first).
fn expire(list: &mut VecDeque<(u64, Notification)>, ttl: Duration) {
    let oldest = now_ms().saturating_sub(ttl.as_millis() as u64);
    while list.back().is_some_and(|(ms, _)| *ms < oldest) {
        list.pop_back();
    }
}

#[derive(Default)]
struct History {
    entries: VecDeque<(MessageId, Bytes)>,
    last_id: Option<MessageId>,
    /// The newest id ever trimmed away: a replay from before it has a gap.
    trimmed_through: Option<MessageId>,
}

impl MemoryBroker {
    /// A broker keeping `history_len` entries per room and sending what subscribed
    /// channels receive to `events`.
    pub fn new(history_len: usize, events: mpsc::Sender<BrokerEvent>) -> Self {
        let epoch = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        MemoryBroker {
            epoch,
            history_len: history_len.max(1),
            events,
            state: Mutex::new(State::default()),
        }
    }

    /// The process's history epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn room_state(&self, history: Option<&History>) -> RoomState {
        RoomState {
            epoch: self.epoch.clone(),
            last_id: history.and_then(|h| h.last_id),
        }
    }

    async fn emit(&self, state: &State, channel: &Channel, frame: Bytes) -> Result<()> {
        if state.subscribed.contains(channel) {
            let event = BrokerEvent::Message {
                channel: channel.clone(),
                frame,
            };
            self.events.send(event).await.map_err(|_| Error::Closed)?;
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn members<'a>(it: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<Member> {
    it.map(|(user_id, username)| Member {
        user_id: user_id.clone(),
        username: username.clone(),
    })
    .collect()
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn subscribe(&self, channel: &Channel) -> Result<()> {
        self.state.lock().await.subscribed.insert(channel.clone());
        Ok(())
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<()> {
        self.state.lock().await.subscribed.remove(channel);
        Ok(())
    }

    async fn publish_entry(&self, room: &str, entry: &StoredEntry) -> Result<MessageId> {
        let mut state = self.state.lock().await;
        let history = state.rooms.entry(room.to_owned()).or_default();
        let now = now_ms();
        let id = match history.last_id {
            Some(last) if last.ms >= now => last.next(),
            _ => MessageId::new(now, 0),
        };
        let frame = Bytes::from(entry.frame(id));
        history.entries.push_back((id, frame.clone()));
        history.last_id = Some(id);
        while history.entries.len() > self.history_len {
            if let Some((old, _)) = history.entries.pop_front() {
                history.trimmed_through = Some(old);
            }
        }
        self.emit(&state, &Channel::Room(room.to_owned()), frame)
            .await?;
        Ok(id)
    }

    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<()> {
        let state = self.state.lock().await;
        self.emit(&state, channel, frame).await
    }

    async fn room_state(&self, room: &str) -> Result<RoomState> {
        let state = self.state.lock().await;
        Ok(self.room_state(state.rooms.get(room)))
    }

    async fn replay(&self, room: &str, since: MessageId) -> Result<Replay> {
        let state = self.state.lock().await;
        let history = state.rooms.get(room);
        let room_state = self.room_state(history);
        let Some(history) = history else {
            return Ok(Replay {
                entries: Vec::new(),
                complete: since == MessageId::ZERO,
                state: room_state,
            });
        };
        let entries = history
            .entries
            .iter()
            .filter(|(id, _)| *id > since)
            .cloned()
            .collect();
        let not_trimmed = history.trimmed_through.is_none_or(|t| since >= t);
        let not_ahead = since <= history.last_id.unwrap_or(MessageId::ZERO);
        Ok(Replay {
            entries,
            complete: not_trimmed && not_ahead,
            state: room_state,
        })
    }

    async fn history(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Bytes>> {
        let state = self.state.lock().await;
        let Some(history) = state.rooms.get(room) else {
            return Ok(Vec::new());
        };
        let mut page: Vec<Bytes> = history
            .entries
            .iter()
            .rev()
            .filter(|(id, _)| before.is_none_or(|b| *id < b))
            .take(limit)
            .map(|(_, f)| f.clone())
            .collect();
        page.reverse();
        Ok(page)
    }

    async fn presence_add(&self, room: &str, session: &SessionRef) -> Result<bool> {
        let mut state = self.state.lock().await;
        let users = state.presence.entry(room.to_owned()).or_default();
        let (name, sessions) = users
            .entry(session.user.user_id.clone())
            .or_insert_with(|| (session.user.username.clone(), HashSet::new()));
        *name = session.user.username.clone();
        let first = sessions.is_empty();
        sessions.insert(session.session_id.clone());
        Ok(first)
    }

    async fn presence_remove(&self, room: &str, session: &SessionRef) -> Result<bool> {
        let mut state = self.state.lock().await;
        let Some(users) = state.presence.get_mut(room) else {
            return Ok(false);
        };
        let Some((_, sessions)) = users.get_mut(&session.user.user_id) else {
            return Ok(false);
        };
        let removed = sessions.remove(&session.session_id);
        let last = removed && sessions.is_empty();
        if sessions.is_empty() {
            users.remove(&session.user.user_id);
        }
        if users.is_empty() {
            state.presence.remove(room);
        }
        Ok(last)
    }

    async fn presence_members(&self, room: &str) -> Result<Vec<Member>> {
        let state = self.state.lock().await;
        Ok(state
            .presence
            .get(room)
            .map(|users| members(users.iter().map(|(id, (name, _))| (id, name))))
            .unwrap_or_default())
    }

    async fn typing_set(
        &self,
        room: &str,
        user: &Member,
        typing: bool,
        ttl: Duration,
    ) -> Result<Vec<Member>> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let users = state.typing.entry(room.to_owned()).or_default();
        users.retain(|_, (_, until)| *until > now);
        if typing {
            users.insert(user.user_id.clone(), (user.username.clone(), now + ttl));
        } else {
            users.remove(&user.user_id);
        }
        let list = members(users.iter().map(|(id, (name, _))| (id, name)));
        if users.is_empty() {
            state.typing.remove(room);
        }
        Ok(list)
    }

    async fn typing_expire(&self, room: &str) -> Result<Option<Vec<Member>>> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let Some(users) = state.typing.get_mut(room) else {
            return Ok(None);
        };
        let before = users.len();
        users.retain(|_, (_, until)| *until > now);
        if users.len() == before {
            return Ok(None);
        }
        let list = members(users.iter().map(|(id, (name, _))| (id, name)));
        if users.is_empty() {
            state.typing.remove(room);
        }
        Ok(Some(list))
    }

    async fn notify(&self, items: &[Notification], cap: usize, ttl: Duration) -> Result<Vec<u64>> {
        let mut state = self.state.lock().await;
        let now = now_ms();
        let mut unread = Vec::with_capacity(items.len());
        let mut frames = Vec::with_capacity(items.len());
        for n in items {
            let list = state.notifications.entry(n.user_id.clone()).or_default();
            expire(list, ttl);
            list.push_front((now, n.clone()));
            list.truncate(cap.max(1));
            let count = unread_of(list);
            unread.push(count);
            let frame = ServerFrame::Notification {
                notification: n.clone(),
                unread: count,
            };
            frames.push((
                Channel::User(n.user_id.clone()),
                Bytes::from(frame.encode()),
            ));
        }
        for (channel, frame) in frames {
            self.emit(&state, &channel, frame).await?;
        }
        Ok(unread)
    }

    async fn notifications(
        &self,
        user: &str,
        limit: usize,
        before: Option<&str>,
        unread_only: bool,
        ttl: Duration,
    ) -> Result<(Vec<Notification>, u64)> {
        let mut state = self.state.lock().await;
        let Some(list) = state.notifications.get_mut(user) else {
            return Ok((Vec::new(), 0));
        };
        expire(list, ttl);
        let items = list
            .iter()
            .map(|(_, n)| n)
            .filter(|n| before.is_none_or(|b| n.id.as_str() < b))
            .filter(|n| !unread_only || !n.read)
            .take(limit)
            .cloned()
            .collect();
        Ok((items, unread_of(list)))
    }

    async fn mark_read(
        &self,
        user: &str,
        ids: Option<&[String]>,
        origin_session: &str,
        ttl: Duration,
    ) -> Result<(Vec<String>, u64)> {
        let mut state = self.state.lock().await;
        let Some(list) = state.notifications.get_mut(user) else {
            return Ok((Vec::new(), 0));
        };
        expire(list, ttl);
        let mut changed = Vec::new();
        for (_, n) in list.iter_mut() {
            if !n.read && ids.is_none_or(|ids| ids.contains(&n.id)) {
                n.read = true;
                changed.push(n.id.clone());
            }
        }
        let unread = unread_of(list);
        if !changed.is_empty() {
            let frame = ServerFrame::NotificationsRead {
                ids: changed.clone(),
                unread,
            };
            let payload = skip_envelope(origin_session, &frame.encode());
            self.emit(
                &state,
                &Channel::User(user.to_owned()),
                Bytes::from(payload),
            )
            .await?;
        }
        Ok((changed, unread))
    }

    async fn unread(&self, user: &str, ttl: Duration) -> Result<u64> {
        let mut state = self.state.lock().await;
        Ok(state
            .notifications
            .get_mut(user)
            .map(|list| {
                expire(list, ttl);
                unread_of(list)
            })
            .unwrap_or(0))
    }

    async fn save_restore(&self, user: &str, rooms: &[RestoreRoom], ttl: Duration) -> Result<()> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        state.restore.retain(|_, (_, until)| *until > now);
        let (saved, until) = state
            .restore
            .entry(user.to_owned())
            .or_insert_with(|| (BTreeMap::new(), now));
        for r in rooms {
            saved.insert(r.room.clone(), r.clone());
        }
        *until = now + ttl;
        Ok(())
    }

    async fn take_restore(&self, user: &str) -> Result<Option<Restore>> {
        let mut state = self.state.lock().await;
        Ok(match state.restore.remove(user) {
            Some((rooms, until)) if until > Instant::now() && !rooms.is_empty() => Some(Restore {
                rooms: rooms.into_values().collect(),
            }),
            _ => None,
        })
    }

    async fn ping(&self) -> Result<()> {
        if self.events.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }
}
