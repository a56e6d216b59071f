//! The broker's contracts, one module per concern, each held against the embedded
//! (memory) and the Redis implementation through one suite parameterised by a factory.

mod broker;
mod inbox;
mod outbox;
mod presence;
mod registry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wsgate_broker::{
    Backend, BrokerEvent, Channel, EventSet, Recording, RedisSettings, RedisTopology, RoomPolicy,
    RoomRules,
};
use wsgate_e2e::{RedisCluster, RedisServer};
use wsgate_protocol::server::{Member, StoredEntry};

/// A backend under test, its event channel, and what keeps its store alive.
pub(crate) struct Made {
    pub(crate) b: Backend,
    pub(crate) rx: mpsc::Receiver<BrokerEvent>,
    pub(crate) _redis: Option<RedisServer>,
}

/// Makes a backend keeping the given history length.
pub(crate) type Factory = fn(usize) -> Pin<Box<dyn Future<Output = Made>>>;

/// The rules of the suite's rooms: every room keeps `history_len` entries; rooms named
/// `cap:*` take at most 3 distinct users, rooms named `pm:*` list members up to 4.
pub(crate) struct TestPolicy(usize);

impl RoomPolicy for TestPolicy {
    fn rules(&self, room: &str) -> RoomRules {
        let mut r = RoomRules::with_history(self.0, Duration::from_secs(3600));
        if room.starts_with("cap:") {
            r.max_members = Some(3);
        }
        if room.starts_with("pm:") {
            r.presence_max_members = 4;
        }
        r
    }
}

pub(crate) fn policy(history_len: usize) -> Arc<dyn RoomPolicy> {
    Arc::new(TestPolicy(history_len))
}

/// Most events an outbox of the suite's backends holds.
pub(crate) const OUTBOX_LEN: usize = 20;

/// Every backend of the suite records every webhook event.
pub(crate) fn recording() -> Recording {
    Recording {
        events: EventSet::all(),
        max_len: OUTBOX_LEN,
    }
}

pub(crate) fn memory(history_len: usize) -> Pin<Box<dyn Future<Output = Made>>> {
    Box::pin(async move {
        let (tx, rx) = mpsc::channel(1024);
        Made {
            b: Backend::memory_recording(policy(history_len), tx, recording()),
            rx,
            _redis: None,
        }
    })
}

/// Settings of a node on `url` (and the history length of its rooms).
pub(crate) fn settings(url: String, node_id: &str, history_len: usize) -> (RedisSettings, usize) {
    let s = RedisSettings {
        topology: wsgate_broker::RedisTopology::Single(url),
        prefix: "conformance".into(),
        node_id: node_id.into(),
        heartbeat: Duration::from_secs(1),
        wait_replicas: 0,
    };
    (s, history_len)
}

/// A Redis backend once its Pub/Sub connection is up.
pub(crate) async fn redis_node(
    (settings, history_len): (RedisSettings, usize),
) -> (Backend, mpsc::Receiver<BrokerEvent>) {
    let (tx, mut rx) = mpsc::channel(1024);
    let b = Backend::redis_recording(settings, policy(history_len), tx, recording()).unwrap();
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(BrokerEvent::Up)) => {}
        other => panic!("redis broker did not come up: {other:?}"),
    }
    (b, rx)
}

pub(crate) fn redis(history_len: usize) -> Pin<Box<dyn Future<Output = Made>>> {
    Box::pin(async move {
        let server = RedisServer::start();
        let (b, rx) = redis_node(settings(server.url(), "n1", history_len)).await;
        Made {
            b,
            rx,
            _redis: Some(server),
        }
    })
}

tokio::task_local! {
    /// The Redis Cluster the `cluster` variant of a suite runs on.
    static CLUSTER_SEEDS: Vec<String>;
}

/// Runs `f` with [`cluster`] backends made on a new 3-master Redis Cluster.
pub(crate) async fn on_a_cluster<F: Future<Output = ()>>(f: F) {
    let c = RedisCluster::start(3, 0);
    CLUSTER_SEEDS.scope(c.seeds(), f).await;
    drop(c);
}

/// A backend on the Redis Cluster of [`on_a_cluster`], under a prefix of its own.
pub(crate) fn cluster(history_len: usize) -> Pin<Box<dyn Future<Output = Made>>> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    Box::pin(async move {
        let seeds = CLUSTER_SEEDS.with(Clone::clone);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (mut s, len) = settings(String::new(), "n1", history_len);
        s.topology = RedisTopology::Cluster(seeds);
        s.prefix = format!("conformance{n}");
        let (b, rx) = redis_node((s, len)).await;
        Made {
            b,
            rx,
            _redis: None,
        }
    })
}

pub(crate) fn member(id: &str) -> Member {
    Member {
        user_id: id.into(),
        username: id.to_uppercase(),
    }
}

pub(crate) fn entry(room: &str, text: &str) -> StoredEntry {
    StoredEntry::message(room, &member("a"), text, "2026-01-01T00:00:00.000Z")
}

pub(crate) async fn next_frame(rx: &mut mpsc::Receiver<BrokerEvent>) -> (Channel, String) {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(BrokerEvent::Message { channel, frame })) => {
            (channel, String::from_utf8(frame.to_vec()).unwrap())
        }
        other => panic!("no frame: {other:?}"),
    }
}

/// `suite!(a, b)` runs the contract tests `a` and `b` of the calling module against
/// both implementations (`memory::a`, `redis::a`, …), and all of them, one after the
/// other, on one Redis Cluster (`cluster::all`: the Redis implementation with the
/// cluster's key layout and sharded Pub/Sub).
#[macro_export]
macro_rules! suite {
    ($($name:ident),*) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::redis).await;
                }
            )*
        }
        mod cluster {
            #[tokio::test]
            async fn all() {
                $crate::on_a_cluster(async {
                    $(
                        eprintln!("cluster: {}", stringify!($name));
                        super::$name($crate::cluster).await;
                    )*
                })
                .await;
            }
        }
    };
}
