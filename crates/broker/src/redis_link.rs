//! [`RedisLink`]: what every Redis-backed concern shares: the settings, the key names,
//! and one multiplexed command connection with the operation timeout.
//!
//! When Redis is unreachable every operation fails fast with [`Error::Unavailable`]
//! (nothing was stored or sent).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use redis::aio::MultiplexedConnection;

use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::rules::RoomPolicy;

/// How long one Redis operation may take before it counts as unavailable.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// How the Redis-backed broker is set up.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// This node's id (presence entries and the registry carry it).
    pub node_id: String,
    /// The gateway's heartbeat interval: a node is dead once it has not reported for
    /// one interval (it reports twice per interval).
    pub heartbeat: Duration,
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
    pool: Pool,
    /// The pooled command connection in use (see [`RedisLink::conn`]).
    cached: std::sync::Mutex<Option<(deadpool_redis::Connection, MultiplexedConnection)>>,
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
async fn load_publish_script(c: &mut MultiplexedConnection) -> Result<()> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(crate::scripts::publish_entry())
        .query_async::<String>(c)
        .await
        .map(drop)
        .map_err(unavailable)
}

/// Refuses a Redis older than [`MIN_REDIS`]: every operation then fails with a reason
/// that says so (and `/readyz` answers 503), rather than losing trim detection.
async fn check_version(c: &mut MultiplexedConnection) -> Result<()> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(c)
        .await
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
    /// A link to `settings.url`. Redis need not be up: commands fail with
    /// [`Error::Unavailable`] until it is.
    ///
    /// # Errors
    /// [`Error::Unavailable`] for a URL that cannot be used at all.
    pub fn new(settings: RedisSettings, policy: Arc<dyn RoomPolicy>) -> Result<Self> {
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
        Ok(RedisLink {
            keys: Keys::new(&settings.prefix),
            settings,
            policy,
            pool,
            cached: std::sync::Mutex::new(None),
            replacing: tokio::sync::Mutex::new(()),
        })
    }

    /// The shared command connection: one multiplexed connection taken from the pool
    /// and kept (its clones pipeline concurrent commands), so a command costs exactly
    /// its own round trip. The pool's per-checkout health check (`UNWATCH` + `PING`)
    /// runs only when a broken connection is replaced.
    async fn conn(&self) -> Result<MultiplexedConnection> {
        if let Some(c) = self.cached_conn() {
            return Ok(c);
        }
        let _replacing = self.replacing.lock().await;
        if let Some(c) = self.cached_conn() {
            return Ok(c);
        }
        let obj = self.pool.get().await.map_err(unavailable)?;
        let mut c: MultiplexedConnection = (*obj).clone();
        check_version(&mut c).await?;
        load_publish_script(&mut c).await?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((obj, c.clone()));
        Ok(c)
    }

    fn cached_conn(&self) -> Option<MultiplexedConnection> {
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, c)| c.clone())
    }

    /// Loads the publish script again on the command connection (after `NOSCRIPT`).
    pub async fn reload_publish_script(&self) {
        if let Ok(mut c) = self.conn().await {
            if let Err(e) = load_publish_script(&mut c).await {
                tracing::warn!(error = %e, "cannot load the publish script");
            }
        }
    }

    /// Forgets a connection that failed, so the next command takes a fresh one.
    fn drop_conn(&self) {
        self.cached.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Runs `f` against the command connection with the operation timeout.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when Redis fails or does not answer in time.
    pub async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T>
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

    /// A room history's idle expiry, in whole seconds.
    pub fn ttl_s(&self, room: &str) -> u64 {
        self.policy.rules(room).history_ttl.as_secs().max(1)
    }
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
