//! The Redis broker's Pub/Sub on a Redis Cluster: sharded Pub/Sub (`SSUBSCRIBE`),
//! so a room's messages go only through the shard that owns the room's slot, never
//! through every node of the cluster as classic Pub/Sub would.
//!
//! One cluster connection (RESP3) holds a connection to each shard the node needs and
//! passes what arrives, in each shard's order, to the node's event channel. Whatever may
//! have made it miss a message is **trouble**: a connection lost (the client's
//! `Disconnection`), a server taking a wanted channel away (`SUNSUBSCRIBE` sent by Redis
//! when the slot moved or its master was demoted), or the bounded queue between the
//! client and this task overflowing. On trouble the node hears [`BrokerEvent::Down`]
//! (the rooms hold what arrives), every wanted channel is subscribed again (each
//! to the master that owns its slot now), and [`BrokerEvent::Up`] starts the gap
//! repair: exact from the stream, or `recovered:false`, never a silent gap.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::broker::{BrokerEvent, Channel};
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::redis_conn::RedisTopology;
use crate::redis_link::{unavailable, OP_TIMEOUT};
use crate::redis_pubsub::{Subscriber, MAX_BACKOFF};
use crate::slots;

/// Pushes waiting between the client and the task; past it a push is dropped and the
/// node repairs the gap (so memory stays bounded when the node cannot keep up). Sized
/// like what Redis itself lets a Pub/Sub client fall behind by (its default output
/// limit is 32 MB): with 16,384 the shard benchmark's overload runs repaired hundreds
/// of times where one Redis, whose TCP buffers hold more, repaired none.
const PUSH_QUEUE: usize = 64 * 1024;
/// Subscribe commands in flight while every wanted channel is subscribed again.
const RESUBSCRIBE_PARALLEL: usize = 32;

/// The node's sharded subscriptions.
pub struct ShardedPubSub {
    /// Channel names.
    keys: Keys,
    /// The cluster connection, once made.
    conn: tokio::sync::Mutex<Option<ClusterConnection>>,
    /// Channel names the node needs.
    wanted: std::sync::Mutex<HashSet<String>>,
    /// Whether every wanted channel is held.
    up: AtomicBool,
}

impl ShardedPubSub {
    /// Starts the subscriptions' task (the cluster need not be up yet).
    ///
    /// # Errors
    /// [`Error::Unavailable`] for seed nodes that cannot be used at all.
    pub fn start(
        nodes: &[String],
        keys: Keys,
        events: mpsc::Sender<BrokerEvent>,
    ) -> Result<Arc<Self>> {
        let (tx, pushes) = mpsc::channel(PUSH_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = overflow.clone();
        let client = redis::cluster::ClusterClientBuilder::new(
            nodes.iter().map(|n| RedisTopology::url_of(n)),
        )
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(move |info: PushInfo| {
            if tx.try_send(info).is_err() {
                flag.store(true, Ordering::Release);
            }
            Ok::<(), ()>(())
        })
        .connection_timeout(OP_TIMEOUT)
        .response_timeout(OP_TIMEOUT)
        .build()
        .map_err(unavailable)?;
        let wanted: HashSet<String> = keys
            .subscriptions(&Channel::Broadcast)
            .into_iter()
            .collect();
        let state = Arc::new(ShardedPubSub {
            keys,
            conn: tokio::sync::Mutex::new(None),
            wanted: std::sync::Mutex::new(wanted),
            up: AtomicBool::new(false),
        });
        tokio::spawn(run(client, state.clone(), pushes, overflow, events));
        Ok(state)
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn connection(&self) -> Result<ClusterConnection> {
        self.conn
            .lock()
            .await
            .clone()
            .ok_or_else(|| Error::Unavailable("redis cluster pub/sub is disconnected".into()))
    }
}

/// `names` by slot: one `SSUBSCRIBE` may only name channels of one slot.
fn by_slot(names: impl IntoIterator<Item = String>) -> Vec<Vec<String>> {
    let mut groups: HashMap<u16, Vec<String>> = HashMap::new();
    for n in names {
        groups.entry(slots::slot(&n)).or_default().push(n);
    }
    groups.into_values().collect()
}

/// Subscribes every group, a few at a time.
async fn subscribe_groups(conn: ClusterConnection, groups: Vec<Vec<String>>) -> Result<()> {
    let results: Vec<Result<()>> = futures_util::stream::iter(groups)
        .map(|group| {
            let mut c = conn.clone();
            async move {
                match tokio::time::timeout(OP_TIMEOUT, c.ssubscribe(&group)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(unavailable(e)),
                    Err(_) => Err(Error::Unavailable("redis ssubscribe timed out".into())),
                }
            }
        })
        .buffer_unordered(RESUBSCRIBE_PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
}

#[async_trait]
impl Subscriber for ShardedPubSub {
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    async fn subscribe(&self, channel: &Channel) -> Result<()> {
        let names = self.keys.subscriptions(channel);
        self.wanted().extend(names.iter().cloned());
        let res = match self.connection().await {
            Ok(conn) => subscribe_groups(conn, by_slot(names.iter().cloned())).await,
            Err(e) => Err(e),
        };
        if res.is_err() && *channel != Channel::Broadcast {
            let mut wanted = self.wanted();
            for n in &names {
                wanted.remove(n);
            }
        }
        res
    }

    async fn unsubscribe(&self, channel: &Channel) {
        if *channel == Channel::Broadcast {
            return;
        }
        let name = self.keys.channel(channel);
        self.wanted().remove(&name);
        if let Ok(mut c) = self.connection().await {
            // A failure here means the connection is gone, and with it the subscription.
            let _ = tokio::time::timeout(OP_TIMEOUT, c.sunsubscribe(&name)).await;
        }
    }
}

/// Subscribes every wanted channel again, after `delay`.
fn resync(state: &Arc<ShardedPubSub>, delay: Duration) -> BoxFuture<'static, Result<()>> {
    let state = state.clone();
    async move {
        tokio::time::sleep(delay).await;
        let conn = state.connection().await?;
        let names: Vec<String> = state.wanted().iter().cloned().collect();
        subscribe_groups(conn, by_slot(names)).await
    }
    .boxed()
}

/// What a push means for the node.
enum Push {
    /// A message on a channel of ours.
    Message(Channel, Bytes),
    /// Something may have been missed.
    Trouble(&'static str),
    /// Nothing to do (confirmations, channels not ours).
    Nothing,
}

fn read_push(state: &ShardedPubSub, info: PushInfo) -> Push {
    let mut data = info.data.into_iter();
    let name = match data.next() {
        Some(Value::BulkString(b)) => String::from_utf8(b).ok(),
        _ => None,
    };
    match info.kind {
        PushKind::SMessage | PushKind::Message => {
            let (Some(name), Some(Value::BulkString(payload))) = (name, data.next()) else {
                return Push::Nothing;
            };
            match state.keys.parse_channel(&name) {
                Some(channel) => Push::Message(channel, Bytes::from(payload)),
                None => Push::Nothing,
            }
        }
        PushKind::Disconnection => Push::Trouble("a shard connection was lost"),
        // Sent by Redis when a slot moved away or its master became a replica; ours
        // (an unsubscribe the node asked for) name channels no longer wanted.
        PushKind::SUnsubscribe if name.is_some_and(|n| state.wanted().contains(&n)) => {
            Push::Trouble("a shard dropped a subscription")
        }
        _ => Push::Nothing,
    }
}

async fn run(
    client: redis::cluster::ClusterClient,
    state: Arc<ShardedPubSub>,
    mut pushes: mpsc::Receiver<PushInfo>,
    overflow: Arc<AtomicBool>,
    events: mpsc::Sender<BrokerEvent>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match tokio::time::timeout(OP_TIMEOUT, client.get_async_connection()).await {
            Ok(Ok(c)) => {
                *state.conn.lock().await = Some(c);
                break;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "redis cluster unreachable; retrying"),
            Err(_) => tracing::warn!("redis cluster connection timed out; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if events.is_closed() {
            return;
        }
    }
    backoff = Duration::from_millis(100);
    let mut pending = Some(resync(&state, Duration::ZERO));
    loop {
        tokio::select! {
            done = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                match done {
                    Ok(()) => {
                        pending = None;
                        backoff = Duration::from_millis(100);
                        state.up.store(true, Ordering::Release);
                        tracing::info!("redis cluster pub/sub: every channel subscribed");
                        if events.send(BrokerEvent::Up).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "redis cluster pub/sub: resubscribing");
                        pending = Some(resync(&state, backoff));
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            push = pushes.recv() => {
                let Some(push) = push else { return };
                let mut trouble = overflow.swap(false, Ordering::AcqRel).then_some("the push queue overflowed");
                let message = match read_push(&state, push) {
                    Push::Message(channel, frame) => Some(BrokerEvent::Message { channel, frame }),
                    Push::Trouble(why) => {
                        trouble = Some(why);
                        None
                    }
                    Push::Nothing => None,
                };
                if let Some(why) = trouble {
                    // Down before anything that came after what may be missing.
                    tracing::warn!(reason = why, "redis cluster pub/sub: repairing");
                    if state.up.swap(false, Ordering::AcqRel)
                        && events.send(BrokerEvent::Down).await.is_err()
                    {
                        return;
                    }
                    pending = Some(resync(&state, Duration::ZERO));
                }
                if let Some(m) = message {
                    if events.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
