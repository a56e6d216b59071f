//! [`Fleet`]: the subscribers and publishers of a fan-out run, connected once and
//! reused across its steps.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::adapter::{self, Target};
use crate::cli::{Common, Load};
use crate::conn::{self, Endpoint, Ws};
use crate::progress;
use crate::publisher::{Failure, Publisher};
use crate::sub::{Group, Shared};

/// Connected subscribers and publishers, reusable across steps.
pub(crate) struct Fleet {
    pub(crate) groups: Vec<Group>,
    pub(crate) pubs: Vec<Publisher>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) failure: Arc<Failure>,
    pub(crate) subscribers: usize,
    pub(crate) next_run: u32,
    pub(crate) closed_seen: u64,
    /// How the connections were made.
    pub setup: Value,
}

/// Connects `count` clients (user ids from `user`, spread over `eps` and sources),
/// joined to `room`, `concurrency` at a time; fails on the first error.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn connect_many(
    what: &str,
    count: usize,
    eps: &[Endpoint],
    c: &Common,
    room: impl Fn(usize) -> String,
    user: impl Fn(usize) -> String,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
    offset: usize,
) -> anyhow::Result<Vec<Ws>> {
    let srcs = conn::sources(c.sources.unwrap_or(0));
    let pb = progress::bar(count as u64, what);
    let target = c.target;
    let timeout = c.connect_timeout;
    let mut results = futures_util::stream::iter(0..count)
        .map(|i| {
            let ep = eps[(offset + i) % eps.len()].clone();
            let src = if srcs.is_empty() {
                None
            } else {
                Some(conn::any_port(srcs[(offset + i) % srcs.len()]))
            };
            let u = user(i);
            let room = room(i);
            async move {
                let r = adapter::connect_joined(&ep, target, &u, src, config, &room, timeout).await;
                (i, ep, r)
            }
        })
        .buffer_unordered(c.connect_concurrency.max(1));
    let mut out: Vec<Option<Ws>> = (0..count).map(|_| None).collect();
    while let Some((i, ep, r)) = results.next().await {
        match r {
            Ok(ws) => out[i] = Some(ws),
            Err(e) => {
                pb.finish_and_clear();
                anyhow::bail!(
                    "{what} {i}: could not connect to {}: {e}",
                    ep.request_url(target, &user(i))
                );
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out.into_iter().flatten().collect())
}

/// Tasks for `count` connections: `per_task`, or about 8 per runtime thread.
pub(crate) fn per_task(count: usize, per_task: usize) -> usize {
    if per_task > 0 {
        return per_task;
    }
    let threads = crate::threads().max(1);
    count.div_ceil(8 * threads).clamp(16, 4096)
}

impl Fleet {
    /// Connects the subscribers, then the publishers.
    pub(crate) async fn connect(c: &Common, l: &Load, max_rate: f64) -> anyhow::Result<Fleet> {
        anyhow::ensure!(l.publishers >= 1, "--publishers must be at least 1");
        anyhow::ensure!(
            wsgate_protocol::names::valid_room(&l.room),
            "--room {:?} is not a valid room name",
            l.room
        );
        let eps = conn::endpoints(&c.url)?;
        let t0 = Instant::now();
        let distinct = l.distinct_users;
        let subs = connect_many(
            "subscriber",
            l.subscribers,
            &eps,
            c,
            |_| l.room.clone(),
            |i| {
                if distinct {
                    format!("bench-sub-{i}")
                } else {
                    "bench-sub".to_owned()
                }
            },
            conn::small_config(),
            0,
        )
        .await?;
        let sub_s = t0.elapsed().as_secs_f64();
        let shared = Arc::new(Shared::default());
        let chunk = per_task(subs.len(), l.per_task);
        let mut groups = Vec::new();
        let mut it = subs.into_iter().peekable();
        while it.peek().is_some() {
            let conns: Vec<(Ws, Target)> = it.by_ref().take(chunk).map(|w| (w, c.target)).collect();
            groups.push(Group::spawn(conns, l.publishers, shared.clone()));
        }
        let pubs_ws = connect_many(
            "publisher",
            l.publishers,
            &eps,
            c,
            |_| l.room.clone(),
            |i| format!("bench-pub-{i}"),
            conn::publisher_config(),
            0,
        )
        .await?;
        let failure = Arc::new(Failure::default());
        let per_pub = max_rate / l.publishers as f64;
        let pubs = pubs_ws
            .into_iter()
            .enumerate()
            .map(|(i, ws)| Publisher::new(ws, i as u32, c.target, failure.clone(), per_pub))
            .collect();
        let setup = json!({
            "subscribers_connected": l.subscribers,
            "subscriber_connect_s": sub_s,
            "subscriber_connects_per_s": l.subscribers as f64 / sub_s.max(1e-9),
            "tasks": groups.len(),
            "connections_per_task": chunk,
        });
        Ok(Fleet {
            groups,
            pubs,
            shared,
            failure,
            subscribers: l.subscribers,
            next_run: 1,
            closed_seen: 0,
            setup,
        })
    }

    /// Closes everything.
    pub(crate) async fn close(mut self) {
        self.failure.closing.store(true, Ordering::Relaxed);
        for p in self.pubs.drain(..) {
            p.close().await;
        }
        for g in &self.groups {
            g.stop().await;
        }
    }

    pub(crate) fn delivered(&self) -> u64 {
        self.groups
            .iter()
            .map(|g| g.delivered.load(Ordering::Relaxed))
            .sum()
    }
}
