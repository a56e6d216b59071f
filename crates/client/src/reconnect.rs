//! A client that stays connected: reconnects with exponential backoff and full jitter
//! (or when and where the server asked: a draining node's `reconnect` hint, a 503's
//! `Retry-After`), queues frames while disconnected, rejoins every room with `since`
//! and `epoch`, reloads a room in place on `resync` and drops duplicate room frames,
//! detects a dead connection with application pings, and, given a token source
//! ([`Options::get_token`]), connects with a fresh token each time and refreshes the
//! session's token in place when the server sends `refresh_needed`.
//!
//! - [`resume`]: the per-room position (last id, epoch), duplicates, reloads (pure).
//! - [`token`]: the token source and the URL of a connection made with a token.

pub mod resume;
pub mod token;

pub use resume::{compare_ids, parse_id, Resume, Verdict};
pub use token::{with_token, BoxError, GetToken};

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How a [`Reconnecting`] client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// First backoff step.
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
    /// Frames kept while disconnected; beyond it `send` refuses.
    pub queue_limit: usize,
    /// Send an application `ping` after this long without traffic.
    pub ping_idle: Duration,
    /// Reconnect when nothing arrives this long after a ping.
    pub pong_timeout: Duration,
    /// A connection open this long resets the backoff.
    pub healthy_after: Duration,
    /// Fresh tokens: asked before every connection (its `token` replaces the URL's)
    /// and on `refresh_needed` (sent in a `refresh`, the session carries on). A refresh
    /// that fails, or an expiry (1008), reconnects with a new token instead of stopping.
    pub get_token: Option<GetToken>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
            max_attempts: None,
            queue_limit: 1000,
            ping_idle: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(10),
            healthy_after: Duration::from_secs(5),
            get_token: None,
        }
    }
}

/// The delay before reconnection attempt `attempt` (0-based): full jitter, a uniform
/// draw `r` in `[0, 1)` times `min(cap, base × 2^attempt)`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, r: f64) -> Duration {
    let ceiling = base
        .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .min(cap);
    ceiling.mul_f64(r.clamp(0.0, 1.0))
}

/// What a [`Reconnecting`] client reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A server frame.
    Frame(Value),
    /// Connected (a `welcome` follows as a frame).
    Open,
    /// Disconnected; the next attempt comes after this delay.
    Reconnecting(Duration),
    /// A rejoin could not be vouched for (`recovered:false`): reload that room.
    NotRecovered(String),
    /// The server sent `resync` for this room (its broker link had a gap it could not
    /// refill): the client moved the room's resume point to `last_id` in `epoch` and
    /// has asked for the room's `history` itself (its answer comes as a frame with
    /// `ref` `"resync:<room>"`, holding only messages up to `last_id`); live messages
    /// after `last_id` follow as frames, those up to it are dropped as duplicates.
    Resync {
        /// The room.
        room: String,
        /// The room's history epoch from now on.
        epoch: String,
        /// The newest id the reload covers (`None`: the room's history is empty).
        last_id: Option<String>,
    },
    /// A token refresh failed (the source failed, or the server refused the token:
    /// `invalid_field`, `forbidden`), with the reason: the client reconnects with a
    /// fresh token.
    RefreshFailed(String),
    /// Stopped for good (1008 without a token source, or the attempt limit), with the
    /// reason.
    Closed(String),
}

/// A client that stays connected. Frames sent while disconnected are queued (bounded)
/// and sent in order once connected again.
pub struct Reconnecting {
    tx: mpsc::Sender<Value>,
    events: mpsc::Receiver<Event>,
}

/// `send` was refused: the offline queue is full or the client stopped.
#[derive(Debug, thiserror::Error)]
#[error("not sent: the queue is full or the client stopped")]
pub struct NotSent;

impl Reconnecting {
    /// Starts connecting to `url` in the background.
    pub fn start(url: &str, options: Options) -> Reconnecting {
        let (tx, rx) = mpsc::channel(options.queue_limit.max(1));
        let (etx, events) = mpsc::channel(1024);
        tokio::spawn(run(url.to_owned(), options, rx, etx));
        Reconnecting { tx, events }
    }

    /// Queues a frame (sent at once when connected).
    ///
    /// # Errors
    /// [`NotSent`] when the queue is full or the client stopped.
    pub fn send(&self, frame: Value) -> Result<(), NotSent> {
        self.tx.try_send(frame).map_err(|_| NotSent)
    }

    /// The next event; `None` once the client stopped and everything was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

/// What a refused handshake asks: the seconds of a 503's `Retry-After`.
pub fn retry_after(e: &tokio_tungstenite::tungstenite::Error) -> Option<Duration> {
    let tokio_tungstenite::tungstenite::Error::Http(res) = e else {
        return None;
    };
    if res.status().as_u16() != 503 {
        return None;
    }
    let secs: u64 = res
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

/// Why the next attempt waits something else than the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A draining node's `reconnect` hint: exactly this long (the server drew it from
    /// a window already; no jitter on top).
    Hint(Duration),
    /// A 503's `Retry-After`: this long plus up to one second at random (the header
    /// has no fractions).
    RetryAfter(Duration),
}

/// The wait before the next attempt: what the server asked for, else the backoff for
/// `attempt`. `r`: a uniform draw in `[0, 1)`.
pub fn next_delay(asked: Option<Asked>, attempt: u32, o: &Options, r: f64) -> Duration {
    match asked {
        Some(Asked::Hint(d)) => d,
        Some(Asked::RetryAfter(d)) => d + Duration::from_secs(1).mul_f64(r.clamp(0.0, 1.0)),
        None => backoff(attempt, o.base, o.cap, r),
    }
}

/// Messages a `resync`'s reload asks for (the server's most for one `history`).
pub const RELOAD_LIMIT: u32 = 100;

/// The `ref` of the `refresh` frames the client sends itself.
pub const REFRESH_REF: &str = "token-refresh";

/// How long a token source may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh token from `source`, bounded in time.
async fn fresh_token(source: &GetToken) -> Result<String, String> {
    match tokio::time::timeout(TOKEN_TIMEOUT, source.get()).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("the token source failed: {e}")),
        Err(_) => Err("the token source did not answer in time".into()),
    }
}

/// The token being fetched for a refresh, once it is there (never, when none is).
async fn fetched(
    job: &mut Option<tokio::task::JoinHandle<Result<String, String>>>,
) -> Result<String, String> {
    match job {
        Some(h) => h.await.unwrap_or_else(|e| Err(e.to_string())),
        None => std::future::pending().await,
    }
}

/// A draining node's `reconnect` frame: the delay it asks for, and where to go.
pub fn hint(frame: &Value) -> Option<(Duration, Option<String>)> {
    if frame["type"] != "reconnect" {
        return None;
    }
    let ms = frame["delay_ms"].as_u64()?.min(600_000);
    Some((
        Duration::from_millis(ms),
        frame["url"].as_str().map(String::from),
    ))
}

async fn run(url: String, o: Options, mut rx: mpsc::Receiver<Value>, events: mpsc::Sender<Event>) {
    let mut url = url;
    let mut resume = Resume::default();
    let mut pending: VecDeque<Value> = VecDeque::new();
    let mut attempt: u32 = 0;
    loop {
        // Set by a draining node's hint or a refusal's Retry-After: the next wait only.
        let mut asked: Option<Asked> = None;
        let target = match &o.get_token {
            None => Some(url.clone()),
            Some(source) => match fresh_token(source).await {
                Ok(t) => Some(with_token(&url, &t)),
                Err(why) => {
                    if events.send(Event::RefreshFailed(why)).await.is_err() {
                        return;
                    }
                    None
                }
            },
        };
        let connected = async {
            let req = target
                .as_deref()
                .unwrap_or_default()
                .into_client_request()?;
            tokio_tungstenite::connect_async(req).await
        };
        let ws = match target {
            None => None,
            Some(_) => match tokio::time::timeout(Duration::from_secs(10), connected).await {
                Ok(Ok((ws, _))) => Some(ws),
                Ok(Err(e)) => {
                    asked = retry_after(&e).map(Asked::RetryAfter);
                    None
                }
                Err(_) => None,
            },
        };
        if let Some(mut ws) = ws {
            let opened = tokio::time::Instant::now();
            if events.send(Event::Open).await.is_err() {
                return;
            }
            let mut ok = true;
            for f in resume.rejoin() {
                ok &= ws.send(Message::Text(f.to_string().into())).await.is_ok();
            }
            while ok {
                let Some(f) = pending.pop_front() else { break };
                if ws.send(Message::Text(f.to_string().into())).await.is_err() {
                    pending.push_front(f);
                    ok = false;
                }
            }
            let mut last_rx = tokio::time::Instant::now();
            let mut ping_sent: Option<tokio::time::Instant> = None;
            // A token being fetched for a refresh of this connection.
            let mut refreshing: Option<tokio::task::JoinHandle<Result<String, String>>> = None;
            let stop: Option<String> = loop {
                if !ok {
                    break None;
                }
                let wake = match ping_sent {
                    Some(at) => at + o.pong_timeout,
                    None => last_rx + o.ping_idle,
                };
                tokio::select! {
                    out = rx.recv() => {
                        let Some(f) = out else { return };
                        resume.on_sent(&f);
                        if ws.send(Message::Text(f.to_string().into())).await.is_err() {
                            pending.push_back(f);
                            break None;
                        }
                    }
                    got = fetched(&mut refreshing) => {
                        refreshing = None;
                        match got {
                            Ok(t) => {
                                let frame = json!({"type":"refresh","token":t,"ref":REFRESH_REF});
                                if ws.send(Message::Text(frame.to_string().into())).await.is_err() {
                                    break None;
                                }
                            }
                            Err(why) => {
                                let _ = events.send(Event::RefreshFailed(why)).await;
                                break None;
                            }
                        }
                    }
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            last_rx = tokio::time::Instant::now();
                            ping_sent = None;
                            let Ok(mut v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                            if v["type"] == "refresh_needed" && refreshing.is_none() {
                                if let Some(source) = o.get_token.clone() {
                                    refreshing = Some(tokio::spawn(async move { fresh_token(&source).await }));
                                }
                            }
                            if v["type"] == "error" && v["ref"] == REFRESH_REF {
                                let why = format!("refresh refused: {}: {}", v["code"].as_str().unwrap_or_default(), v["message"].as_str().unwrap_or_default());
                                let _ = events.send(Event::RefreshFailed(why)).await;
                                break None;
                            }
                            resume.reloaded(&mut v);
                            if resume.on_received(&v) == Verdict::Duplicate {
                                continue;
                            }
                            if v["type"] == "joined" && v["recovered"] == false {
                                let room = v["room"].as_str().unwrap_or_default().to_owned();
                                let _ = events.send(Event::NotRecovered(room)).await;
                            }
                            if v["type"] == "resync" {
                                let room = v["room"].as_str().unwrap_or_default().to_owned();
                                let reload = Resume::reload_frame(&room, RELOAD_LIMIT);
                                ok = ws.send(Message::Text(reload.to_string().into())).await.is_ok();
                                let epoch = v["epoch"].as_str().unwrap_or_default().to_owned();
                                let last_id = v["last_id"].as_str().map(String::from);
                                let _ = events.send(Event::Resync { room, epoch, last_id }).await;
                            }
                            if let Some((delay, to)) = hint(&v) {
                                asked = Some(Asked::Hint(delay));
                                if let Some(to) = to {
                                    url = to;
                                }
                            }
                            if events.send(Event::Frame(v)).await.is_err() {
                                return;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let code = frame.map(|f| u16::from(f.code));
                            if code == Some(1008) && o.get_token.is_none() {
                                break Some("closed by the server with 1008 (policy)".into());
                            }
                            break None;
                        }
                        Some(Ok(_)) => {
                            last_rx = tokio::time::Instant::now();
                        }
                        Some(Err(_)) | None => break None,
                    },
                    _ = tokio::time::sleep_until(wake) => {
                        if ping_sent.is_some() {
                            break None; // no answer in time: the connection is dead
                        }
                        ping_sent = Some(tokio::time::Instant::now());
                        if ws.send(Message::Text(json!({"type":"ping"}).to_string().into())).await.is_err() {
                            break None;
                        }
                    }
                }
            };
            if let Some(job) = refreshing {
                job.abort();
            }
            if let Some(reason) = stop {
                let _ = events.send(Event::Closed(reason)).await;
                return;
            }
            if opened.elapsed() >= o.healthy_after {
                attempt = 0;
            }
        }
        // Frames queued meanwhile wait in the channel; move them to the ordered queue.
        while let Ok(f) = rx.try_recv() {
            resume.on_sent(&f);
            if pending.len() < o.queue_limit {
                pending.push_back(f);
            }
        }
        if o.max_attempts.is_some_and(|m| attempt >= m) {
            let _ = events
                .send(Event::Closed(format!("gave up after {attempt} attempts")))
                .await;
            return;
        }
        let delay = next_delay(asked, attempt, &o, rand::random::<f64>());
        attempt = attempt.saturating_add(1);
        if events.send(Event::Reconnecting(delay)).await.is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests;
