//! One hook endpoint: a signed `POST` of a call's JSON body, bounded by a deadline, a
//! number of calls in flight and a circuit breaker, its answer parsed strictly; the
//! result, after the hook's failure policy, is a [`Verdict`]. Every call is counted by
//! outcome, every failure by reason, and the latency of every call that reached the
//! back end is observed.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::Full;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::answer::{Answer, MAX_ANSWER_BYTES};
use super::breaker::{Breaker, Ticket};
use super::signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::{HookMetrics, Verdict};
use crate::config::FailPolicy;
use crate::http_client::{HttpClient, HttpError, Limits};

/// Why a call got no usable answer (the `reason` label of the failures metric).
#[derive(Debug)]
enum Failure {
    /// No answer within the deadline.
    Timeout,
    /// The back end could not be reached (refused, reset, DNS, TLS).
    Unreachable(String),
    /// It answered with another status than 200.
    Status(StatusCode),
    /// Its answer is not one the hook defines.
    BadAnswer(String),
    /// The breaker is open: the call was not made.
    BreakerOpen,
    /// No call slot was free within the deadline: the call was not made.
    Saturated,
}

impl Failure {
    fn label(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unreachable(_) => "unreachable",
            Failure::Status(_) => "status",
            Failure::BadAnswer(_) => "bad_answer",
            Failure::BreakerOpen => "breaker_open",
            Failure::Saturated => "saturated",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(e) => write!(f, "unreachable: {e}"),
            Failure::Status(s) => write!(f, "answered {s}"),
            Failure::BadAnswer(e) => write!(f, "bad answer: {e}"),
            other => f.write_str(other.label()),
        }
    }
}

/// The label of an allowing answer in the calls metric.
pub trait AllowLabel {
    /// `allowed`, or `replaced` for a publish answer with new content.
    fn label(&self) -> &'static str {
        "allowed"
    }
}

impl AllowLabel for () {}
impl AllowLabel for super::answer::ConnectGrant {}
impl AllowLabel for Option<String> {
    fn label(&self) -> &'static str {
        if self.is_some() {
            "replaced"
        } else {
            "allowed"
        }
    }
}

/// One configured hook.
pub struct Endpoint {
    /// `connect`, `join` or `publish` (the `hook` label).
    kind: &'static str,
    /// Where calls go.
    uri: Uri,
    /// What a failed call decides.
    policy: FailPolicy,
    /// Deadline of a call.
    timeout: Duration,
    /// Calls in flight, at most `--hook-max-in-flight`.
    permits: Semaphore,
    /// The circuit breaker (a std lock: never held across an `.await`).
    breaker: Mutex<Breaker>,
    /// The pooled client, shared by every hook.
    client: HttpClient,
    /// The signing key.
    key: ring::hmac::Key,
    /// The metric families.
    metrics: HookMetrics,
    /// This hook's latency histogram.
    latency: Histogram,
    /// This hook's breaker gauge.
    breaker_open: Gauge,
}

/// What an [`Endpoint`] is made of.
pub struct Settings {
    /// The hook's name.
    pub kind: &'static str,
    /// Its URL (checked at start).
    pub uri: Uri,
    /// Its failure policy.
    pub policy: FailPolicy,
    /// Deadline of a call.
    pub timeout: Duration,
    /// Most calls in flight.
    pub max_in_flight: usize,
    /// The breaker.
    pub breaker: Breaker,
}

impl Endpoint {
    /// A hook with its metrics registered at zero.
    pub fn new(
        s: Settings,
        client: HttpClient,
        key: ring::hmac::Key,
        metrics: HookMetrics,
    ) -> Self {
        let hook = vec![("hook", s.kind)];
        for outcome in ["allowed", "replaced", "refused", "failed"] {
            if outcome != "replaced" || s.kind == "publish" {
                let _ = metrics
                    .calls
                    .get_or_create(&vec![("hook", s.kind), ("outcome", outcome)]);
            }
        }
        for reason in [
            "timeout",
            "unreachable",
            "status",
            "bad_answer",
            "breaker_open",
            "saturated",
        ] {
            let _ = metrics
                .failures
                .get_or_create(&vec![("hook", s.kind), ("reason", reason)]);
        }
        let latency = metrics.latency.get_or_create(&hook).clone();
        let breaker_open = metrics.breaker_open.get_or_create(&hook).clone();
        Endpoint {
            kind: s.kind,
            uri: s.uri,
            policy: s.policy,
            timeout: s.timeout,
            permits: Semaphore::new(s.max_in_flight),
            breaker: Mutex::new(s.breaker),
            client,
            key,
            metrics,
            latency,
            breaker_open,
        }
    }

    /// Calls the hook with `body` within `deadline` (and at most `--hook-timeout-ms`),
    /// and reads its answer with `parse`.
    pub async fn call<T: AllowLabel>(
        &self,
        body: &impl Serialize,
        deadline: Duration,
        parse: impl FnOnce(&[u8]) -> Result<Answer<T>, String>,
    ) -> Verdict<T> {
        let result = self.exchange(body, deadline.min(self.timeout), parse).await;
        let (outcome, verdict) = match result {
            Ok(Answer::Allow(t)) => (t.label(), Verdict::Allowed(t)),
            Ok(Answer::Refuse(r)) => ("refused", Verdict::Refused(r)),
            Err(failure) => {
                tracing::debug!(hook = self.kind, %failure, policy = ?self.policy, "hook call failed");
                self.metrics
                    .failures
                    .get_or_create(&vec![("hook", self.kind), ("reason", failure.label())])
                    .inc();
                let verdict = match self.policy {
                    FailPolicy::Open => Verdict::FailedOpen,
                    FailPolicy::Closed => Verdict::FailedClosed,
                };
                ("failed", verdict)
            }
        };
        self.metrics
            .calls
            .get_or_create(&vec![("hook", self.kind), ("outcome", outcome)])
            .inc();
        verdict
    }

    async fn exchange<T>(
        &self,
        body: &impl Serialize,
        deadline: Duration,
        parse: impl FnOnce(&[u8]) -> Result<Answer<T>, String>,
    ) -> Result<Answer<T>, Failure> {
        let started = Instant::now();
        let _permit = match tokio::time::timeout(deadline, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            _ => return Err(Failure::Saturated),
        };
        let ticket = {
            let mut breaker = self.lock();
            let ticket = breaker.admit(Instant::now());
            self.breaker_open.set(i64::from(breaker.is_open()));
            ticket
        };
        let mut pending = Pending {
            endpoint: self,
            ticket: ticket.ok_or(Failure::BreakerOpen)?,
            done: false,
        };
        // The call bodies are plain structs of strings: encoding cannot fail.
        let bytes = serde_json::to_vec(body).map_err(|e| Failure::Unreachable(e.to_string()))?;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let req = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("wsgate/", env!("CARGO_PKG_VERSION")),
            )
            .header(TIMESTAMP_HEADER, ts)
            .header(SIGNATURE_HEADER, signature::sign(&self.key, ts, &bytes))
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let limits = Limits {
            timeout: deadline.saturating_sub(started.elapsed()),
            max_body: MAX_ANSWER_BYTES,
        };
        let sent = Instant::now();
        let res = self.client.send(req, limits).await;
        self.latency.observe(sent.elapsed().as_secs_f64());
        let out = match res {
            Ok(r) if r.status == StatusCode::OK => parse(&r.body).map_err(Failure::BadAnswer),
            Ok(r) => Err(Failure::Status(r.status)),
            Err(HttpError::Timeout(_)) => Err(Failure::Timeout),
            Err(HttpError::TooLarge(n)) => Err(Failure::BadAnswer(format!("over {n} bytes"))),
            Err(e) => Err(Failure::Unreachable(e.to_string())),
        };
        pending.finish(out.as_ref().err());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A call the breaker let through: its result is reported once, and a call dropped
/// before its end (its client went away) gives a probe's turn to the next call.
struct Pending<'a> {
    endpoint: &'a Endpoint,
    ticket: Ticket,
    done: bool,
}

impl Pending<'_> {
    fn finish(&mut self, failure: Option<&Failure>) {
        self.done = true;
        let e = self.endpoint;
        let mut breaker = e.lock();
        let changed = breaker.report(self.ticket, failure.is_none(), Instant::now());
        let open = breaker.is_open();
        drop(breaker);
        e.breaker_open.set(i64::from(open));
        match (changed, open) {
            (true, true) => tracing::warn!(
                hook = e.kind,
                failure = %failure.map(ToString::to_string).unwrap_or_default(),
                policy = ?e.policy,
                "hook circuit breaker opened: calls fail at once until a probe succeeds"
            ),
            (true, false) => tracing::info!(hook = e.kind, "hook circuit breaker closed"),
            _ => {}
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.endpoint.lock().abandon(self.ticket, Instant::now());
        }
    }
}
