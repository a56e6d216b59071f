//! [`RedisLink`]: what every Redis-backed concern shares: the settings, the key names,
//! and one command connection ([`Conn`]: multiplexed to one server or Sentinel's
//! master, or a Redis Cluster connection) with the operation timeout.
//!
//! When Redis is unreachable every operation fails fast with [`Error::Unavailable`]
//! (nothing was stored or sent).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::redis_conn::{Conn, RedisTopology};
use crate::rules::RoomPolicy;

/// How long one Redis operation may take before it counts as unavailable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// How the Redis-backed broker is set up.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Where Redis is.
    pub topology: RedisTopology,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// This node's id (presence entries and the registry carry it).
    pub node_id: String,
    /// The gateway's heartbeat interval: a node is dead once it has not reported for
    /// one interval (it reports twice per interval).
    pub heartbeat: Duration,
    /// Replicas that must hold a message before its publish is answered
    /// (`WAIT`; 0: answered once the master has it).
    pub wait_replicas: u32,
}

/// How the command connection is made.
enum Source {
    /// One Redis: a pool, of which one connection is kept.
    Single(Pool),
    /// A Redis Cluster: one cluster connection (it follows slots and reconnects by
    /// itself).
    Cluster(redis::cluster::ClusterClient),
    /// The master Sentinel names, asked again for every new connection.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// The command side of one node's Redis connection, shared by its concerns.
pub struct RedisLink {
    /// The settings it was made with.
    pub settings: RedisSettings,
    /// Each room's rules (history length and lifetime, presence limits).
    pub policy: Arc<dyn RoomPolicy>,
    /// Every key and channel name.
    pub keys: Keys,
    /// Where a replacement connection comes from.
    source: Source,
    /// The command connection in use (see [`RedisLink::conn`]), with the pooled
    /// object it was taken from on one Redis.
    cached: std::sync::Mutex<Option<(Option<deadpool_redis::Connection>, Conn)>>,
    /// On a cluster, the slots already in this node's `node-slots` set (so a join
    /// adds its room's slot once, not per join).
    noted_slots: std::sync::Mutex<std::collections::HashSet<u16>>,
    /// Held while a replacement is taken from the pool: commands started together
    /// after a failure all wait for the one new connection (and its script load)
    /// instead of each taking a connection of its own.
    replacing: tokio::sync::Mutex<()>,
}

/// A broker error for a Redis failure.
pub fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

/// The wall clock in milliseconds (expiry stamps kept in Redis).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new random history epoch.
pub fn fresh_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// The oldest Redis the broker works with: 7.0 added `entries-added` to `XINFO STREAM`,
/// without which trimming cannot be told apart from an intact history (a replay could
/// be vouched for across a gap).
pub const MIN_REDIS: (u32, u32) = (7, 0);

/// The `major.minor` of a `redis_version:` line of `INFO server`.
pub fn parse_version(info: &str) -> Option<(u32, u32)> {
    let v = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))?;
    let mut parts = v.trim().split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Loads the publish script on a new connection, before any publish runs on it.
///
/// Publishes go as `EVALSHA` in a pipeline (`RedisBroker::publish_entries`), with no
/// load-and-retry per command (a retried command would be stored after the ones
/// behind it): the script is loaded on every connection the node starts using, and
/// again after a `NOSCRIPT` (a `SCRIPT FLUSH` on a live connection), which refuses
/// only the publishes that met it.
/// On a cluster `SCRIPT LOAD` goes to every master.
async fn load_publish_script(c: &mut Conn, keys: &Keys) -> Result<()> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(keys.script(&crate::scripts::publish_entry()))
        .query_async::<redis::Value>(c)
        .await
        .map(drop)
        .map_err(unavailable)
}

/// Refuses a Redis older than [`MIN_REDIS`]: every operation then fails with a reason
/// that says so (and `/readyz` answers 503), rather than losing trim detection.
/// (On a cluster, one master is asked: they run one version.)
async fn check_version(c: &mut Conn) -> Result<()> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server");
    let info: String = match c {
        Conn::Single(c) => cmd.query_async(c).await,
        Conn::Cluster(c) => c
            .route_command(
                cmd,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await
            .and_then(|v| redis::from_redis_value(v).map_err(Into::into)),
    }
    .map_err(unavailable)?;
    match parse_version(&info) {
        Some(v) if v >= MIN_REDIS => Ok(()),
        Some((major, minor)) => {
            let msg = format!(
                "Redis {major}.{minor} is too old: wsgate needs Redis {}.{} or newer",
                MIN_REDIS.0, MIN_REDIS.1
            );
            tracing::error!("{msg}");
            Err(Error::Unavailable(msg))
        }
        None => Ok(()),
    }
}

impl RedisLink {
    /// A link to `settings.topology`. Redis need not be up: commands fail with
    /// [`Error::Unavailable`] until it is.
    ///
    /// # Errors
    /// [`Error::Unavailable`] for a URL that cannot be used at all.
    pub fn new(settings: RedisSettings, policy: Arc<dyn RoomPolicy>) -> Result<Self> {
        let source = match &settings.topology {
            RedisTopology::Single(url) => {
                let mut cfg = deadpool_redis::Config::from_url(url.clone());
                cfg.pool = Some(PoolConfig {
                    max_size: 16,
                    timeouts: Timeouts {
                        wait: Some(OP_TIMEOUT),
                        create: Some(OP_TIMEOUT),
                        recycle: Some(OP_TIMEOUT),
                    },
                    ..PoolConfig::default()
                });
                Source::Single(
                    cfg.create_pool(Some(Runtime::Tokio1))
                        .map_err(unavailable)?,
                )
            }
            RedisTopology::Cluster(nodes) => Source::Cluster(
                redis::cluster::ClusterClientBuilder::new(
                    nodes.iter().map(|n| RedisTopology::url_of(n)),
                )
                // No retry by the client: a command whose connection failed may
                // have run (a retried publish would be stored twice). Redirections
                // (MOVED) refresh the slot map and answer `unavailable` once.
                .retries(0)
                .connection_timeout(OP_TIMEOUT)
                .response_timeout(OP_TIMEOUT)
                .build()
                .map_err(unavailable)?,
            ),
            RedisTopology::Sentinel { sentinels, master } => {
                Source::Sentinel(tokio::sync::Mutex::new(sentinel_client(sentinels, master)?))
            }
        };
        let keys = match settings.topology {
            RedisTopology::Cluster(_) => Keys::sharded(&settings.prefix, &settings.node_id),
            _ => Keys::new(&settings.prefix),
        };
        Ok(RedisLink {
            keys,
            settings,
            policy,
            source,
            cached: std::sync::Mutex::new(None),
            noted_slots: std::sync::Mutex::new(Default::default()),
            replacing: tokio::sync::Mutex::new(()),
        })
    }

    /// The shared command connection: one multiplexed connection taken from the pool
    /// and kept (its clones pipeline concurrent commands), so a command costs exactly
    /// its own round trip. The pool's per-checkout health check (`UNWATCH` + `PING`)
    /// runs only when a broken connection is replaced.
    async fn conn(&self) -> Result<Conn> {
        if let Some(c) = self.cached_conn() {
            return Ok(c);
        }
        let _replacing = self.replacing.lock().await;
        if let Some(c) = self.cached_conn() {
            return Ok(c);
        }
        let (obj, mut c) = match &self.source {
            Source::Single(pool) => {
                let obj = pool.get().await.map_err(unavailable)?;
                let c = Conn::Single((*obj).clone());
                (Some(obj), c)
            }
            Source::Cluster(client) => (
                None,
                Conn::Cluster(client.get_async_connection().await.map_err(unavailable)?),
            ),
            Source::Sentinel(sentinel) => {
                let client = sentinel
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(unavailable)?;
                let c = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(unavailable)?;
                (None, Conn::Single(c))
            }
        };
        check_version(&mut c).await?;
        load_publish_script(&mut c, &self.keys).await?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((obj, c.clone()));
        Ok(c)
    }

    /// A client for the Pub/Sub connection of one Redis or of Sentinel's current
    /// master (`None` on a cluster: its Pub/Sub is sharded).
    pub async fn pubsub_client(&self) -> Result<Option<redis::Client>> {
        match &self.source {
            Source::Single(_) => match &self.settings.topology {
                RedisTopology::Single(url) => redis::Client::open(url.as_str())
                    .map(Some)
                    .map_err(unavailable),
                _ => Ok(None),
            },
            Source::Cluster(_) => Ok(None),
            Source::Sentinel(sentinel) => sentinel
                .lock()
                .await
                .async_get_client()
                .await
                .map(Some)
                .map_err(unavailable),
        }
    }

    fn cached_conn(&self) -> Option<Conn> {
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, c)| c.clone())
    }

    /// Loads the publish script again on the command connection (after `NOSCRIPT`).
    pub async fn reload_publish_script(&self) {
        if let Ok(mut c) = self.conn().await {
            if let Err(e) = load_publish_script(&mut c, &self.keys).await {
                tracing::warn!(error = %e, "cannot load the publish script");
            }
        }
    }

    /// Forgets a connection that failed, so the next command takes a fresh one (a
    /// cluster connection is kept: it reconnects and follows the slots by itself).
    fn drop_conn(&self) {
        if !matches!(self.source, Source::Cluster(_)) {
            self.cached.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// Whether `e` means the connection is no use any more: it broke, or (Sentinel)
    /// the server it reaches is no longer the master.
    fn is_lost(&self, e: &redis::RedisError) -> bool {
        e.is_io_error()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_timeout()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    }

    /// Runs `f` against the command connection with the operation timeout.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis fails or does not answer in time.
    pub async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let run = async {
            let conn = self.conn().await?;
            f(conn).await.map_err(|e| {
                if self.is_lost(&e) {
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

    /// On a cluster, records that this node keeps a room index in `room`'s slot
    /// before its first presence entry there, so a survivor that reaps this node
    /// finds it ([`crate::registry_redis`]).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis fails.
    pub async fn note_slot(&self, room: &str) -> Result<()> {
        self.note_slot_of(&self.keys.history(room)).await
    }

    /// [`RedisLink::note_slot`] for the slot of `key` (a user's keys, for the index
    /// of users this node has sessions of).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis fails.
    pub async fn note_slot_of(&self, key: &str) -> Result<()> {
        if !self.keys.is_sharded() {
            return Ok(());
        }
        let slot = crate::slots::slot(key);
        let noted = |s: &Self| {
            s.noted_slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&slot)
        };
        if noted(self) {
            return Ok(());
        }
        let key = self.keys.node_slots(&self.settings.node_id);
        self.with_conn(|mut c| async move {
            redis::cmd("SADD")
                .arg(key)
                .arg(slot)
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
        self.noted_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot);
        Ok(())
    }

    /// Forgets which slots were recorded (Redis lost the registry: record them again).
    pub fn forget_noted_slots(&self) {
        self.noted_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// A room history's idle expiry, in whole seconds.
    pub fn ttl_s(&self, room: &str) -> u64 {
        self.policy.rules(room).history_ttl.as_secs().max(1)
    }
}

/// A Sentinel client for `master`, asking `sentinels` in turn.
fn sentinel_client(sentinels: &[String], master: &str) -> Result<redis::sentinel::SentinelClient> {
    redis::sentinel::SentinelClient::build(
        sentinels.iter().map(|s| RedisTopology::url_of(s)).collect(),
        master.to_owned(),
        None,
        redis::sentinel::SentinelServerType::Master,
    )
    .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        use super::parse_version;
        assert_eq!(
            parse_version("# Server\r\nredis_version:7.0.15\r\n"),
            Some((7, 0))
        );
        assert_eq!(parse_version("redis_version:6.2.6"), Some((6, 2)));
        assert!(parse_version("redis_version:6.2.6").unwrap() < super::MIN_REDIS);
        assert_eq!(parse_version("nothing"), None);
    }
}
