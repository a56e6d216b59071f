//! The Redis broker's Pub/Sub connection on one Redis (or Sentinel's master): one per
//! node, subscribed per channel (never by pattern), feeding what arrives, in order,
//! into the node's event channel. It reconnects with capped backoff (asking Sentinel
//! for the master again each time) and, once back, resubscribes every channel the
//! node needs and says so with [`BrokerEvent::Up`]. [`Subscriber`] is what the broker
//! needs of it and of its Redis Cluster counterpart ([`crate::redis_sharded`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::mpsc;

use crate::broker::{BrokerEvent, Channel};
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::redis_link::{unavailable, RedisLink, OP_TIMEOUT};

/// Longest pause between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A node's subscriptions to Redis Pub/Sub, whatever the topology.
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Whether every channel the node needs is held (so nothing is being missed).
    fn is_up(&self) -> bool;

    /// Subscribes `channel`, and keeps it through reconnections.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the connection is down or does not answer.
    async fn subscribe(&self, channel: &Channel) -> Result<()>;

    /// Unsubscribes `channel` (the broadcast channel is always kept).
    async fn unsubscribe(&self, channel: &Channel);
}

/// The node's Pub/Sub connection and the channels it must hold.
pub struct PubSub {
    /// Channel names.
    keys: Keys,
    /// The command side of the connection; `None` while disconnected.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Channel names the node needs: resubscribed after every reconnection.
    wanted: std::sync::Mutex<HashSet<String>>,
    /// Whether the connection is up.
    up: AtomicBool,
}

impl PubSub {
    /// Starts the connection's task (Redis need not be up yet).
    pub fn start(link: Arc<RedisLink>, events: mpsc::Sender<BrokerEvent>) -> Arc<Self> {
        let keys = link.keys.clone();
        let state = Arc::new(PubSub {
            wanted: std::sync::Mutex::new(HashSet::from([keys.channel(&Channel::Broadcast)])),
            keys,
            sink: tokio::sync::Mutex::new(None),
            up: AtomicBool::new(false),
        });
        tokio::spawn(run(link, state.clone(), events));
        state
    }

    fn wanted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Subscriber for PubSub {
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    async fn subscribe(&self, channel: &Channel) -> Result<()> {
        let name = self.keys.channel(channel);
        self.wanted().insert(name.clone());
        let mut sink = self.sink.lock().await;
        let res = match sink.as_mut() {
            Some(sink) => match tokio::time::timeout(OP_TIMEOUT, sink.subscribe(&name)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(unavailable(e)),
                Err(_) => Err(Error::Unavailable("redis subscribe timed out".into())),
            },
            None => Err(Error::Unavailable("redis pub/sub is disconnected".into())),
        };
        if res.is_err() && *channel != Channel::Broadcast {
            self.wanted().remove(&name);
        }
        res
    }

    async fn unsubscribe(&self, channel: &Channel) {
        if *channel == Channel::Broadcast {
            return;
        }
        let name = self.keys.channel(channel);
        self.wanted().remove(&name);
        if let Some(sink) = self.sink.lock().await.as_mut() {
            // A failure here means the connection is gone, and with it the subscription.
            let _ = tokio::time::timeout(OP_TIMEOUT, sink.unsubscribe(&name)).await;
        }
    }
}

async fn run(link: Arc<RedisLink>, state: Arc<PubSub>, events: mpsc::Sender<BrokerEvent>) {
    let mut backoff = Duration::from_millis(100);
    let mut reported_down = false;
    loop {
        if events.is_closed() {
            return;
        }
        let connect = async {
            match link.pubsub_client().await? {
                Some(client) => client.get_async_pubsub().await.map_err(unavailable),
                None => Err(Error::Unavailable("no pub/sub server".into())),
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, connect).await {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut stream) = pubsub.split();
                let names: Vec<String> = state.wanted().iter().cloned().collect();
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
                    let Some(channel) = state.keys.parse_channel(msg.get_channel_name()) else {
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
