//! [`MemoryOutbox`]: the webhook outbox of the embedded broker, a bounded queue in
//! process. Presence and online counts record into it under their own locks, so the
//! order of events is the order of transitions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::Result;
use crate::outbox::{Event, Outbox, Recording, Taken};
use crate::redis_link::now_ms;

/// The outbox's one name (what [`Taken::outbox`] holds).
const NAME: &str = "memory";

/// One recorded event.
struct Entry {
    /// Its sequence number (ids and order).
    seq: u64,
    /// When it was recorded.
    time_ms: u64,
    /// The event.
    event: Event,
    /// When it was last taken or held; `None` while no delivery has it.
    taken: Option<Instant>,
}

/// The embedded outbox.
pub struct MemoryOutbox {
    /// What is recorded and the bound.
    recording: Recording,
    /// Random per process: ids stay unique across restarts.
    epoch: String,
    /// Oldest first. A std mutex: held for queue operations only.
    queue: Mutex<(VecDeque<Entry>, u64)>,
    /// Events dropped because the queue was full.
    dropped: AtomicU64,
}

impl MemoryOutbox {
    /// An empty outbox recording what `recording` selects.
    pub fn new(recording: Recording) -> Self {
        MemoryOutbox {
            recording,
            epoch: crate::redis_link::fresh_epoch()[..8].to_owned(),
            queue: Mutex::default(),
            dropped: AtomicU64::new(0),
        }
    }

    /// What is recorded.
    pub fn recording(&self) -> Recording {
        self.recording
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Entry>, u64)> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `event` if the recording selects it, dropping the oldest event when
    /// the queue is full. Called under the recording concern's own lock.
    pub fn push(&self, event: Event) {
        if !self.recording.records(event.name) {
            return;
        }
        let mut q = self.lock();
        let (queue, next) = &mut *q;
        while queue.len() >= self.recording.max_len.max(1) {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        *next += 1;
        queue.push_back(Entry {
            seq: *next,
            time_ms: now_ms(),
            event,
            taken: None,
        });
    }

    fn taken(&self, e: &Entry) -> Taken {
        Taken {
            id: format!("{}-{}", self.epoch, e.seq),
            time_ms: e.time_ms,
            event: e.event.clone(),
            outbox: NAME.to_owned(),
            entry: e.seq.to_string(),
        }
    }
}

/// The sequence numbers of `taken`.
fn seqs(taken: &[Taken]) -> Vec<u64> {
    let mut s: Vec<u64> = taken.iter().filter_map(|t| t.entry.parse().ok()).collect();
    s.sort_unstable();
    s
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn record(&self, _room: &str, events: &[Event]) -> Result<()> {
        for e in events {
            self.push(e.clone());
        }
        Ok(())
    }

    async fn take(&self, max: usize, stale: Duration) -> Result<Vec<Taken>> {
        let now = Instant::now();
        let mut q = self.lock();
        let mut out = Vec::new();
        for e in q.0.iter_mut() {
            if out.len() >= max {
                break;
            }
            if e.taken.is_none_or(|at| now.duration_since(at) >= stale) {
                e.taken = Some(now);
                out.push(e);
            }
        }
        let out = out.into_iter().map(|e| self.taken(e)).collect();
        Ok(out)
    }

    async fn hold(&self, taken: &[Taken]) -> Result<()> {
        let seqs = seqs(taken);
        let now = Instant::now();
        for e in self.lock().0.iter_mut() {
            if seqs.binary_search(&e.seq).is_ok() {
                e.taken = Some(now);
            }
        }
        Ok(())
    }

    async fn ack(&self, taken: &[Taken]) -> Result<()> {
        let seqs = seqs(taken);
        self.lock()
            .0
            .retain(|e| seqs.binary_search(&e.seq).is_err());
        Ok(())
    }

    fn depth(&self) -> u64 {
        self.lock().0.len() as u64
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
