//! The delivery task of one node: takes events from the outbox (new ones, and ones a
//! dead node left), POSTs them in batches, signed, and acknowledges them once the back
//! end answered 2xx. A batch that fails is POSTed again after a wait that doubles from
//! [`BACKOFF_MIN`] up to `--webhook-backoff-max-ms`, with jitter, and kept from going
//! stale (held) meanwhile, so no other node takes it over while this one is alive.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use wsgate_broker::Taken;

use crate::config::WebhookArgs;
use crate::hooks::signature;
use crate::http_client::{HttpClient, HttpError, Limits};
use crate::node::Node;

/// The first wait before a batch is POSTed again.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// How often an idle node looks at the outbox.
pub const POLL: Duration = Duration::from_millis(100);
/// Largest answer body read (and ignored).
const MAX_ANSWER: usize = 1 << 20;

/// One node's delivery task.
pub(super) struct Deliverer {
    /// The node (outbox, metrics).
    pub(super) node: Arc<Node>,
    /// The flags.
    pub(super) args: WebhookArgs,
    /// Where batches go.
    pub(super) url: Uri,
    /// The signing key.
    pub(super) key: ring::hmac::Key,
    /// The pooled client.
    pub(super) client: HttpClient,
    /// Cancelled at shutdown: take nothing new (the embedded outbox: until it is empty).
    pub(super) stop: CancellationToken,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `d` with equal jitter: between half of it and all of it.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

fn result_label(r: &Result<StatusCode, HttpError>) -> &'static str {
    match r {
        Ok(s) if s.is_success() => "2xx",
        Ok(s) if s.is_redirection() => "3xx",
        Ok(s) if s.is_client_error() => "4xx",
        Ok(_) => "5xx",
        Err(_) => "error",
    }
}

impl Deliverer {
    fn claim(&self) -> Duration {
        Duration::from_millis(self.args.webhook_claim_ms)
    }

    /// Counts what the outbox reports (depth, and events dropped since last time:
    /// logged at most every ten seconds).
    fn sync_metrics(&self, dropped_seen: &mut u64, warned: &mut Option<std::time::Instant>) {
        let m = &self.node.metrics;
        m.webhook_queue_depth.set(self.node.outbox.depth() as i64);
        let dropped = self.node.outbox.dropped();
        if dropped > *dropped_seen {
            m.webhook_events
                .get_or_create(&vec![("outcome", "dropped")])
                .inc_by(dropped - *dropped_seen);
            *dropped_seen = dropped;
            if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    total = dropped,
                    "webhook outbox full: the oldest events were dropped (--webhook-queue-len)"
                );
                *warned = Some(std::time::Instant::now());
            }
        }
    }

    /// Waits `d`, or less when stopped.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// Delivers until stopped (and, for the embedded outbox, emptied).
    pub(super) async fn run(self) {
        let outbox = self.node.outbox.clone();
        let embedded = self.node.broker.kind() == "memory";
        let max = self.args.webhook_batch_max;
        let (mut dropped_seen, mut warned, mut failing) = (0, None, false);
        loop {
            self.sync_metrics(&mut dropped_seen, &mut warned);
            if self.stop.is_cancelled() && (!embedded || outbox.depth() == 0) {
                return;
            }
            let mut batch = match outbox.take(max, self.claim()).await {
                Ok(b) => b,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "webhook outbox unavailable");
                        failing = true;
                    }
                    self.pause(POLL * 10).await;
                    continue;
                }
            };
            failing = false;
            if batch.is_empty() {
                self.pause(POLL).await;
                continue;
            }
            let wait = Duration::from_millis(self.args.webhook_batch_ms);
            if batch.len() < max && !wait.is_zero() && !self.stop.is_cancelled() {
                tokio::time::sleep(wait).await;
                if let Ok(more) = outbox.take(max - batch.len(), self.claim()).await {
                    batch.extend(more);
                }
            }
            batch.sort_by(|a, b| (a.time_ms, &a.id).cmp(&(b.time_ms, &b.id)));
            self.deliver(batch).await;
        }
    }

    /// POSTs `batch` until the back end takes it or the attempts run out, then
    /// acknowledges it.
    async fn deliver(&self, batch: Vec<Taken>) {
        let body = super::body::encode(&batch, now_ms());
        let metrics = &self.node.metrics;
        let n = batch.len() as u64;
        let mut backoff = BACKOFF_MIN;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.post(&body).await;
            metrics
                .webhook_requests
                .get_or_create(&vec![("result", result_label(&result))])
                .inc();
            let outcome = match &result {
                Ok(s) if s.is_success() => Some("delivered"),
                _ if self.args.webhook_max_attempts > 0
                    && attempt >= self.args.webhook_max_attempts =>
                {
                    tracing::error!(events = n, attempts = attempt, last = ?result, "webhook batch given up");
                    Some("failed")
                }
                _ => None,
            };
            if let Some(outcome) = outcome {
                self.ack(&batch).await;
                metrics
                    .webhook_events
                    .get_or_create(&vec![("outcome", outcome)])
                    .inc_by(n);
                return;
            }
            tracing::debug!(events = n, attempt, result = ?result, "webhook batch not taken; retrying");
            self.wait_holding(&batch, jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_millis(self.args.webhook_backoff_max_ms));
        }
    }

    /// Waits `d` while keeping `batch` from going stale.
    async fn wait_holding(&self, batch: &[Taken], d: Duration) {
        let step = self.claim() / 3;
        let end = tokio::time::Instant::now() + d;
        loop {
            if let Err(e) = self.node.outbox.hold(batch).await {
                tracing::debug!(error = %e, "could not hold a webhook batch");
            }
            let now = tokio::time::Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(step)).await;
        }
    }

    /// Acknowledges `batch`, trying a few times (if it fails, the batch is delivered
    /// again once stale: at least once).
    async fn ack(&self, batch: &[Taken]) {
        for _ in 0..5 {
            match self.node.outbox.ack(batch).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook acknowledgement failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// One signed POST of `body`; its status.
    async fn post(&self, body: &Bytes) -> Result<StatusCode, HttpError> {
        let ts = now_ms() / 1000;
        let req = Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("wsgate/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-wsgate-node", &self.node.node_id)
            .header(signature::TIMESTAMP_HEADER, ts)
            .header(
                signature::SIGNATURE_HEADER,
                signature::sign(&self.key, ts, body),
            )
            .body(Full::new(body.clone()))
            .map_err(|e| HttpError::Failed(e.to_string()))?;
        let limits = Limits {
            timeout: Duration::from_millis(self.args.webhook_timeout_ms),
            max_body: MAX_ANSWER,
        };
        let started = std::time::Instant::now();
        let res = self.client.send(req, limits).await;
        self.node
            .metrics
            .webhook_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        res.map(|r| r.status)
    }
}
