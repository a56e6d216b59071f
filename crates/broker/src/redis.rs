//! [`RedisBroker`]: the cluster broker.
//!
//! One dedicated Pub/Sub connection per node receives the channels the node needs
//! (subscribed per channel, never by pattern) and feeds them, in order, into the
//! node's event channel; a `deadpool-redis` pool serves every other command. Room
//! messages are stored and published by one Lua script, so every node delivers them
//! in stream order; history, recovery and epochs come from the stream and its meta
//! hash; presence entries carry their node, and nodes that stop reporting are reaped
//! by the survivors. The layout is in [`crate::keys`], the scripts in
//! [`crate::scripts`].
//!
//! When Redis is unreachable every operation fails fast with
//! [`Error::Unavailable`] (nothing was stored or sent), the Pub/Sub task retries with
//! capped backoff and, once back, resubscribes every channel the node needs and says
//! so with [`BrokerEvent::Up`].

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::Script;
use tokio::sync::mpsc;
use wsgate_protocol::server::{
    Member, Notification, PresenceEvent, Restore, RestoreRoom, ServerFrame, StoredEntry,
};
use wsgate_protocol::MessageId;

use crate::broker::{
    Broker, BrokerEvent, Channel, ClusterStats, NodeReport, Replay, RoomState, SessionRef,
};
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::scripts;

/// How long one Redis operation may take before it counts as unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between reconnection attempts of the Pub/Sub connection.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a [`RedisBroker`] is set up.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// This node's id (presence entries and the registry carry it).
    pub node_id: String,
    /// Entries kept per room's stream (`MAXLEN ~`).
    pub history_len: usize,
    /// A room's history (and its epoch) expires after this long without a message.
    pub history_ttl: Duration,
    /// The gateway's heartbeat interval: a node is dead once it has not reported for
    /// one interval (it reports twice per interval).
    pub heartbeat: Duration,
}

struct PubSubState {
    /// The command side of the Pub/Sub connection; `None` while disconnected.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Channel names the node needs: resubscribed after every reconnection.
    wanted: std::sync::Mutex<HashSet<String>>,
    /// Whether the Pub/Sub connection is up.
    up: AtomicBool,
}

struct Scripts {
    publish: Script,
    replay: Script,
    history: Script,
    presence_add: Script,
    presence_remove: Script,
    presence_reap: Script,
    typing_set: Script,
    typing_expire: Script,
    notify: Script,
    notifications: Script,
    mark_read: Script,
    unread: Script,
}

/// The Redis broker of a cluster node.
pub struct RedisBroker {
    settings: RedisSettings,
    keys: Keys,
    pool: Pool,
    pubsub: Arc<PubSubState>,
    scripts: Scripts,
    /// Set once this node has cleared what a previous run under the same node id
    /// left in presence.
    reaped_self: AtomicBool,
    /// The pooled command connection in use (see [`RedisBroker::conn`]).
    cached: std::sync::Mutex<Option<(deadpool_redis::Connection, MultiplexedConnection)>>,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn fresh_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

fn pairs_to_members(flat: Vec<String>) -> Vec<Member> {
    let mut map = BTreeMap::new();
    let mut it = flat.into_iter();
    while let (Some(user_id), Some(username)) = (it.next(), it.next()) {
        map.insert(user_id, username);
    }
    map.into_iter()
        .map(|(user_id, username)| Member { user_id, username })
        .collect()
}

impl RedisBroker {
    /// Sets up the broker and starts its Pub/Sub task. Redis need not be up: the task
    /// keeps trying, and operations fail with [`Error::Unavailable`] until it is.
    ///
    /// # Errors
    /// [`Error::Unavailable`] for a URL that cannot be used at all.
    pub fn connect(settings: RedisSettings, events: mpsc::Sender<BrokerEvent>) -> Result<Self> {
        let client = redis::Client::open(settings.url.as_str()).map_err(unavailable)?;
        let mut cfg = deadpool_redis::Config::from_url(settings.url.clone());
        cfg.pool = Some(PoolConfig {
            max_size: 16,
            timeouts: Timeouts {
                wait: Some(OP_TIMEOUT),
                create: Some(OP_TIMEOUT),
                recycle: Some(OP_TIMEOUT),
            },
            ..PoolConfig::default()
        });
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(unavailable)?;
        let keys = Keys::new(&settings.prefix);
        let pubsub = Arc::new(PubSubState {
            sink: tokio::sync::Mutex::new(None),
            wanted: std::sync::Mutex::new(HashSet::from([keys.channel(&Channel::Broadcast)])),
            up: AtomicBool::new(false),
        });
        tokio::spawn(run_pubsub(client, keys.clone(), pubsub.clone(), events));
        Ok(RedisBroker {
            settings,
            keys,
            pool,
            pubsub,
            scripts: Scripts {
                publish: Script::new(&scripts::publish_entry()),
                replay: Script::new(&scripts::replay()),
                history: Script::new(&scripts::history()),
                presence_add: Script::new(scripts::PRESENCE_ADD),
                presence_remove: Script::new(scripts::PRESENCE_REMOVE),
                presence_reap: Script::new(scripts::PRESENCE_REAP),
                typing_set: Script::new(scripts::TYPING_SET),
                typing_expire: Script::new(scripts::TYPING_EXPIRE),
                notify: Script::new(&scripts::notify()),
                notifications: Script::new(&scripts::notifications()),
                mark_read: Script::new(&scripts::mark_read()),
                unread: Script::new(&scripts::unread()),
            },
            reaped_self: AtomicBool::new(false),
            cached: std::sync::Mutex::new(None),
        })
    }

    /// Whether the Pub/Sub connection is up.
    pub fn is_up(&self) -> bool {
        self.pubsub.up.load(Ordering::Acquire)
    }

    /// The shared command connection: one multiplexed connection taken from the pool
    /// and kept (its clones pipeline concurrent commands), so a command costs exactly
    /// its own round trip. The pool's per-checkout health check (`UNWATCH` + `PING`)
    /// runs only when a broken connection is replaced.
    async fn conn(&self) -> Result<MultiplexedConnection> {
        if let Some((_, c)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(c.clone());
        }
        let obj = self.pool.get().await.map_err(unavailable)?;
        let c: MultiplexedConnection = (*obj).clone();
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((obj, c.clone()));
        Ok(c)
    }

    /// Forgets a connection that failed, so the next command takes a fresh one.
    fn drop_conn(&self) {
        self.cached.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Runs `f` against the command connection with the operation timeout.
    async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let run = async {
            let conn = self.conn().await?;
            f(conn).await.map_err(|e| {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || e.is_timeout()
                {
                    self.drop_conn();
                }
                unavailable(e)
            })
        };
        match tokio::time::timeout(OP_TIMEOUT, run).await {
            Ok(r) => r,
            Err(_) => {
                self.drop_conn();
                Err(Error::Unavailable("redis timed out".into()))
            }
        }
    }

    fn ttl_s(&self) -> u64 {
        self.settings.history_ttl.as_secs().max(1)
    }

    /// Removes `node`'s presence entries from every room it had, announcing `leave`
    /// for users whose last session went with it.
    async fn reap(&self, node: &str) -> Result<()> {
        let rooms_key = self.keys.node_rooms(node);
        let rooms: Vec<String> = self
            .with_conn(|mut c| {
                let k = rooms_key.clone();
                async move { redis::cmd("SMEMBERS").arg(k).query_async(&mut c).await }
            })
            .await?;
        for room in rooms {
            let (presence, users) = (self.keys.presence(&room), self.keys.presence_users(&room));
            let gone: Vec<String> = self
                .with_conn(|mut c| async move {
                    self.scripts
                        .presence_reap
                        .key(presence)
                        .key(users)
                        .arg(node)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            for user in pairs_to_members(gone) {
                let frame = ServerFrame::Presence {
                    room: room.clone(),
                    event: PresenceEvent::Leave,
                    user,
                };
                self.publish(&Channel::Room(room.clone()), frame.encode().into())
                    .await?;
            }
        }
        let (nodes, node_id) = (self.keys.nodes(), node.to_owned());
        self.with_conn(|mut c| async move {
            redis::pipe()
                .atomic()
                .del(rooms_key)
                .hdel(nodes, node_id)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}

async fn run_pubsub(
    client: redis::Client,
    keys: Keys,
    state: Arc<PubSubState>,
    events: mpsc::Sender<BrokerEvent>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut reported_down = false;
    loop {
        if events.is_closed() {
            return;
        }
        match tokio::time::timeout(OP_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                let names: Vec<String> = state
                    .wanted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                match tokio::time::timeout(OP_TIMEOUT, sink.subscribe(&names)).await {
                    Ok(Ok(())) => {}
                    _ => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
                *state.sink.lock().await = Some(sink);
                state.up.store(true, Ordering::Release);
                tracing::info!(channels = names.len(), "redis pub/sub connected");
                backoff = Duration::from_millis(100);
                if events.send(BrokerEvent::Up).await.is_err() {
                    return;
                }
                while let Some(msg) = stream.next().await {
                    let Some(channel) = keys.parse_channel(msg.get_channel_name()) else {
                        continue;
                    };
                    let frame = Bytes::copy_from_slice(msg.get_payload_bytes());
                    if events
                        .send(BrokerEvent::Message { channel, frame })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                state.up.store(false, Ordering::Release);
                *state.sink.lock().await = None;
                tracing::warn!("redis pub/sub connection lost; reconnecting");
                reported_down = true;
                if events.send(BrokerEvent::Down).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                if !reported_down {
                    tracing::warn!(error = %e, "redis unreachable; retrying with backoff");
                    reported_down = true;
                }
            }
            Err(_) => {
                if !reported_down {
                    tracing::warn!("redis connection timed out; retrying with backoff");
                    reported_down = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[derive(serde::Deserialize)]
struct PresenceValue {
    u: String,
    n: String,
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn subscribe(&self, channel: &Channel) -> Result<()> {
        let name = self.keys.channel(channel);
        self.pubsub
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        let mut sink = self.pubsub.sink.lock().await;
        let res = match sink.as_mut() {
            Some(sink) => match tokio::time::timeout(OP_TIMEOUT, sink.subscribe(&name)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(unavailable(e)),
                Err(_) => Err(Error::Unavailable("redis subscribe timed out".into())),
            },
            None => Err(Error::Unavailable("redis pub/sub is disconnected".into())),
        };
        if res.is_err() && *channel != Channel::Broadcast {
            self.pubsub
                .wanted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        }
        res
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<()> {
        if *channel == Channel::Broadcast {
            return Ok(());
        }
        let name = self.keys.channel(channel);
        self.pubsub
            .wanted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        if let Some(sink) = self.pubsub.sink.lock().await.as_mut() {
            // A failure here means the connection is gone, and with it the subscription.
            let _ = tokio::time::timeout(OP_TIMEOUT, sink.unsubscribe(&name)).await;
        }
        Ok(())
    }

    async fn publish_entry(&self, room: &str, entry: &StoredEntry) -> Result<MessageId> {
        let id: String = self
            .with_conn(|mut c| async move {
                self.scripts
                    .publish
                    .key(self.keys.history(room))
                    .key(self.keys.room_meta(room))
                    .arg(entry.kind.as_str())
                    .arg(&entry.body)
                    .arg(self.settings.history_len)
                    .arg(self.ttl_s())
                    .arg(self.keys.channel(&Channel::Room(room.to_owned())))
                    .arg(fresh_epoch())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        id.parse()
            .map_err(|_| Error::Unavailable(format!("redis returned a bad id {id:?}")))
    }

    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<()> {
        let name = self.keys.channel(channel);
        self.with_conn(|mut c| async move {
            redis::cmd("PUBLISH")
                .arg(name)
                .arg(frame.as_ref())
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn room_state(&self, room: &str) -> Result<RoomState> {
        Ok(self.replay_raw(room, None).await?.state)
    }

    async fn replay(&self, room: &str, since: MessageId) -> Result<Replay> {
        self.replay_raw(room, Some(since)).await
    }

    async fn history(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Bytes>> {
        let frames: Vec<Vec<u8>> = self
            .with_conn(|mut c| async move {
                self.scripts
                    .history
                    .key(self.keys.history(room))
                    .arg(before.map(|b| b.to_string()).unwrap_or_default())
                    .arg(limit)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(frames.into_iter().rev().map(Bytes::from).collect())
    }

    async fn presence_add(&self, room: &str, session: &SessionRef) -> Result<bool> {
        let first: i64 = self
            .with_conn(|mut c| async move {
                self.scripts
                    .presence_add
                    .key(self.keys.presence(room))
                    .key(self.keys.presence_users(room))
                    .key(self.keys.node_rooms(&self.settings.node_id))
                    .arg(&session.session_id)
                    .arg(&session.user.user_id)
                    .arg(&session.user.username)
                    .arg(&self.settings.node_id)
                    .arg(room)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(first == 1)
    }

    async fn presence_remove(&self, room: &str, session: &SessionRef) -> Result<bool> {
        let last: i64 = self
            .with_conn(|mut c| async move {
                self.scripts
                    .presence_remove
                    .key(self.keys.presence(room))
                    .key(self.keys.presence_users(room))
                    .arg(&session.session_id)
                    .arg(&session.user.user_id)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(last == 1)
    }

    async fn presence_members(&self, room: &str) -> Result<Vec<Member>> {
        let key = self.keys.presence(room);
        let values: Vec<String> = self
            .with_conn(
                |mut c| async move { redis::cmd("HVALS").arg(key).query_async(&mut c).await },
            )
            .await?;
        let mut users = BTreeMap::new();
        for v in values {
            if let Ok(p) = serde_json::from_str::<PresenceValue>(&v) {
                users.insert(p.u, p.n);
            }
        }
        Ok(users
            .into_iter()
            .map(|(user_id, username)| Member { user_id, username })
            .collect())
    }

    async fn typing_set(
        &self,
        room: &str,
        user: &Member,
        typing: bool,
        ttl: Duration,
    ) -> Result<Vec<Member>> {
        let flat: Vec<String> = self
            .with_conn(|mut c| async move {
                self.scripts
                    .typing_set
                    .key(self.keys.typing(room))
                    .arg(&user.user_id)
                    .arg(&user.username)
                    .arg(if typing { "1" } else { "0" })
                    .arg(ttl.as_millis() as u64)
                    .arg(now_ms())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(pairs_to_members(flat))
    }

    async fn typing_expire(&self, room: &str) -> Result<Option<Vec<Member>>> {
        let mut flat: Vec<String> = self
            .with_conn(|mut c| async move {
                self.scripts
                    .typing_expire
                    .key(self.keys.typing(room))
                    .arg(now_ms())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if flat.is_empty() || flat.remove(0) != "1" {
            return Ok(None);
        }
        Ok(Some(pairs_to_members(flat)))
    }

    async fn notify(&self, items: &[Notification], cap: usize, ttl: Duration) -> Result<Vec<u64>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let mut inv = self.scripts.notify.prepare_invoke();
        inv.arg(cap.max(1)).arg(ttl.as_millis() as u64).arg(now);
        for n in items {
            let mut stored = n.clone();
            stored.read = false;
            let full = serde_json::to_string(&stored).map_err(unavailable)?;
            let mut bare = serde_json::to_value(&stored).map_err(unavailable)?;
            if let Some(o) = bare.as_object_mut() {
                o.remove("read");
            }
            inv.key(self.keys.notifications(&n.user_id))
                .arg(self.keys.channel(&Channel::User(n.user_id.clone())))
                .arg(format!("{now}|0|{}|{bare}", n.id))
                .arg(full);
        }
        self.with_conn(|mut c| async move { inv.invoke_async(&mut c).await })
            .await
    }

    async fn notifications(
        &self,
        user: &str,
        limit: usize,
        before: Option<&str>,
        unread_only: bool,
        ttl: Duration,
    ) -> Result<(Vec<Notification>, u64)> {
        let out: Vec<String> = self
            .with_conn(|mut c| async move {
                self.scripts
                    .notifications
                    .key(self.keys.notifications(user))
                    .arg(limit)
                    .arg(before.unwrap_or(""))
                    .arg(if unread_only { "1" } else { "0" })
                    .arg(now_ms())
                    .arg(ttl.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut it = out.into_iter();
        let unread = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let mut items = Vec::new();
        while let (Some(r), Some(json)) = (it.next(), it.next()) {
            let mut v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("read".into(), serde_json::Value::Bool(r == "1"));
            }
            if let Ok(n) = serde_json::from_value::<Notification>(v) {
                items.push(n);
            }
        }
        Ok((items, unread))
    }

    async fn mark_read(
        &self,
        user: &str,
        ids: Option<&[String]>,
        origin_session: &str,
        ttl: Duration,
    ) -> Result<(Vec<String>, u64)> {
        let mut inv = self.scripts.mark_read.prepare_invoke();
        inv.key(self.keys.notifications(user))
            .arg(if ids.is_none() { "1" } else { "0" })
            .arg(now_ms())
            .arg(ttl.as_millis() as u64)
            .arg(self.keys.channel(&Channel::User(user.to_owned())))
            .arg(origin_session);
        for id in ids.unwrap_or_default() {
            inv.arg(id);
        }
        let out: Vec<String> = self
            .with_conn(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let mut it = out.into_iter();
        let unread = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        Ok((it.collect(), unread))
    }

    async fn unread(&self, user: &str, ttl: Duration) -> Result<u64> {
        self.with_conn(|mut c| async move {
            self.scripts
                .unread
                .key(self.keys.notifications(user))
                .arg(now_ms())
                .arg(ttl.as_millis() as u64)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    async fn save_restore(&self, user: &str, rooms: &[RestoreRoom], ttl: Duration) -> Result<()> {
        if rooms.is_empty() {
            return Ok(());
        }
        let key = self.keys.restore(user);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for r in rooms {
            let v = serde_json::to_string(r).map_err(unavailable)?;
            pipe.hset(&key, &r.room, v).ignore();
        }
        pipe.pexpire(&key, ttl.as_millis() as i64).ignore();
        self.with_conn(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    async fn take_restore(&self, user: &str) -> Result<Option<Restore>> {
        let key = self.keys.restore(user);
        let (saved, _): (Vec<(String, String)>, i64) = self
            .with_conn(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .hgetall(&key)
                    .del(&key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut rooms: Vec<RestoreRoom> = saved
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str(&v).ok())
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        Ok((!rooms.is_empty()).then_some(Restore { rooms }))
    }

    async fn heartbeat(&self, report: NodeReport) -> Result<()> {
        let me = self.settings.node_id.clone();
        if !self.reaped_self.load(Ordering::Acquire) {
            // Entries a previous run under this node id left behind (it was killed).
            self.reap(&me).await?;
            self.reaped_self.store(true, Ordering::Release);
        }
        let alive_ms = self.settings.heartbeat.as_millis().max(100) as u64;
        let entry =
            serde_json::json!({"connections": report.connections, "ts": now_ms()}).to_string();
        let (alive, nodes) = (self.keys.node_alive(&me), self.keys.nodes());
        let others: Vec<String> = self
            .with_conn(|mut c| {
                let me = me.clone();
                async move {
                    let (_, _, ids): ((), (), Vec<String>) = redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg(alive)
                        .arg(1)
                        .arg("PX")
                        .arg(alive_ms)
                        .hset(&nodes, &me, entry)
                        .hkeys(&nodes)
                        .query_async(&mut c)
                        .await?;
                    Ok(ids.into_iter().filter(|id| *id != me).collect())
                }
            })
            .await?;
        for other in others {
            let (alive, lock) = (self.keys.node_alive(&other), self.keys.reap_lock(&other));
            let claimed: bool = self
                .with_conn(|mut c| async move {
                    let exists: bool = redis::cmd("EXISTS").arg(alive).query_async(&mut c).await?;
                    if exists {
                        return Ok(false);
                    }
                    let got: Option<String> = redis::cmd("SET")
                        .arg(lock)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(10_000)
                        .query_async(&mut c)
                        .await?;
                    Ok(got.is_some())
                })
                .await?;
            if claimed {
                tracing::warn!(node = %other, "node stopped reporting; removing its sessions from presence");
                self.reap(&other).await?;
            }
        }
        Ok(())
    }

    async fn cluster(&self) -> Result<Option<ClusterStats>> {
        let nodes = self.keys.nodes();
        let entries: Vec<(String, String)> = self
            .with_conn(
                |mut c| async move { redis::cmd("HGETALL").arg(nodes).query_async(&mut c).await },
            )
            .await?;
        let mut stats = ClusterStats::default();
        for (id, entry) in entries {
            let alive_key = self.keys.node_alive(&id);
            let alive: bool = self
                .with_conn(|mut c| async move {
                    redis::cmd("EXISTS")
                        .arg(alive_key)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if alive {
                let v: serde_json::Value = serde_json::from_str(&entry).unwrap_or_default();
                stats.connections += v["connections"].as_u64().unwrap_or(0);
                stats.nodes.push(id);
            }
        }
        stats.nodes.sort();
        Ok(Some(stats))
    }

    async fn deregister(&self) -> Result<()> {
        let me = self.settings.node_id.clone();
        let (alive, nodes) = (self.keys.node_alive(&me), self.keys.nodes());
        self.with_conn(|mut c| async move {
            redis::pipe()
                .atomic()
                .del(alive)
                .hdel(nodes, me)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        if !self.is_up() {
            return Err(Error::Unavailable("redis pub/sub is disconnected".into()));
        }
        self.with_conn(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}

impl RedisBroker {
    async fn replay_raw(&self, room: &str, since: Option<MessageId>) -> Result<Replay> {
        let out: Vec<Vec<u8>> = self
            .with_conn(|mut c| async move {
                self.scripts
                    .replay
                    .key(self.keys.history(room))
                    .key(self.keys.room_meta(room))
                    .arg(fresh_epoch())
                    .arg(self.ttl_s())
                    .arg(since.map(|s| s.to_string()).unwrap_or_default())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut it = out.into_iter();
        let epoch = it.next().map(|b| text(&b)).unwrap_or_default();
        let last_id: Option<MessageId> = it.next().and_then(|b| text(&b).parse().ok());
        let max_deleted: MessageId = it
            .next()
            .and_then(|b| text(&b).parse().ok())
            .unwrap_or_default();
        let mut entries = Vec::new();
        while let (Some(id), Some(frame)) = (it.next(), it.next()) {
            if let Ok(id) = text(&id).parse::<MessageId>() {
                entries.push((id, Bytes::from(frame)));
            }
        }
        let complete = match since {
            None => true,
            Some(since) => since >= max_deleted && since <= last_id.unwrap_or(MessageId::ZERO),
        };
        Ok(Replay {
            entries,
            state: RoomState { epoch, last_id },
            complete,
        })
    }
}
