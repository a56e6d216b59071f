//! Back-end hooks (Centrifugo's "proxy"): synchronous, signed HTTP calls to the
//! product's back end that decide on a connect (`identify.rs`), a join
//! (`session/hooked.rs`, `sse.rs`) or a client's `message`
//! (`session/hooked.rs`). Each configured hook is an [`Endpoint`]: a deadline, a
//! bound on calls in flight, a circuit breaker ([`breaker`]), a strict answer
//! ([`answer`]), a signature ([`signature`]) and a failure policy; a hook that is not
//! configured costs nothing (its callers test for it before building a call).

pub mod answer;
pub mod breaker;
pub mod calls;
mod endpoint;
pub mod signature;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

pub use answer::Refusal;
pub use endpoint::Endpoint;

use crate::config::{Config, FailPolicy};
use crate::http_client::HttpClient;

/// Metric labels.
type Labels = Vec<(&'static str, &'static str)>;

/// The metric families hooks report to (registered in `metrics.rs`).
#[derive(Clone)]
pub struct HookMetrics {
    /// Calls by `hook` and `outcome` (`allowed`, `replaced`, `refused`, `failed`).
    pub calls: Family<Labels, Counter>,
    /// Failed calls by `hook` and `reason`.
    pub failures: Family<Labels, Counter>,
    /// Latency of the calls that reached the back end, by `hook`.
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// 1 while a hook's breaker holds calls back (open or half-open), by `hook`.
    pub breaker_open: Family<Labels, Gauge>,
}

/// What a hook decided, its failure policy applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// The back end allowed it, with what it adds.
    Allowed(T),
    /// The back end refused it.
    Refused(Refusal),
    /// No usable answer; the policy lets it through as if there were no hook.
    FailedOpen,
    /// No usable answer; the policy refuses it (`unavailable`, HTTP 503).
    FailedClosed,
}

/// The configured hooks.
#[derive(Default)]
pub struct Hooks {
    /// `--hook-connect-url`.
    pub connect: Option<Endpoint>,
    /// `--hook-join-url`.
    pub join: Option<Endpoint>,
    /// `--hook-publish-url`.
    pub publish: Option<Endpoint>,
}

impl Hooks {
    /// The hooks the flags describe (already validated: every URL parses and a secret
    /// is set when one is given).
    pub fn new(config: &Config, metrics: &HookMetrics) -> Self {
        let args = &config.hooks;
        let (Some(secret), true) = (&args.hook_secret, args.any()) else {
            return Hooks::default();
        };
        let timeout = Duration::from_millis(args.hook_timeout_ms);
        let client = HttpClient::new(timeout);
        let key = signature::key(secret.as_bytes());
        let make = |kind: &'static str, url: &Option<String>, policy: FailPolicy| {
            let uri = crate::http_client::parse_url(url.as_deref()?).ok()?;
            if uri.scheme_str() == Some("http") && !loopback(uri.host().unwrap_or("")) {
                tracing::warn!(
                    hook = kind,
                    url = %uri,
                    "hook over plain http: whoever sits on the path can forge its answers; use https"
                );
            }
            tracing::info!(hook = kind, url = %uri, policy = ?policy, "hook configured");
            Some(Endpoint::new(
                endpoint::Settings {
                    kind,
                    uri,
                    policy,
                    timeout,
                    max_in_flight: args.hook_max_in_flight,
                    breaker: breaker::Breaker::new(
                        args.hook_breaker_failures,
                        Duration::from_millis(args.hook_breaker_cooldown_ms),
                    ),
                },
                client.clone(),
                key.clone(),
                metrics.clone(),
            ))
        };
        let hooks = Hooks {
            connect: make("connect", &args.hook_connect_url, args.hook_connect_fail),
            join: make("join", &args.hook_join_url, args.hook_join_fail),
            publish: make("publish", &args.hook_publish_url, args.hook_publish_fail),
        };
        if hooks.connect.is_some()
            && args.hook_connect_fail == FailPolicy::Open
            && !config.jwt.tokens_required()
        {
            tracing::warn!(
                "--hook-connect-fail open without token keys: while the connect hook fails, clients get in as anonymous users"
            );
        }
        hooks
    }
}

/// Whether `host` names this machine.
fn loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
