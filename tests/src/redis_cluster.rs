//! A throwaway Redis Cluster on loopback ports: `masters` masters with `replicas`
//! replicas each, made by `redis-cli --cluster create`, without persistence, with a
//! short node timeout (1 s) so a failover takes a few seconds. Every process is
//! stopped, by PID, on drop; its files live in a temporary directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One node of a [`RedisCluster`].
pub struct ClusterNode {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

/// A running Redis Cluster.
pub struct RedisCluster {
    /// Every node, masters first as created (roles change after a failover).
    pub nodes: Vec<ClusterNode>,
    dir: std::path::PathBuf,
}

/// A free port P whose cluster bus port, P + 10000, is free too (an ephemeral port
/// plus 10000 may be past 65535): drawn from 20000-29999.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919);
    for _ in 0..10_000 {
        let port = 20_000 + ((seed + NEXT.fetch_add(1, Ordering::Relaxed) * 7) % 10_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// Runs `redis-cli` against `port` and returns its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli (tests/run.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl RedisCluster {
    /// Starts the nodes, makes the cluster and waits until every node says
    /// `cluster_state:ok` and sees every other.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wsgate-redis-cluster-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let count = masters * (1 + replicas);
        let mut c = RedisCluster {
            nodes: Vec::with_capacity(count),
            dir,
        };
        for _ in 0..count {
            let port = free_port();
            let child = Command::new("redis-server")
                .current_dir(&c.dir)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "1000"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (is it installed? tests/run.sh installs it)");
            c.nodes.push(ClusterNode {
                child: Some(child),
                port,
            });
        }
        for n in &c.nodes {
            wait_until(
                Duration::from_secs(20),
                "redis cluster node to answer",
                || cli(n.port, &["PING"]).trim() == "PONG",
            );
        }
        let addrs: Vec<String> = c
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        let r = replicas.to_string();
        args.extend(["--cluster-replicas", &r, "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_ok(Duration::from_secs(30));
        c
    }

    /// Waits until every running node says `cluster_state:ok` and knows every slot's
    /// master.
    pub fn wait_ok(&self, timeout: Duration) {
        let running: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect();
        wait_until(timeout, "the redis cluster to be ok", || {
            running.iter().all(|&p| {
                let info = cli(p, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            })
        });
    }

    /// `host:port` of every node (the gateway's `--redis-cluster-nodes`).
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// Ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| cli(n.port, &["ROLE"]).starts_with("master"))
            .map(|n| n.port)
            .collect()
    }

    /// The port of the master that owns `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = cli(self.nodes[0].port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot");
        for port in self.masters() {
            let nodes = cli(port, &["CLUSTER", "NODES"]);
            for line in nodes.lines().filter(|l| l.contains("myself")) {
                for range in line.split_whitespace().skip(8) {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                        if (a..=b).contains(&slot) {
                            return port;
                        }
                    }
                }
            }
        }
        panic!("no master owns slot {slot}");
    }

    /// Sends SIGKILL to the node on `port` (by PID).
    pub fn kill9(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// The sum of one `INFO commandstats` counter (e.g. `cmdstat_spublish`) over the
    /// running nodes.
    pub fn command_calls(&self, stat: &str) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| {
                cli(n.port, &["INFO", "commandstats"])
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{stat}:calls=")))
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
