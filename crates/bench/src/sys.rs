//! What the bench reads from the operating system: CPU time and RSS of a process
//! (`/proc/PID/stat`, `/proc/PID/status`), the kernel's `Slab` (`/proc/meminfo`), the
//! open-file limit, and signals (sent with the `kill` command, by PID).

use std::sync::OnceLock;

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that cannot be run).
pub(crate) fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) a process used so far; `pid` "self" for this one.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = it.nth(11)?.parse().ok()?;
    let stime: f64 = it.next()?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// The bench's own CPU seconds so far.
pub(crate) fn self_cpu() -> f64 {
    cpu_seconds("self").unwrap_or(0.0)
}

/// A `Key:   N kB` line of a /proc file, in KiB.
fn kib_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// VmRSS of a process, KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS")
}

/// `Slab:` of /proc/meminfo, KiB.
pub(crate) fn slab_kib() -> Option<u64> {
    kib_field("/proc/meminfo", "Slab")
}

/// Raises the open-file soft limit to the hard limit; returns (soft, hard) after.
pub(crate) fn raise_nofile() -> (u64, u64) {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0))
}

/// Sends a signal (e.g. "KILL") to a PID with the `kill` command.
pub(crate) fn kill(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed: {status}");
    Ok(())
}

/// CPU seconds of several PIDs at one moment.
#[derive(Debug, Clone)]
pub(crate) struct CpuSample {
    /// Per PID: CPU seconds (None if unreadable).
    pub pids: Vec<(u32, Option<f64>)>,
    /// The bench's own CPU seconds.
    pub own: f64,
    /// When.
    pub at: std::time::Instant,
}

impl CpuSample {
    /// Samples now.
    pub(crate) fn take(pids: &[u32]) -> Self {
        CpuSample {
            pids: pids
                .iter()
                .map(|p| (*p, cpu_seconds(&p.to_string())))
                .collect(),
            own: self_cpu(),
            at: std::time::Instant::now(),
        }
    }

    /// A JSON report of the CPU used between `self` and `later`, with µs per `work`
    /// (e.g. deliveries) when `work` > 0.
    pub(crate) fn report(&self, later: &CpuSample, work: u64, unit: &str) -> serde_json::Value {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        let per = |cpu: f64| {
            if work > 0 {
                serde_json::json!(cpu * 1e6 / work as f64)
            } else {
                serde_json::Value::Null
            }
        };
        let pids: Vec<_> = self
            .pids
            .iter()
            .zip(&later.pids)
            .map(|((pid, a), (_, b))| {
                let cpu = match (a, b) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                };
                let mut m = serde_json::json!({
                    "pid": pid,
                    "cpu_s": cpu,
                    "cpu_pct": cpu.map(|c| 100.0 * c / wall.max(1e-9)),
                    "rss_kib": rss_kib(*pid),
                });
                if !unit.is_empty() {
                    m[format!("cpu_us_per_{unit}")] = cpu.map(per).unwrap_or_default();
                }
                m
            })
            .collect();
        let total: f64 = self
            .pids
            .iter()
            .zip(&later.pids)
            .filter_map(|((_, a), (_, b))| Some(b.as_ref()? - a.as_ref()?))
            .sum();
        let own = later.own - self.own;
        let mut m = serde_json::json!({
            "window_s": wall,
            "gateways": pids,
            "gateway_cpu_s_total": if self.pids.is_empty() { serde_json::Value::Null } else { serde_json::json!(total) },
            "bench_cpu_s": own,
            "bench_cpu_pct": 100.0 * own / wall.max(1e-9),
        });
        if !unit.is_empty() {
            m[format!("gateway_cpu_us_per_{unit}")] = if self.pids.is_empty() {
                serde_json::Value::Null
            } else {
                per(total)
            };
            m[format!("bench_cpu_us_per_{unit}")] = per(own);
        }
        m
    }
}
