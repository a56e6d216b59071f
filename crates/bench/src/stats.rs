//! Latency histograms and per-subscriber delivery accounting.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a µs histogram, in milliseconds.
pub(crate) fn percentiles_ms(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "mean": h.mean() / 1000.0,
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

/// The p99 of a µs histogram, in ms (0 when empty).
pub(crate) fn p99_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// Gaps remembered per (subscriber, publisher) to tell a late message from a duplicate.
const MAX_MISSING: usize = 4096;

/// What one subscriber got from one publisher in one run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tracker {
    next: u64,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Sequence numbers received again.
    pub dup: u64,
    /// Sequence numbers received after a later one.
    pub ooo: u64,
    missing: Vec<u64>,
    overflow: bool,
}

impl Tracker {
    /// Accounts for sequence number `seq`.
    pub(crate) fn see(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
            self.unique += 1;
        } else if seq > self.next {
            for s in self.next..seq {
                if self.missing.len() >= MAX_MISSING {
                    self.overflow = true;
                    break;
                }
                self.missing.push(s);
            }
            self.next = seq + 1;
            self.unique += 1;
        } else if let Some(pos) = self.missing.iter().position(|&m| m == seq) {
            self.missing.swap_remove(pos);
            self.ooo += 1;
            self.unique += 1;
        } else if self.overflow {
            // Too many gaps to remember: count it as late rather than duplicated.
            self.ooo += 1;
            self.unique += 1;
        } else {
            self.dup += 1;
        }
    }
}

/// Counters of a run, mergeable across tasks.
#[derive(Debug, Clone)]
pub(crate) struct RunStats {
    /// Delivery latency, µs.
    pub hist: Histogram<u64>,
    /// Deliveries of the measured run.
    pub deliveries: u64,
    /// Distinct (publisher, seq) per subscriber.
    pub unique: u64,
    /// Expected but never received.
    pub lost: u64,
    /// Received more than once.
    pub dup: u64,
    /// Received after a later message of the same publisher.
    pub ooo: u64,
    /// Deliveries of other runs (warm-up, or late from a previous step).
    pub stray: u64,
    /// First and last measured delivery, ns since the origin.
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// Subscribers whose connection ended (since the start).
    pub closed: u64,
    /// Close codes seen (since the start).
    pub close_codes: BTreeMap<String, u64>,
}

impl Default for RunStats {
    fn default() -> Self {
        RunStats {
            hist: histogram(),
            deliveries: 0,
            unique: 0,
            lost: 0,
            dup: 0,
            ooo: 0,
            stray: 0,
            first_ns: u64::MAX,
            last_ns: 0,
            closed: 0,
            close_codes: BTreeMap::new(),
        }
    }
}

impl RunStats {
    /// Adds `other` into `self`.
    pub(crate) fn merge(&mut self, other: &RunStats) {
        let _ = self.hist.add(&other.hist);
        self.deliveries += other.deliveries;
        self.unique += other.unique;
        self.lost += other.lost;
        self.dup += other.dup;
        self.ooo += other.ooo;
        self.stray += other.stray;
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
        self.closed += other.closed;
        for (k, v) in &other.close_codes {
            *self.close_codes.entry(k.clone()).or_default() += v;
        }
    }

    /// Folds per-subscriber trackers (one per publisher) into the counters, given how
    /// many messages each publisher sent.
    pub(crate) fn account(&mut self, trackers: &[Tracker], sent: &[u64]) {
        for (t, &s) in trackers.iter().zip(sent) {
            self.unique += t.unique;
            self.dup += t.dup;
            self.ooo += t.ooo;
            self.lost += s.saturating_sub(t.unique);
        }
    }
}
