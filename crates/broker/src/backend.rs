//! [`Backend`]: the four concerns a gateway node uses, built together over one
//! store: the embedded one ([`Backend::memory`]) or Redis ([`Backend::redis`]).

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
}

impl Backend {
    /// The embedded backend of a single node, each room's history and presence kept
    /// as `policy` says; what subscribed channels receive goes to `events`.
    pub fn memory(policy: Arc<dyn RoomPolicy>, events: mpsc::Sender<BrokerEvent>) -> Self {
        let bus = Arc::new(MemoryBus::new(events));
        Backend {
            broker: Arc::new(MemoryBroker::new(policy.clone(), bus.clone())),
            presence: Arc::new(MemoryPresence::new(policy)),
            inbox: Arc::new(MemoryInbox::new(bus)),
            registry: Arc::new(LocalRegistry),
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
        Ok(Backend {
            broker: Arc::new(RedisBroker::new(link.clone(), pubsub)),
            presence: Arc::new(RedisPresence::new(link.clone())),
            inbox: Arc::new(RedisInbox::new(link.clone())),
            registry: Arc::new(RedisRegistry::new(link)),
        })
    }
}
