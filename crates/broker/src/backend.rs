//! [`Backend`]: the concerns a gateway node uses, built together over one store: the
//! embedded one ([`Backend::memory`]) or Redis ([`Backend::redis`]); with webhooks,
//! [`Backend::memory_recording`] and [`Backend::redis_recording`] say what presence,
//! online counts and the reaper record in the outbox.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::{Broker, BrokerEvent};
use crate::broker_memory::MemoryBroker;
use crate::broker_redis::RedisBroker;
use crate::bus::MemoryBus;
use crate::error::Result;
use crate::inbox::Inbox;
use crate::inbox_memory::MemoryInbox;
use crate::inbox_redis::RedisInbox;
use crate::online::Online;
use crate::online_memory::MemoryOnline;
use crate::online_redis::RedisOnline;
use crate::outbox::{Outbox, Recording};
use crate::outbox_memory::MemoryOutbox;
use crate::outbox_redis::{RedisOutbox, RedisRecorder};
use crate::presence::Presence;
use crate::presence_memory::MemoryPresence;
use crate::presence_redis::RedisPresence;
use crate::redis_conn::RedisTopology;
use crate::redis_link::{RedisLink, RedisSettings};
use crate::redis_pubsub::{PubSub, Subscriber};
use crate::redis_sharded::ShardedPubSub;
use crate::registry::Registry;
use crate::registry_memory::LocalRegistry;
use crate::registry_redis::RedisRegistry;
use crate::rules::RoomPolicy;

/// What a node shares with the rest of its cluster.
#[derive(Clone)]
pub struct Backend {
    /// Publishing, subscriptions and history.
    pub broker: Arc<dyn Broker>,
    /// Room membership and typing.
    pub presence: Arc<dyn Presence>,
    /// Notifications and saved session state.
    pub inbox: Arc<dyn Inbox>,
    /// The node registry.
    pub registry: Arc<dyn Registry>,
    /// Webhook events owed, until delivered.
    pub outbox: Arc<dyn Outbox>,
    /// Sessions per user, cluster-wide (for `user_offline`).
    pub online: Arc<dyn Online>,
}

impl Backend {
    /// The embedded backend of a single node, each room's history and presence kept
    /// as `policy` says; what subscribed channels receive goes to `events`.
    pub fn memory(policy: Arc<dyn RoomPolicy>, events: mpsc::Sender<BrokerEvent>) -> Self {
        Self::memory_recording(policy, events, Recording::OFF)
    }

    /// [`Backend::memory`], recording the webhook events `recording` selects.
    pub fn memory_recording(
        policy: Arc<dyn RoomPolicy>,
        events: mpsc::Sender<BrokerEvent>,
        recording: Recording,
    ) -> Self {
        let bus = Arc::new(MemoryBus::new(events));
        let outbox = Arc::new(MemoryOutbox::new(recording));
        Backend {
            broker: Arc::new(MemoryBroker::new(policy.clone(), bus.clone())),
            presence: Arc::new(MemoryPresence::recording(policy, outbox.clone())),
            inbox: Arc::new(MemoryInbox::new(bus)),
            registry: Arc::new(LocalRegistry),
            online: Arc::new(MemoryOnline::new(outbox.clone())),
            outbox,
        }
    }

    /// The Redis backend of a cluster node, and its Pub/Sub task. Redis need not be up:
    /// the task keeps trying, and operations fail with [`crate::Error::Unavailable`]
    /// until it is.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] for a URL that cannot be used at all.
    pub fn redis(
        settings: RedisSettings,
        policy: Arc<dyn RoomPolicy>,
        events: mpsc::Sender<BrokerEvent>,
    ) -> Result<Self> {
        Self::redis_recording(settings, policy, events, Recording::OFF)
    }

    /// [`Backend::redis`], recording the webhook events `recording` selects.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] for a URL that cannot be used at all.
    pub fn redis_recording(
        settings: RedisSettings,
        policy: Arc<dyn RoomPolicy>,
        events: mpsc::Sender<BrokerEvent>,
        recording: Recording,
    ) -> Result<Self> {
        if let RedisTopology::Single(url) = &settings.topology {
            redis::Client::open(url.as_str()).map_err(crate::redis_link::unavailable)?;
        }
        let link = Arc::new(RedisLink::new(settings, policy)?);
        let pubsub: Arc<dyn Subscriber> = match &link.settings.topology {
            RedisTopology::Cluster(nodes) => {
                ShardedPubSub::start(nodes, link.keys.clone(), events)?
            }
            _ => PubSub::start(link.clone(), events),
        };
        let recorder = Arc::new(RedisRecorder::new(link.clone(), recording));
        Ok(Backend {
            broker: Arc::new(RedisBroker::new(link.clone(), pubsub)),
            presence: Arc::new(RedisPresence::new(link.clone(), recorder.clone())),
            inbox: Arc::new(RedisInbox::new(link.clone())),
            registry: Arc::new(RedisRegistry::new(link.clone(), recorder.clone())),
            online: Arc::new(RedisOnline::new(link.clone(), recorder.clone())),
            outbox: Arc::new(RedisOutbox::new(link, recorder)),
        })
    }
}
