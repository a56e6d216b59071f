//! [`MemoryBroker`]: the embedded broker's publishing and history.
//!
//! It plays Redis's part in process with the same contract: stream-shaped ids,
//! bounded history with exact recovery, and subscriptions that decide what reaches
//! the node. Rooms follow the same epoch rule as in Redis ([`empty_epoch`]) over the
//! process's own store epoch, made anew at every start, so a client that rejoins
//! after a restart is told `recovered:false`, never handed a silent gap; and a room
//! idle for the history TTL is forgotten, as its stream would expire in Redis, so the
//! number of rooms held is bounded by the rooms written to within one TTL.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use wsgate_protocol::server::StoredEntry;
use wsgate_protocol::MessageId;

use crate::broker::{empty_epoch, Broker, Channel, HistoryPage, Replay, RoomState};
use crate::bus::MemoryBus;
use crate::error::{Error, Result};
use crate::once_memory::OnceKeys;
use crate::rules::RoomPolicy;

/// The embedded broker.
pub struct MemoryBroker {
    /// The process's store epoch, the base of every room's epoch.
    epoch: String,
    /// Each room's history length and lifetime (a room idle that long is forgotten).
    policy: Arc<dyn RoomPolicy>,
    /// Where frames for subscribed channels go.
    bus: Arc<MemoryBus>,
    /// Every room's history behind one async mutex: publishing holds it while the
    /// event is queued, which is what keeps delivery order equal to id order. Nothing
    /// else awaits while holding it, and the event consumer never calls back in here.
    rooms: Mutex<Rooms>,
    /// Idempotency keys; held across a keyed publish, so a retry racing the first
    /// waits for its answer.
    once: Mutex<OnceKeys>,
}

struct Rooms {
    by_name: HashMap<String, History>,
    /// When idle rooms were last looked for.
    swept: Instant,
}

struct History {
    /// The room's epoch: the epoch it had while empty, kept from its first message.
    epoch: String,
    entries: VecDeque<(MessageId, Bytes)>,
    last_id: Option<MessageId>,
    /// The newest id ever trimmed away: a replay from before it has a gap.
    trimmed_through: Option<MessageId>,
    /// When the last message was stored.
    written: Instant,
    /// How long the room is kept without a message.
    ttl: Duration,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryBroker {
    /// A broker keeping each room's history as `policy` says (its length, and how long
    /// an idle room is kept), and publishing through `bus`.
    pub fn new(policy: Arc<dyn RoomPolicy>, bus: Arc<MemoryBus>) -> Self {
        let epoch = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        MemoryBroker {
            epoch,
            policy,
            bus,
            rooms: Mutex::new(Rooms {
                by_name: HashMap::new(),
                swept: Instant::now(),
            }),
            once: Mutex::new(OnceKeys::default()),
        }
    }

    /// The process's store epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Rooms with history held now.
    pub async fn room_count(&self) -> usize {
        self.rooms.lock().await.by_name.len()
    }

    fn empty_epoch(&self, room: &str) -> String {
        let ttl = self.policy.rules(room).history_ttl;
        empty_epoch(&self.epoch, now_ms() / 1000, ttl.as_secs())
    }

    fn state_of(&self, room: &str, history: Option<&History>) -> RoomState {
        match history {
            Some(h) => RoomState {
                epoch: h.epoch.clone(),
                last_id: h.last_id,
            },
            None => RoomState {
                epoch: self.empty_epoch(room),
                last_id: None,
            },
        }
    }

    /// The room's history unless it has been idle for the TTL (then it is dropped).
    fn live<'a>(&self, rooms: &'a mut Rooms, room: &str) -> Option<&'a History> {
        let now = Instant::now();
        if rooms.swept + Duration::from_secs(60) <= now {
            // Amortised: at most one pass over the rooms per minute.
            rooms
                .by_name
                .retain(|_, h| now.duration_since(h.written) < h.ttl);
            rooms.swept = now;
        }
        if rooms
            .by_name
            .get(room)
            .is_some_and(|h| now.duration_since(h.written) >= h.ttl)
        {
            rooms.by_name.remove(room);
        }
        rooms.by_name.get(room)
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn subscribe(&self, channel: &Channel) -> Result<()> {
        self.bus.subscribe(channel);
        Ok(())
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<()> {
        self.bus.unsubscribe(channel);
        Ok(())
    }

    async fn publish_entry(&self, room: &str, entry: &StoredEntry) -> Result<MessageId> {
        let rules = self.policy.rules(room);
        let mut rooms = self.rooms.lock().await;
        if self.live(&mut rooms, room).is_none() {
            let history = History {
                epoch: self.empty_epoch(room),
                entries: VecDeque::new(),
                last_id: None,
                trimmed_through: None,
                written: Instant::now(),
                ttl: rules.history_ttl.max(Duration::from_secs(1)),
            };
            rooms.by_name.insert(room.to_owned(), history);
        }
        let Some(history) = rooms.by_name.get_mut(room) else {
            return Err(Error::Closed);
        };
        history.written = Instant::now();
        let now = now_ms();
        let id = match history.last_id {
            Some(last) if last.ms >= now => last.next(),
            _ => MessageId::new(now, 0),
        };
        let frame = Bytes::from(entry.frame(id));
        history.entries.push_back((id, frame.clone()));
        history.last_id = Some(id);
        while history.entries.len() > rules.history_len.max(1) {
            if let Some((old, _)) = history.entries.pop_front() {
                history.trimmed_through = Some(old);
            }
        }
        self.bus
            .emit(&Channel::Room(room.to_owned()), frame)
            .await?;
        Ok(id)
    }

    async fn publish_entry_once(
        &self,
        room: &str,
        entry: &StoredEntry,
        key: &str,
        ttl: Duration,
    ) -> Result<(MessageId, bool)> {
        let mut once = self.once.lock().await;
        if let Some(Some(id)) = once.get(key, Instant::now()) {
            return Ok((id, false));
        }
        let id = self.publish_entry(room, entry).await?;
        once.set(key, Some(id), ttl, Instant::now());
        Ok((id, true))
    }

    async fn publish_once(
        &self,
        channel: &Channel,
        frame: Bytes,
        key: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut once = self.once.lock().await;
        if once.get(key, Instant::now()).is_some() {
            return Ok(false);
        }
        self.publish(channel, frame).await?;
        once.set(key, None, ttl, Instant::now());
        Ok(true)
    }

    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<()> {
        self.bus.emit(channel, frame).await
    }

    async fn room_state(&self, room: &str) -> Result<RoomState> {
        let mut rooms = self.rooms.lock().await;
        let history = self.live(&mut rooms, room);
        Ok(self.state_of(room, history))
    }

    async fn replay(&self, room: &str, since: MessageId, max_bytes: usize) -> Result<Replay> {
        let mut rooms = self.rooms.lock().await;
        let history = self.live(&mut rooms, room);
        let state = self.state_of(room, history);
        let Some(history) = history else {
            return Ok(Replay {
                entries: Vec::new(),
                complete: since == MessageId::ZERO,
                state,
            });
        };
        // The newest first, up to the byte bound.
        let mut entries = Vec::new();
        let (mut bytes, mut cut) = (0, false);
        for (id, frame) in history.entries.iter().rev() {
            if *id <= since {
                break;
            }
            if bytes + frame.len() > max_bytes {
                cut = true;
                break;
            }
            bytes += frame.len();
            entries.push((*id, frame.clone()));
        }
        entries.reverse();
        let not_trimmed = history.trimmed_through.is_none_or(|t| since >= t);
        let not_ahead = since <= history.last_id.unwrap_or(MessageId::ZERO);
        Ok(Replay {
            entries,
            complete: not_trimmed && not_ahead && !cut,
            state,
        })
    }

    async fn history(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<HistoryPage> {
        let mut rooms = self.rooms.lock().await;
        let Some(history) = self.live(&mut rooms, room) else {
            return Ok(HistoryPage::default());
        };
        let mut page = HistoryPage::default();
        let mut bytes = 0;
        for (_, f) in history
            .entries
            .iter()
            .rev()
            .filter(|(id, _)| before.is_none_or(|b| *id < b))
            .take(limit)
        {
            if bytes + f.len() > max_bytes {
                page.more = true;
                break;
            }
            bytes += f.len();
            page.frames.push(f.clone());
        }
        page.frames.reverse();
        Ok(page)
    }

    async fn ping(&self) -> Result<()> {
        if !self.bus.is_open() {
            return Err(Error::Closed);
        }
        Ok(())
    }
}
