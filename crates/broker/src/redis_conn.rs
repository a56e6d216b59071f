//! Where a node's Redis is ([`RedisTopology`]: one server, a Redis Cluster, or a
//! master found through Sentinel) and the command connection each gives ([`Conn`]),
//! one type for every Redis-backed concern whatever the topology.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Where the Redis of a cluster of gateways is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One Redis: `redis://host:port/db`.
    Single(String),
    /// A Redis Cluster, reached through any of these seed nodes (`redis://host:port`).
    /// Keys carry hash tags and fan-out uses sharded Pub/Sub (`SSUBSCRIBE`/`SPUBLISH`).
    Cluster(Vec<String>),
    /// The master that Sentinel names `master`, asked of any of `sentinels`
    /// (`redis://host:port`); followed through failovers.
    Sentinel {
        /// The sentinels.
        sentinels: Vec<String>,
        /// The master's name in Sentinel's configuration.
        master: String,
    },
}

impl RedisTopology {
    /// A `host:port` or URL as a `redis://` URL.
    pub fn url_of(node: &str) -> String {
        let node = node.trim();
        if node.contains("://") {
            node.to_owned()
        } else {
            format!("redis://{node}")
        }
    }

    /// What logs and `/api/stats` say about it (no passwords).
    pub fn describe(&self) -> String {
        match self {
            RedisTopology::Single(_) => "redis".into(),
            RedisTopology::Cluster(n) => format!("redis cluster ({} seed nodes)", n.len()),
            RedisTopology::Sentinel { master, .. } => format!("redis sentinel master {master}"),
        }
    }
}

/// A command connection: multiplexed to one server, or a cluster connection that
/// routes each command (or single-slot pipeline) to the master of its slot.
#[derive(Clone)]
pub enum Conn {
    /// One server (a single Redis, or Sentinel's current master).
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RedisTopology;

    #[test]
    fn nodes_become_urls() {
        assert_eq!(
            RedisTopology::url_of("10.0.0.1:7000"),
            "redis://10.0.0.1:7000"
        );
        assert_eq!(
            RedisTopology::url_of(" redis://:pw@h:1 "),
            "redis://:pw@h:1"
        );
        let t = RedisTopology::Cluster(vec!["redis://:secret@h:1".into()]);
        assert!(!t.describe().contains("secret"));
    }
}
