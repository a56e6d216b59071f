//! New sessions per second per node: each node's `wsgate_connections_total`, polled
//! every 250 ms; the peak is the largest increase over 4 consecutive polls (1 s).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::http::{self, Base};

/// Poll interval.
const EVERY: Duration = Duration::from_millis(250);
/// Polls per window (4 × 250 ms = 1 s).
const WINDOW: usize = 4;
/// The counter read.
const COUNTER: &str = "wsgate_connections_total";

/// The value of an unlabelled counter `name` in Prometheus text.
pub(super) fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// One node's polls, in order: `None` where it did not answer.
#[derive(Debug)]
pub(super) struct Series {
    /// The node's base URL.
    pub url: String,
    /// One value per poll.
    pub values: Vec<Option<f64>>,
}

/// Polls `base` until `stop`.
pub(super) async fn poll(base: Base, mut stop: watch::Receiver<bool>) -> Series {
    let mut values = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        let v = match http::request(&base, "GET", "/metrics", None, None, EVERY * 3).await {
            Ok(a) if a.status == 200 => counter(&a.body, COUNTER),
            _ => None,
        };
        values.push(v);
    }
    Series {
        url: base.url,
        values,
    }
}

/// Per poll, the sessions counted since the previous answer (0 where the node did not
/// answer, or where the counter went down: a new process, a new baseline).
fn increases(values: &[Option<f64>]) -> (Vec<f64>, u64) {
    let mut base: Option<f64> = None;
    let mut restarts = 0;
    let out = values
        .iter()
        .map(|v| match (*v, base) {
            (Some(v), Some(b)) => {
                base = Some(v);
                if v >= b {
                    v - b
                } else {
                    restarts += 1;
                    0.0
                }
            }
            (Some(v), None) => {
                base = Some(v);
                0.0
            }
            (None, _) => 0.0,
        })
        .collect();
    (out, restarts)
}

/// The largest sum of increases within `WINDOW` consecutive polls.
fn peak(values: &[Option<f64>]) -> (f64, u64) {
    let (inc, restarts) = increases(values);
    let best = inc
        .windows(WINDOW.min(inc.len()).max(1))
        .map(|w| w.iter().sum::<f64>())
        .fold(0.0, f64::max);
    (best, restarts)
}

/// The report: the peak over nodes and each node's figures.
pub(super) fn report(series: &[Series]) -> (Value, Value) {
    let mut max: Option<f64> = None;
    let nodes: Vec<Value> = series
        .iter()
        .map(|s| {
            let (p, restarts) = peak(&s.values);
            max = Some(max.map_or(p, |m: f64| m.max(p)));
            json!({
                "url": s.url,
                "peak_handshakes_per_s": p,
                "polls": s.values.len(),
                "unanswered": s.values.iter().filter(|v| v.is_none()).count(),
                "restarts_seen": restarts,
            })
        })
        .collect();
    (json!(max), json!(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counter_and_its_peak_across_a_restart() {
        let text = "# HELP wsgate_connections_total x\n# TYPE wsgate_connections_total counter\n\
                    wsgate_connections_total_x 9\nwsgate_connections_total 42\n";
        assert_eq!(counter(text, COUNTER), Some(42.0));
        assert_eq!(counter("nothing", COUNTER), None);
        // 10 in one poll, gone (restarting), back lower (a new baseline), 50 in one poll.
        let v = [
            Some(100.0),
            Some(110.0),
            None,
            None,
            None,
            Some(3.0),
            Some(53.0),
            Some(53.0),
            Some(53.0),
        ];
        assert_eq!(peak(&v), (50.0, 1));
        assert_eq!(peak(&[Some(1.0), Some(5.0)]).0, 4.0);
        assert_eq!(peak(&[]).0, 0.0);
    }
}
