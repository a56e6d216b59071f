//! [`MemoryBroker`]: the embedded broker's publishing and history.
//!
//! It plays Redis's part in process with the same contract: stream-shaped ids,
//! bounded history with exact recovery, and subscriptions that decide what reaches
//! the node. History lives as long as the process, so the process has one epoch,
//! made anew at every start: a client that rejoins after a restart is told
//! `recovered:false`, never handed a silent gap.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use wsgate_protocol::server::StoredEntry;
use wsgate_protocol::MessageId;

use crate::broker::{Broker, Channel, Replay, RoomState};
use crate::bus::MemoryBus;
use crate::error::{Error, Result};

/// The embedded broker.
pub struct MemoryBroker {
    /// The process's history epoch: every room shares it (allowed by the contract).
    epoch: String,
    /// How many entries a room's history keeps.
    history_len: usize,
    /// Where frames for subscribed channels go.
    bus: Arc<MemoryBus>,
    /// Every room's history behind one async mutex: publishing holds it while the
    /// event is queued, which is what keeps delivery order equal to id order. Nothing
    /// else awaits while holding it, and the event consumer never calls back in here.
    rooms: Mutex<HashMap<String, History>>,
}

#[derive(Default)]
struct History {
    entries: VecDeque<(MessageId, Bytes)>,
    last_id: Option<MessageId>,
    /// The newest id ever trimmed away: a replay from before it has a gap.
    trimmed_through: Option<MessageId>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryBroker {
    /// A broker keeping `history_len` entries per room and publishing through `bus`.
    pub fn new(history_len: usize, bus: Arc<MemoryBus>) -> Self {
        let epoch = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        MemoryBroker {
            epoch,
            history_len: history_len.max(1),
            bus,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// The process's history epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn state_of(&self, history: Option<&History>) -> RoomState {
        RoomState {
            epoch: self.epoch.clone(),
            last_id: history.and_then(|h| h.last_id),
        }
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
        let mut rooms = self.rooms.lock().await;
        let history = rooms.entry(room.to_owned()).or_default();
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
        self.bus
            .emit(&Channel::Room(room.to_owned()), frame)
            .await?;
        Ok(id)
    }

    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<()> {
        self.bus.emit(channel, frame).await
    }

    async fn room_state(&self, room: &str) -> Result<RoomState> {
        let rooms = self.rooms.lock().await;
        Ok(self.state_of(rooms.get(room)))
    }

    async fn replay(&self, room: &str, since: MessageId) -> Result<Replay> {
        let rooms = self.rooms.lock().await;
        let history = rooms.get(room);
        let state = self.state_of(history);
        let Some(history) = history else {
            return Ok(Replay {
                entries: Vec::new(),
                complete: since == MessageId::ZERO,
                state,
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
            state,
        })
    }

    async fn history(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Bytes>> {
        let rooms = self.rooms.lock().await;
        let Some(history) = rooms.get(room) else {
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

    async fn ping(&self) -> Result<()> {
        if !self.bus.is_open() {
            return Err(Error::Closed);
        }
        Ok(())
    }
}
