//! Prometheus metrics of one node.
//!
//! Counters are bumped once per event, never once per recipient: a fan-out adds
//! its delivery count in one step.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use wsgate_protocol::{CloseCode, ErrorCode};

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric of the node, registered once.
pub struct Metrics {
    /// The registry the metrics are encoded from.
    registry: Registry,
    /// Open WebSocket connections.
    pub connections_active: Gauge,
    /// WebSocket connections ever accepted.
    pub connections_total: Counter,
    /// Client frames received, by `type` (`invalid` for unparsable ones).
    pub frames_in: Family<Labels, Counter>,
    /// Frames queued to clients, by `type`.
    pub frames_out: Family<Labels, Counter>,
    /// Frames handed to local sessions by fan-out.
    pub fanout_deliveries: Counter,
    /// `error` frames sent, by code.
    pub errors: Family<Labels, Counter>,
    /// Connections closed, by close code (1006: dropped without a close frame).
    pub closes: Family<Labels, Counter>,
    /// Connections closed because their send queue overflowed.
    pub slow_consumer_closes: Counter,
    /// Connections closed before a complete request, by `reason`
    /// (`handshake_timeout`, `too_many_handshakes`).
    pub early_closes: Family<Labels, Counter>,
    /// HTTP requests refused before the upgrade, by status.
    pub handshake_refusals: Family<Labels, Counter>,
    /// Rooms with at least one local member (set when scraped).
    pub rooms_active: Gauge,
    /// 1 while the broker's connection is up.
    pub broker_up: Gauge,
    /// Times the broker's connection was lost.
    pub broker_disconnects: Counter,
    /// Client frames refused with `unavailable` because the broker failed.
    pub broker_errors: Counter,
    /// New sessions refused by `--accept-rate` (503 with `Retry-After`).
    pub admission_refusals: Counter,
    /// Rooms refilled in place from their history after a broker gap.
    pub gap_refills: Counter,
    /// Stored messages a refill delivered (counted once per message, not per member).
    pub gap_refilled_messages: Counter,
    /// Rooms whose members were told `resync` after a gap that could not be refilled.
    pub gap_resyncs: Counter,
    /// Presence removals that failed and wait for a retry.
    pub presence_removals_pending: Gauge,
    /// Presence removals that held on a retry.
    pub presence_retries: Counter,
    /// Presence removals lost because too many were waiting.
    pub presence_removals_lost: Counter,
    /// JWKS fetches, by `outcome` (`ok`, `failed`).
    pub jwks_fetches: Family<Labels, Counter>,
    /// Keys in the cached JWKS.
    pub jwks_keys: Gauge,
    /// Back-end hook calls, failures, latency and breakers ([`crate::hooks`]).
    pub hooks: crate::hooks::HookMetrics,
    /// Webhook events by `outcome`: `delivered`, `failed` (given up after
    /// `--webhook-max-attempts`), `dropped` (recorded into a full outbox).
    pub webhook_events: Family<Labels, Counter>,
    /// Webhook POSTs by `result`: `2xx`, `3xx`, `4xx`, `5xx`, `error` (no answer).
    pub webhook_requests: Family<Labels, Counter>,
    /// Seconds of each webhook POST, answered or not.
    pub webhook_batch_seconds: Histogram,
    /// Webhook events owed (waiting or being delivered) when the outbox was last read.
    pub webhook_queue_depth: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `wsgate_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wsgate");
        let m = Metrics {
            connections_active: Gauge::default(),
            connections_total: Counter::default(),
            frames_in: Family::default(),
            frames_out: Family::default(),
            fanout_deliveries: Counter::default(),
            errors: Family::default(),
            closes: Family::default(),
            slow_consumer_closes: Counter::default(),
            handshake_refusals: Family::default(),
            early_closes: Family::default(),
            rooms_active: Gauge::default(),
            broker_up: Gauge::default(),
            broker_disconnects: Counter::default(),
            broker_errors: Counter::default(),
            admission_refusals: Counter::default(),
            gap_refills: Counter::default(),
            gap_refilled_messages: Counter::default(),
            gap_resyncs: Counter::default(),
            presence_removals_pending: Gauge::default(),
            presence_retries: Counter::default(),
            presence_removals_lost: Counter::default(),
            jwks_fetches: Family::default(),
            jwks_keys: Gauge::default(),
            hooks: crate::hooks::HookMetrics {
                calls: Family::default(),
                failures: Family::default(),
                latency: Family::new_with_constructor(hook_latency),
                breaker_open: Family::default(),
            },
            webhook_events: Family::default(),
            webhook_requests: Family::default(),
            webhook_batch_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            webhook_queue_depth: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections_active",
            "Open WebSocket connections",
            m.connections_active.clone(),
        );
        registry.register(
            "connections",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "frames_in",
            "Client frames received by type",
            m.frames_in.clone(),
        );
        registry.register(
            "frames_out",
            "Frames queued to clients by type",
            m.frames_out.clone(),
        );
        registry.register(
            "fanout_deliveries",
            "Frames handed to local sessions by fan-out",
            m.fanout_deliveries.clone(),
        );
        registry.register("errors", "Error frames sent by code", m.errors.clone());
        registry.register(
            "closes",
            "Connections closed by close code",
            m.closes.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Connections closed as slow consumers",
            m.slow_consumer_closes.clone(),
        );
        registry.register(
            "early_closes",
            "Connections closed before a complete request, by reason",
            m.early_closes.clone(),
        );
        registry.register(
            "handshake_refusals",
            "Upgrade requests refused by HTTP status",
            m.handshake_refusals.clone(),
        );
        registry.register(
            "rooms_active",
            "Rooms with local members",
            m.rooms_active.clone(),
        );
        registry.register(
            "broker_up",
            "1 while the broker connection is up",
            m.broker_up.clone(),
        );
        registry.register(
            "broker_disconnects",
            "Broker connection losses",
            m.broker_disconnects.clone(),
        );
        registry.register(
            "broker_errors",
            "Client frames refused because the broker failed",
            m.broker_errors.clone(),
        );
        registry.register(
            "admission_refusals",
            "New sessions refused by the accept rate",
            m.admission_refusals.clone(),
        );
        registry.register(
            "gap_refills",
            "Rooms refilled in place from their history after a broker gap",
            m.gap_refills.clone(),
        );
        registry.register(
            "gap_refilled_messages",
            "Stored messages delivered by refills after broker gaps",
            m.gap_refilled_messages.clone(),
        );
        registry.register(
            "gap_resyncs",
            "Rooms told resync after a broker gap that could not be refilled",
            m.gap_resyncs.clone(),
        );
        registry.register(
            "presence_removals_pending",
            "Presence removals waiting for a retry (the broker failed)",
            m.presence_removals_pending.clone(),
        );
        registry.register(
            "presence_retries",
            "Presence removals that held on a retry",
            m.presence_retries.clone(),
        );
        registry.register(
            "presence_removals_lost",
            "Presence removals lost because too many were waiting",
            m.presence_removals_lost.clone(),
        );
        registry.register(
            "jwks_fetches",
            "JWKS fetches by outcome (a failed one leaves the cached keys serving)",
            m.jwks_fetches.clone(),
        );
        registry.register("jwks_keys", "Keys in the cached JWKS", m.jwks_keys.clone());
        let h = &m.hooks;
        registry.register(
            "hook_calls",
            "Back-end hook calls by hook and outcome (allowed, replaced, refused, failed)",
            h.calls.clone(),
        );
        registry.register(
            "hook_failures",
            "Back-end hook calls without a usable answer, by hook and reason",
            h.failures.clone(),
        );
        registry.register(
            "hook_latency_seconds",
            "Latency of back-end hook calls that reached the back end",
            h.latency.clone(),
        );
        registry.register(
            "hook_breaker_open",
            "1 while a hook's circuit breaker holds calls back",
            h.breaker_open.clone(),
        );
        registry.register(
            "webhook_events",
            "Webhook events by outcome (delivered; failed: given up; dropped: outbox full)",
            m.webhook_events.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook POSTs by result (2xx, 3xx, 4xx, 5xx, error)",
            m.webhook_requests.clone(),
        );
        registry.register(
            "webhook_batch_seconds",
            "Duration of each webhook POST",
            m.webhook_batch_seconds.clone(),
        );
        registry.register(
            "webhook_queue_depth",
            "Webhook events owed (waiting or being delivered)",
            m.webhook_queue_depth.clone(),
        );
        for outcome in ["delivered", "failed", "dropped"] {
            let _ = m.webhook_events.get_or_create(&vec![("outcome", outcome)]);
        }
        for code in ErrorCode::ALL {
            let _ = m.errors.get_or_create(&vec![("code", code.as_str())]);
        }
        for code in CloseCode::ALL {
            let _ = m
                .closes
                .get_or_create(&vec![("code", close_label(code.code()))]);
        }
        Metrics { registry, ..m }
    }

    /// Counts one `error` frame.
    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&vec![("code", code.as_str())])
            .inc();
    }

    /// Counts one connection closed with `code`.
    pub fn close(&self, code: u16) {
        self.closes
            .get_or_create(&vec![("code", close_label(code))])
            .inc();
    }

    /// Counts `n` frames of `kind` queued to clients.
    pub fn frames_out(&self, kind: &'static str, n: u64) {
        if n > 0 {
            self.frames_out
                .get_or_create(&vec![("type", kind)])
                .inc_by(n);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// A hook latency histogram: 1 ms to 8 s.
fn hook_latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// A static label for a close code (labels are `&'static str` to avoid allocation).
pub fn close_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1011 => "1011",
        1013 => "1013",
        _ => "other",
    }
}

/// A static label for a frame type read off an encoded frame.
pub fn type_label(kind: Option<&str>) -> &'static str {
    match kind {
        Some("welcome") => "welcome",
        Some("joined") => "joined",
        Some("left") => "left",
        Some("message") => "message",
        Some("presence") => "presence",
        Some("presence_count") => "presence_count",
        Some("members") => "members",
        Some("typing") => "typing",
        Some("direct") => "direct",
        Some("history") => "history",
        Some("pong") => "pong",
        Some("ack") => "ack",
        Some("publish") => "publish",
        Some("broadcast") => "broadcast",
        Some("notification") => "notification",
        Some("error") => "error",
        Some("notifications") => "notifications",
        Some("marked_read") => "marked_read",
        Some("notifications_read") => "notifications_read",
        Some("reset") => "reset",
        _ => "other",
    }
}
