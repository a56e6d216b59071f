//! The back end: `POST /api/publish` at a fixed open-loop rate, round-robin over the
//! rooms, each message carrying its send time; every accepted id is recorded per room.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use wsgate_protocol::MessageId;

use super::http::{self, Base};
use crate::stamp;
use crate::stats;

/// How long one publish request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the back end did.
#[derive(Debug, Clone)]
pub(super) struct Published {
    /// Requests sent.
    pub sent: u64,
    /// Accepted ids, per room index.
    pub accepted: Vec<HashSet<MessageId>>,
    /// Answered 503 (nothing stored or sent).
    pub refused: u64,
    /// Other failures by kind (`http:502`, `timeout`, `tcp`, …): unknown outcome.
    pub errors: BTreeMap<String, u64>,
    /// Request round trip of accepted publishes, µs.
    pub rtt: Histogram<u64>,
}

impl Published {
    /// Nothing yet, shared with the publishing task.
    pub(super) fn shared(rooms: usize) -> Arc<Mutex<Published>> {
        Arc::new(Mutex::new(Published {
            sent: 0,
            accepted: vec![HashSet::new(); rooms],
            refused: 0,
            errors: BTreeMap::new(),
            rtt: stats::histogram(),
        }))
    }

    /// Publishes accepted so far.
    pub(super) fn accepted_n(&self) -> u64 {
        self.accepted.iter().map(|r| r.len() as u64).sum()
    }
}

/// The room of client or message `i`.
pub(super) fn room_name(i: usize, rooms: usize) -> String {
    format!("deploy-{}", i % rooms)
}

/// Publishes `rate` msgs/s from now until `stop` says so, recording into `out`, then
/// waits for the requests still in flight.
pub(super) async fn run(
    api: Base,
    key: Option<String>,
    rooms: usize,
    rate: f64,
    out: Arc<Mutex<Published>>,
    mut stop: watch::Receiver<bool>,
) {
    let key: Option<Arc<str>> = key.map(Arc::from);
    let api = Arc::new(api);
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut inflight = JoinSet::new();
    let mut n: u64 = 0;
    loop {
        let due = start + interval.mul_f64(n as f64);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        let k = n as usize % rooms;
        let body = json!({
            "room": room_name(k, rooms),
            "data": {"n": n, "t": stamp::now_ns()},
        })
        .to_string();
        let (api, key, shared) = (api.clone(), key.clone(), out.clone());
        inflight.spawn(async move {
            let t0 = stamp::now_ns();
            let r = http::request(
                &api,
                "POST",
                "/api/publish",
                key.as_deref(),
                Some(&body),
                REQUEST_TIMEOUT,
            )
            .await;
            let rtt_us = (stamp::now_ns() - t0) / 1000;
            let mut o = shared.lock().unwrap_or_else(|e| e.into_inner());
            match r {
                Ok(a) if a.status == 200 => {
                    let id = serde_json::from_str::<serde_json::Value>(&a.body)
                        .ok()
                        .and_then(|v| v["id"].as_str().and_then(|s| s.parse().ok()));
                    match id {
                        Some(id) => {
                            o.accepted[k].insert(id);
                            o.rtt.saturating_record(rtt_us);
                        }
                        None => *o.errors.entry("bad_answer".into()).or_default() += 1,
                    }
                }
                Ok(a) if a.status == 503 => o.refused += 1,
                Ok(a) => *o.errors.entry(format!("http:{}", a.status)).or_default() += 1,
                Err(kind) => *o.errors.entry(kind).or_default() += 1,
            }
        });
        n += 1;
        out.lock().unwrap_or_else(|e| e.into_inner()).sent = n;
        // Reap finished requests as we go.
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}
