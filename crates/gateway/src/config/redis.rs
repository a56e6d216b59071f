//! The flags that say where a cluster's Redis is: one server (`--redis-url`), a Redis
//! Cluster (`--redis-cluster-nodes`, or a `redis+cluster://` URL) or Sentinel
//! (`--redis-sentinels` with `--redis-master-name`).

use clap::Args;
use wsgate_broker::RedisTopology;

/// Redis topology flags (beside `--redis-url` and `--redis-prefix`).
#[derive(Debug, Clone, Default, Args)]
pub struct RedisArgs {
    /// Redis Cluster seed nodes, `host:port,host:port,…` (Redis 7 or newer): rooms
    /// spread over the shards, fan-out over sharded Pub/Sub. Instead of --redis-url.
    #[arg(long, env = "WSGATE_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,

    /// Redis Sentinel addresses, `host:port,…`: the node follows the master named
    /// by --redis-master-name through failovers. Instead of --redis-url.
    #[arg(long, env = "WSGATE_REDIS_SENTINELS", value_delimiter = ',')]
    pub redis_sentinels: Vec<String>,

    /// The master's name in Sentinel's configuration (with --redis-sentinels).
    #[arg(long, env = "WSGATE_REDIS_MASTER_NAME")]
    pub redis_master_name: Option<String>,

    /// Replicas that must confirm a message (Redis `WAIT`) before its publish is
    /// answered; one not confirmed within 500 ms is answered `unavailable`. 0: answered
    /// once the master stored it (a failover may then lose the last messages). With
    /// replicas behind a cluster or Sentinel, 1 makes an acknowledged message survive
    /// its master's loss.
    #[arg(long, env = "WSGATE_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,
}

/// `host:port` lists of `redis+cluster://host:port,host:port` or `…/?…`.
fn cluster_url_nodes(url: &str) -> Option<Vec<String>> {
    let rest = url.strip_prefix("redis+cluster://")?;
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    Some(
        hosts
            .split(',')
            .filter(|h| !h.trim().is_empty())
            .map(|h| h.trim().to_owned())
            .collect(),
    )
}

/// A `host:port` (or `redis://…` URL) that names a port.
fn valid_node(node: &str) -> bool {
    let addr = node.trim();
    let addr = addr.rsplit_once('@').map_or(addr, |(_, a)| a);
    let addr = addr.strip_prefix("redis://").unwrap_or(addr);
    let addr = addr.split('/').next().unwrap_or_default();
    matches!(addr.rsplit_once(':'), Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

impl RedisArgs {
    /// Where Redis is, from these flags and `--redis-url`; `None`: the embedded
    /// broker.
    ///
    /// # Errors
    /// A message naming the flag when they contradict each other or a node is not a
    /// `host:port`.
    pub fn topology(
        &self,
        redis_url: Option<&str>,
        prefix: &str,
    ) -> Result<Option<RedisTopology>, String> {
        let cluster = match redis_url.and_then(cluster_url_nodes) {
            Some(nodes) if !self.redis_cluster_nodes.is_empty() => {
                let _ = nodes;
                return Err(
                    "give either --redis-cluster-nodes or a redis+cluster:// --redis-url, not both"
                        .into(),
                );
            }
            Some(nodes) => nodes,
            None => self.redis_cluster_nodes.clone(),
        };
        let url = redis_url.filter(|u| !u.starts_with("redis+cluster://"));
        let chosen = [
            url.is_some(),
            !cluster.is_empty(),
            !self.redis_sentinels.is_empty(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if chosen > 1 {
            return Err(
                "give one of --redis-url, --redis-cluster-nodes and --redis-sentinels".into(),
            );
        }
        if self.redis_master_name.is_some() && self.redis_sentinels.is_empty() {
            return Err("--redis-master-name goes with --redis-sentinels".into());
        }
        if !cluster.is_empty() {
            if let Some(bad) = cluster.iter().find(|n| !valid_node(n)) {
                return Err(format!("--redis-cluster-nodes: {bad:?} is not a host:port"));
            }
            if prefix.contains(['{', '}']) {
                return Err("--redis-prefix must not hold { or } on a Redis Cluster (they are its hash tags)".into());
            }
            return Ok(Some(RedisTopology::Cluster(cluster)));
        }
        if !self.redis_sentinels.is_empty() {
            if let Some(bad) = self.redis_sentinels.iter().find(|n| !valid_node(n)) {
                return Err(format!("--redis-sentinels: {bad:?} is not a host:port"));
            }
            let Some(master) = self.redis_master_name.clone().filter(|m| !m.is_empty()) else {
                return Err("--redis-sentinels needs --redis-master-name".into());
            };
            return Ok(Some(RedisTopology::Sentinel {
                sentinels: self.redis_sentinels.clone(),
                master,
            }));
        }
        match url {
            Some(u)
                if u.starts_with("redis://")
                    || u.starts_with("rediss://")
                    || u.starts_with("unix://") =>
            {
                Ok(Some(RedisTopology::Single(u.to_owned())))
            }
            Some(_) => {
                Err("--redis-url must be a redis:// URL (or redis+cluster://host:port,…)".into())
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RedisArgs {
        RedisArgs::default()
    }

    #[test]
    fn topologies() {
        assert_eq!(args().topology(None, "w"), Ok(None));
        assert_eq!(
            args().topology(Some("redis://h:1/0"), "w"),
            Ok(Some(RedisTopology::Single("redis://h:1/0".into())))
        );
        assert_eq!(
            args().topology(Some("redis+cluster://a:1,b:2/?x=y"), "w"),
            Ok(Some(RedisTopology::Cluster(vec![
                "a:1".into(),
                "b:2".into()
            ])))
        );
        let mut a = args();
        a.redis_cluster_nodes = vec!["a:7000".into(), "redis://:pw@b:7001".into()];
        assert!(
            matches!(a.topology(None, "w"), Ok(Some(RedisTopology::Cluster(n))) if n.len() == 2)
        );
        assert!(a.topology(Some("redis://h:1"), "w").is_err());
        assert!(a.topology(None, "w{x}").is_err());
        a.redis_cluster_nodes = vec!["a".into()];
        assert!(a.topology(None, "w").is_err());
        let mut s = args();
        s.redis_sentinels = vec!["s1:26379".into()];
        assert!(s.topology(None, "w").is_err(), "needs a master name");
        s.redis_master_name = Some("mymaster".into());
        assert_eq!(
            s.topology(None, "w"),
            Ok(Some(RedisTopology::Sentinel {
                sentinels: vec!["s1:26379".into()],
                master: "mymaster".into()
            }))
        );
        let mut m = args();
        m.redis_master_name = Some("x".into());
        assert!(m.topology(None, "w").is_err());
        assert!(args().topology(Some("http://h"), "w").is_err());
    }
}
