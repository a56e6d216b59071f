//! [`RedisOutbox`]: the webhook outbox of a cluster, in Redis Streams read through one
//! consumer group (`wsgate`), each node a consumer named by its node id.
//!
//! Transitions are recorded by the scripts that make them ([`RedisRecorder`] tells them
//! what to record), so one transition is one entry however many nodes watched it. An
//! entry leaves only when a node acknowledges it after its back end answered (`XACK`
//! and `XDEL`); one a node took and left idle for `stale` (the node died, or lost it)
//! is claimed by the next node that asks (`XAUTOCLAIM`): a node that dies does not take
//! events with it.
//!
//! On one Redis there is one stream. On a Redis Cluster a script may only touch keys of
//! one slot, so each slot in use has its own stream (`P:webhooks:{TAG}`, beside the
//! room's or the user's keys), and the node that recorded rings a doorbell after the
//! script (`P:{registry}:webhooks-dirty`, stream → counter) so readers know which
//! streams to read; a stream's mark is cleared only once it is empty and nobody rang
//! since. A node that dies between its script and its doorbell is covered by its
//! reaper, which rings every slot the dead node had noted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{Script, Value};

use crate::error::Result;
use crate::outbox::{Event, EventName, Outbox, Recording, Taken};
use crate::redis_link::RedisLink;
use crate::scripts_webhooks;

/// The consumer group every node reads the outbox streams through.
pub const GROUP: &str = "wsgate";

/// A consumer (a node id) with nothing pending and idle this long is deleted from a
/// stream's group, so nodes that come and go (new pod names) do not pile up.
pub const CONSUMER_IDLE: Duration = Duration::from_secs(3600);

/// How often a node prunes one stream's consumers.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What the recording scripts are told, and what they report.
pub struct RedisRecorder {
    /// The command connection.
    link: Arc<RedisLink>,
    /// What is recorded and the bound.
    pub recording: Recording,
    /// `recording.events` as the scripts read it.
    mask: String,
    /// Events this node's scripts dropped (the outbox was full).
    dropped: AtomicU64,
    /// Cluster: outboxes whose doorbell failed, rung again at the next take.
    unrung: Mutex<HashSet<String>>,
}

impl RedisRecorder {
    /// Recording `recording` over `link`.
    pub fn new(link: Arc<RedisLink>, recording: Recording) -> Self {
        RedisRecorder {
            link,
            mask: recording.events.mask(),
            recording,
            dropped: AtomicU64::new(0),
            unrung: Mutex::default(),
        }
    }

    /// The event mask, a script argument.
    pub fn mask(&self) -> &str {
        &self.mask
    }

    /// The outbox bound, a script argument.
    pub fn max_len(&self) -> usize {
        self.recording.max_len.max(1)
    }

    /// After a script recorded `recorded` events in `outbox` and dropped `dropped`:
    /// counts the drops and, on a cluster, rings the outbox's doorbell.
    pub async fn recorded(&self, outbox: &str, recorded: i64, dropped: i64) {
        if dropped > 0 {
            self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        if recorded > 0 && self.link.keys.is_sharded() && self.ring(outbox).await.is_err() {
            self.unrung_set().insert(outbox.to_owned());
        }
    }

    /// Marks `outbox` as holding events (a cluster's doorbell).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    pub async fn ring(&self, outbox: &str) -> Result<()> {
        let dirty = self.link.keys.webhooks_dirty();
        self.link
            .with_conn(|mut c| async move {
                redis::cmd("HINCRBY")
                    .arg(dirty)
                    .arg(outbox)
                    .arg(1)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    fn unrung_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unrung.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rings the doorbells that failed before.
    async fn ring_again(&self) {
        let unrung: Vec<String> = self.unrung_set().drain().collect();
        for (i, outbox) in unrung.iter().enumerate() {
            if self.ring(outbox).await.is_err() {
                self.unrung_set().extend(unrung[i..].iter().cloned());
                return;
            }
        }
    }
}

/// The outbox in Redis.
pub struct RedisOutbox {
    /// The command connection.
    link: Arc<RedisLink>,
    /// What is recorded (shared with presence, online counts and the reaper).
    recorder: Arc<RedisRecorder>,
    /// Records `client_message`s.
    record: Script,
    /// Claims stale events and reads new ones.
    take: Script,
    /// Clears a cluster outbox's dirty mark.
    clean: Script,
    /// Drops the consumers of nodes long gone.
    prune: Script,
    /// Where each stream's `XAUTOCLAIM` scan goes on.
    cursors: Mutex<HashMap<String, String>>,
    /// When this node last pruned each stream's consumers.
    pruned: Mutex<HashMap<String, Instant>>,
    /// The last take's total length of the streams it read.
    depth: AtomicU64,
    /// Turns through the dirty streams, so a long list is read fairly.
    turn: AtomicU64,
}

/// The value of field `name` of a stream entry's `[f1, v1, f2, v2, …]`.
fn field(fields: &[Value], name: &str) -> Option<String> {
    fields.chunks(2).find_map(|kv| match kv {
        [Value::BulkString(k), Value::BulkString(v)] if k == name.as_bytes() && !v.is_empty() => {
            String::from_utf8(v.clone()).ok()
        }
        _ => None,
    })
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Int(i)) => *i,
        Some(v) => text(v).and_then(|s| s.parse().ok()).unwrap_or(0),
        None => 0,
    }
}

impl RedisOutbox {
    /// The outbox over `link`, recording what `recorder` says.
    pub fn new(link: Arc<RedisLink>, recorder: Arc<RedisRecorder>) -> Self {
        RedisOutbox {
            link,
            recorder,
            record: Script::new(&scripts_webhooks::record()),
            take: Script::new(scripts_webhooks::TAKE),
            clean: Script::new(scripts_webhooks::CLEAN),
            prune: Script::new(scripts_webhooks::PRUNE),
            cursors: Mutex::default(),
            pruned: Mutex::default(),
            depth: AtomicU64::new(0),
            turn: AtomicU64::new(0),
        }
    }

    fn cursors(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.cursors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The streams to read and their dirty marks (one stream, unmarked, on one Redis).
    async fn streams(&self) -> Result<Vec<(String, Option<String>)>> {
        let keys = &self.link.keys;
        if !keys.is_sharded() {
            return Ok(vec![(keys.webhooks(""), None)]);
        }
        self.recorder.ring_again().await;
        let dirty = keys.webhooks_dirty();
        let marks: Vec<(String, String)> = self
            .link
            .with_conn(
                |mut c| async move { redis::cmd("HGETALL").arg(dirty).query_async(&mut c).await },
            )
            .await?;
        let mut marks: Vec<(String, Option<String>)> =
            marks.into_iter().map(|(k, v)| (k, Some(v))).collect();
        if !marks.is_empty() {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed) as usize % marks.len();
            marks.rotate_left(turn);
        }
        Ok(marks)
    }

    /// Deletes `stream`'s long-idle consumers with nothing pending, at most every
    /// [`PRUNE_EVERY`] (a consumer deleted while alive is made again at its next read).
    async fn prune(&self, stream: &str) {
        let due = {
            let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
            let last = pruned.entry(stream.to_owned()).or_insert_with(Instant::now);
            let due = last.elapsed() >= PRUNE_EVERY;
            if due {
                *last = Instant::now();
            }
            due
        };
        if due {
            let idle = CONSUMER_IDLE.as_millis() as u64;
            let res = self
                .link
                .with_conn(|mut c| async move {
                    self.prune
                        .key(stream)
                        .arg(GROUP)
                        .arg(idle)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
            if let Ok(n @ 1..) = res {
                tracing::info!(%stream, consumers = n, "idle webhook consumers deleted");
            }
        }
    }

    /// Takes up to `max` events of one stream; returns them and the stream's length.
    async fn take_from(
        &self,
        stream: &str,
        max: usize,
        stale: Duration,
    ) -> Result<(Vec<Taken>, u64)> {
        self.prune(stream).await;
        let cursor = self
            .cursors()
            .get(stream)
            .cloned()
            .unwrap_or_else(|| "0-0".to_owned());
        let me = &self.link.settings.node_id;
        let reply: Vec<Value> = self
            .link
            .with_conn(|mut c| async move {
                self.take
                    .key(stream)
                    .arg(GROUP)
                    .arg(me)
                    .arg(stale.as_millis().max(1) as u64)
                    .arg(&cursor)
                    .arg(max.max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if let Some(next) = reply.first().and_then(text) {
            self.cursors().insert(stream.to_owned(), next);
        }
        let len = int(reply.get(1)).max(0) as u64;
        // Ids are unique per stream; on a cluster the stream's tag makes them unique.
        let tag = stream
            .split_once('{')
            .and_then(|(_, t)| t.strip_suffix('}'))
            .map(|t| format!("{t}."))
            .unwrap_or_default();
        let mut out = Vec::new();
        for pair in reply.get(2..).unwrap_or_default().chunks(2) {
            let [id, Value::Array(fields)] = pair else {
                continue;
            };
            let Some(entry) = text(id) else { continue };
            let Some(name) = field(fields, "n").and_then(|n| EventName::parse(&n)) else {
                // Not an event of this version: nothing can deliver it.
                tracing::warn!(%stream, %entry, "unknown webhook event skipped");
                continue;
            };
            let time_ms = entry
                .split_once('-')
                .and_then(|(ms, _)| ms.parse().ok())
                .unwrap_or(0);
            out.push(Taken {
                id: format!("{tag}{entry}"),
                time_ms,
                event: Event {
                    name,
                    room: field(fields, "r"),
                    user_id: field(fields, "u"),
                    message: field(fields, "m"),
                },
                outbox: stream.to_owned(),
                entry,
            });
        }
        Ok((out, len))
    }

    /// `taken` grouped by stream: stream → entry ids.
    fn by_stream(taken: &[Taken]) -> HashMap<&str, Vec<&str>> {
        let mut m: HashMap<&str, Vec<&str>> = HashMap::new();
        for t in taken {
            m.entry(&t.outbox).or_default().push(&t.entry);
        }
        m
    }
}

#[async_trait]
impl Outbox for RedisOutbox {
    async fn record(&self, room: &str, events: &[Event]) -> Result<()> {
        let events: Vec<&Event> = events
            .iter()
            .filter(|e| self.recorder.recording.records(e.name))
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        let outbox = self.link.keys.webhooks(room);
        self.link.note_slot(room).await?;
        let r = &self.recorder;
        let reply: Vec<i64> = self
            .link
            .with_conn(|mut c| {
                let mut call = self.record.key(&outbox);
                call.arg(r.mask()).arg(r.max_len());
                for e in &events {
                    let at = EventName::ALL
                        .iter()
                        .position(|n| *n == e.name)
                        .unwrap_or(0)
                        + 1;
                    call.arg(at)
                        .arg(e.name.as_str())
                        .arg(e.room.as_deref().unwrap_or(""))
                        .arg(e.user_id.as_deref().unwrap_or(""))
                        .arg(e.message.as_deref().unwrap_or(""));
                }
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        r.recorded(&outbox, int_at(&reply, 0), int_at(&reply, 1))
            .await;
        Ok(())
    }

    async fn take(&self, max: usize, stale: Duration) -> Result<Vec<Taken>> {
        let mut out = Vec::new();
        let mut depth = 0;
        for (stream, mark) in self.streams().await? {
            if out.len() >= max {
                break;
            }
            let (got, len) = self.take_from(&stream, max - out.len(), stale).await?;
            depth += len;
            if let (true, 0, Some(mark)) = (got.is_empty(), len, mark) {
                let (dirty, stream) = (self.link.keys.webhooks_dirty(), &stream);
                self.link
                    .with_conn(|mut c| async move {
                        self.clean
                            .key(dirty)
                            .arg(stream)
                            .arg(mark)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await?;
                self.cursors().remove(stream);
            }
            out.extend(got);
        }
        self.depth.store(depth, Ordering::Relaxed);
        Ok(out)
    }

    async fn hold(&self, taken: &[Taken]) -> Result<()> {
        let me = &self.link.settings.node_id;
        for (stream, ids) in Self::by_stream(taken) {
            self.link
                .with_conn(|mut c| async move {
                    redis::cmd("XCLAIM")
                        .arg(stream)
                        .arg(GROUP)
                        .arg(me)
                        .arg(0)
                        .arg(&ids)
                        .arg("JUSTID")
                        .query_async::<Value>(&mut c)
                        .await
                })
                .await?;
        }
        Ok(())
    }

    async fn ack(&self, taken: &[Taken]) -> Result<()> {
        for (stream, ids) in Self::by_stream(taken) {
            self.link
                .with_conn(|mut c| async move {
                    redis::pipe()
                        .atomic()
                        .cmd("XACK")
                        .arg(stream)
                        .arg(GROUP)
                        .arg(&ids)
                        .ignore()
                        .cmd("XDEL")
                        .arg(stream)
                        .arg(&ids)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await?;
        }
        Ok(())
    }

    fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    fn dropped(&self) -> u64 {
        self.recorder.dropped.load(Ordering::Relaxed)
    }
}

fn int_at(v: &[i64], i: usize) -> i64 {
    v.get(i).copied().unwrap_or(0)
}
