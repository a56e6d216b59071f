//! The JWKS of `--jwks-url`: fetched at start, refreshed periodically (the answer's
//! `Cache-Control: max-age`, bounded by `--jwks-min-refresh-s` and `--jwks-refresh-s`)
//! and when a token names an unknown `kid`, never twice within `--jwks-min-refresh-s`
//! ([`RefreshGate`]). A failed fetch (provider down, an error status, garbage, a set
//! without one usable key) changes nothing: the cached keys keep serving, and the next
//! try comes `--jwks-min-refresh-s` later.
//!
//! Token checks read the cached set without waiting (a std lock, never held across an
//! `.await`); one background task does every fetch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::keys::{KeySet, VerifyKey, MAX_KEYS};
use super::refresh_gate::{Ask, RefreshGate};
use crate::http_client::{HttpClient, Limits};

/// Deadline of one fetch (connect, headers and body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection establishment deadline of a fetch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest key set document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// What the refresher reports to `/metrics`.
pub struct JwksMetrics {
    /// Fetches by `outcome` (`ok`, `failed`).
    pub fetches: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Keys in the cached set.
    pub keys: Gauge,
}

/// A key set URL's cached keys and their refresher.
pub struct Jwks {
    /// Where the set is fetched from.
    url: String,
    /// The outbound client.
    client: HttpClient,
    /// The last good set (empty until the first good fetch).
    keys: RwLock<Arc<KeySet>>,
    /// When a fetch may start.
    gate: Mutex<RefreshGate>,
    /// Least and most time between two periodic fetches.
    min_refresh: Duration,
    /// See `min_refresh`.
    max_refresh: Duration,
    /// Set by a token naming an unknown key: fetch as soon as the gate allows.
    wanted: AtomicBool,
    /// Wakes the refresher when `wanted` is set.
    wake: Notify,
    /// Bumped after every fetch, good or failed: what tokens waiting on one watch.
    done: watch::Sender<u64>,
}

impl Jwks {
    /// A cache of `url`'s keys, empty until [`Jwks::spawn`]'s first fetch.
    pub fn new(url: String, min_refresh: Duration, max_refresh: Duration) -> Arc<Self> {
        Arc::new(Jwks {
            url,
            client: HttpClient::new(CONNECT_TIMEOUT),
            keys: RwLock::new(Arc::new(KeySet::default())),
            gate: Mutex::new(RefreshGate::new(min_refresh)),
            min_refresh,
            max_refresh: max_refresh.max(min_refresh),
            wanted: AtomicBool::new(false),
            wake: Notify::new(),
            done: watch::Sender::new(0),
        })
    }

    /// Where the set is fetched from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The keys now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Called for a token whose key is not in the set: returns once a fetch that may
    /// bring it is over (one under way, or one that may start now), or at once when the
    /// last fetch started less than `--jwks-min-refresh-s` ago (a fetch is then
    /// scheduled for when the interval ends). The caller looks the key up again either
    /// way.
    pub async fn refresh_for_unknown_key(&self) {
        let mut done = self.done.subscribe();
        let ask = self
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ask(Instant::now());
        if ask != Ask::InFlight {
            self.wanted.store(true, Ordering::Release);
            self.wake.notify_one();
        }
        if matches!(ask, Ask::InFlight | Ask::Now) {
            // Bounded: a stuck refresher costs a handshake this long at most.
            let _ =
                tokio::time::timeout(FETCH_TIMEOUT + Duration::from_secs(1), done.changed()).await;
        }
    }

    /// Starts the refresher (until `cancel`); its first fetch begins at once.
    pub fn spawn(self: &Arc<Self>, cancel: CancellationToken, metrics: JwksMetrics) {
        let jwks = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = jwks.run(metrics) => {}
                _ = cancel.cancelled() => {}
            }
        });
    }

    /// Waits, at most `within`, for the first fetch to end; whether the set has keys.
    pub async fn first_fetch(&self, within: Duration) -> bool {
        let mut done = self.done.subscribe();
        let _ = tokio::time::timeout(within, done.wait_for(|n| *n > 0)).await;
        !self.keys().is_empty()
    }

    /// The refresher: fetch, then sleep until the periodic refresh is due or a token
    /// wants one, then wait for the gate.
    async fn run(&self, metrics: JwksMetrics) {
        let mut due = Instant::now();
        loop {
            while Instant::now() < due && !self.wanted.load(Ordering::Acquire) {
                tokio::select! {
                    _ = sleep_until(due) => {}
                    _ = self.wake.notified() => {}
                }
            }
            let next = self
                .gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .next_allowed();
            if let Some(at) = next {
                sleep_until(at).await;
            }
            // Whoever asked until now is served by this fetch.
            self.wanted.store(false, Ordering::Release);
            if !self
                .gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .start(Instant::now())
            {
                continue;
            }
            let outcome = self.fetch().await;
            metrics
                .fetches
                .get_or_create(&vec![(
                    "outcome",
                    if outcome.is_ok() { "ok" } else { "failed" },
                )])
                .inc();
            metrics.keys.set(self.keys().len() as i64);
            let next_in = match outcome {
                Ok(max_age) => max_age
                    .unwrap_or(self.max_refresh)
                    .clamp(self.min_refresh, self.max_refresh),
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, cached_keys = self.keys().len(), "JWKS fetch failed: serving the cached keys");
                    self.min_refresh
                }
            };
            due = Instant::now() + next_in;
            self.gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .finish();
            self.done.send_modify(|n| *n += 1);
        }
    }

    /// One fetch: a good set replaces the cache. Its `max-age`, if any.
    async fn fetch(&self) -> Result<Option<Duration>, String> {
        let limits = Limits {
            timeout: FETCH_TIMEOUT,
            max_body: MAX_JWKS_BYTES,
        };
        let res = self
            .client
            .get(
                &self.url,
                "application/jwk-set+json, application/json",
                limits,
            )
            .await
            .map_err(|e| e.to_string())?;
        if !res.status.is_success() {
            return Err(format!("status {}", res.status));
        }
        let set = parse(&res.body)?;
        let old = self.keys();
        let (before, after) = (old.kids(), set.kids());
        if before != after {
            let added: Vec<_> = after.iter().filter(|k| !before.contains(k)).collect();
            let removed: Vec<_> = before.iter().filter(|k| !after.contains(k)).collect();
            tracing::info!(url = %self.url, keys = set.len(), ?added, ?removed, "JWKS keys changed");
        }
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        Ok(max_age(&res.headers))
    }
}

/// A key set document's usable keys (unusable ones are skipped with a warning).
///
/// # Errors
/// Not a JSON object with a `keys` array, or not one usable key in it.
pub fn parse(body: &[u8]) -> Result<KeySet, String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body)
        .map_err(|_| "not a JWKS document (a JSON object with a \"keys\" array)".to_owned())?;
    if doc.keys.len() > MAX_KEYS {
        tracing::warn!(
            keys = doc.keys.len(),
            "JWKS holds more than {MAX_KEYS} keys: the rest are ignored"
        );
    }
    let mut keys = Vec::new();
    for value in doc.keys.iter().take(MAX_KEYS) {
        match VerifyKey::from_jwk(value) {
            Ok(k) => keys.push(k),
            Err(why) => {
                let kid = value.get("kid").and_then(|k| k.as_str()).unwrap_or("");
                tracing::warn!(kid = %kid.chars().take(64).collect::<String>(), %why, "JWKS key skipped");
            }
        }
    }
    if keys.is_empty() {
        return Err("no usable key in the set".into());
    }
    Ok(KeySet::new(keys))
}

/// The `max-age` of a `Cache-Control` header, if any.
pub fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("max-age") {
                return None;
            }
            value.trim().trim_matches('"').parse().ok()
        })
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::fixtures::{EC_X, EC_Y};

    #[test]
    fn documents() {
        let ec = |kid: &str| serde_json::json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "kid": kid});
        let good = serde_json::json!({"keys": [ec("a"), {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"}, {"kty": "XYZ"}, ec("b")]});
        // Unusable keys are skipped; the usable ones serve.
        assert_eq!(
            parse(good.to_string().as_bytes()).unwrap().kids(),
            ["a", "b"]
        );
        for garbage in [
            "",
            "garbage",
            "[]",
            "{}",
            r#"{"keys": {}}"#,
            r#"{"keys": []}"#,
            r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
        ] {
            assert!(parse(garbage.as_bytes()).is_err(), "{garbage}");
        }
    }

    #[test]
    fn cache_control() {
        let headers = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(http::header::CACHE_CONTROL, v.parse().unwrap());
            }
            h
        };
        assert_eq!(
            max_age(&headers(&["public, max-age=3600, must-revalidate"])),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            max_age(&headers(&["no-cache", "Max-Age=\"60\""])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age(&headers(&["no-store"])), None);
        assert_eq!(max_age(&headers(&["max-age=-1"])), None);
        assert_eq!(max_age(&headers(&[])), None);
    }
}
