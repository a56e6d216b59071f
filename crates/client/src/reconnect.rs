//! A client that stays connected: reconnects with exponential backoff and full jitter,
//! queues frames while disconnected, rejoins every room with `since` and `epoch`, and
//! detects a dead connection with application pings.

use std::collections::{BTreeMap, VecDeque};
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

/// Where the client is in each joined room, to resume it exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// room → (last id seen, history epoch).
    rooms: BTreeMap<String, (Option<String>, Option<String>)>,
}

impl Resume {
    /// Notes what a client frame means for resuming (`join`, `leave`).
    pub fn on_sent(&mut self, frame: &Value) {
        let room = frame["room"].as_str();
        match (frame["type"].as_str(), room) {
            (Some("join"), Some(room)) => {
                self.rooms.entry(room.to_owned()).or_default();
            }
            (Some("leave"), Some(room)) => {
                self.rooms.remove(room);
            }
            _ => {}
        }
    }

    /// Notes what a server frame tells (ids of stored frames, `joined`'s epoch).
    pub fn on_received(&mut self, frame: &Value) {
        let Some(room) = frame["room"].as_str() else {
            return;
        };
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        match frame["type"].as_str() {
            Some("message" | "publish") => {
                if let Some(id) = frame["id"].as_str() {
                    entry.0 = Some(id.to_owned());
                }
            }
            Some("joined") => {
                entry.1 = frame["epoch"].as_str().map(String::from);
                if entry.0.is_none() {
                    entry.0 = frame["last_id"].as_str().map(String::from);
                }
            }
            // The server could not refill a gap: the room stands at `last_id` in a
            // (maybe new) epoch; what is up to it comes from a reload.
            Some("resync") => {
                entry.1 = frame["epoch"].as_str().map(String::from);
                entry.0 = Some(frame["last_id"].as_str().unwrap_or("0-0").to_owned());
            }
            _ => {}
        }
    }

    /// The `join` frames that resume every room after a reconnection.
    pub fn rejoin_frames(&self) -> Vec<Value> {
        self.rooms
            .iter()
            .map(|(room, (last, epoch))| {
                let mut f = json!({"type": "join", "room": room, "since": last.as_deref().unwrap_or("0-0")});
                if let Some(e) = epoch {
                    f["epoch"] = json!(e);
                }
                f
            })
            .collect()
    }

    /// The rooms followed.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }
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
    /// refill): the client has asked for the room's `history` itself (its answer comes
    /// as a frame with `ref` `"resync:<room>"`); live messages after `last_id` follow.
    Resync {
        /// The room.
        room: String,
        /// The newest id the reload covers (`None`: the room's history is empty).
        last_id: Option<String>,
    },
    /// Stopped for good (1008, or the attempt limit), with the reason.
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
        // Set by a draining node's hint or a refusal's Retry-After: the next wait.
        let mut asked: Option<Duration> = None;
        let connected = async {
            let req = url.as_str().into_client_request()?;
            tokio_tungstenite::connect_async(req).await
        };
        let ws = match tokio::time::timeout(Duration::from_secs(10), connected).await {
            Ok(Ok((ws, _))) => Some(ws),
            Ok(Err(e)) => {
                // Whole seconds asked for, plus up to one more at random.
                asked =
                    retry_after(&e).map(|d| d + Duration::from_millis(rand::random_range(0..1000)));
                None
            }
            Err(_) => None,
        };
        if let Some(mut ws) = ws {
            let opened = tokio::time::Instant::now();
            if events.send(Event::Open).await.is_err() {
                return;
            }
            let mut ok = true;
            for f in resume.rejoin_frames() {
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
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            last_rx = tokio::time::Instant::now();
                            ping_sent = None;
                            let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                            resume.on_received(&v);
                            if v["type"] == "joined" && v["recovered"] == false {
                                let room = v["room"].as_str().unwrap_or_default().to_owned();
                                let _ = events.send(Event::NotRecovered(room)).await;
                            }
                            if v["type"] == "resync" {
                                let room = v["room"].as_str().unwrap_or_default().to_owned();
                                let reload = json!({"type":"history","room":room,"limit":100,"ref":format!("resync:{room}")});
                                ok = ws.send(Message::Text(reload.to_string().into())).await.is_ok();
                                let last_id = v["last_id"].as_str().map(String::from);
                                let _ = events.send(Event::Resync { room, last_id }).await;
                            }
                            if let Some((delay, to)) = hint(&v) {
                                asked = Some(delay);
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
                            if code == Some(1008) {
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
        let delay = asked.unwrap_or_else(|| backoff(attempt, o.base, o.cap, rand::random::<f64>()));
        attempt = attempt.saturating_add(1);
        if events.send(Event::Reconnecting(delay)).await.is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let (b, c) = (Duration::from_millis(500), Duration::from_secs(20));
        assert_eq!(backoff(0, b, c, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, b, c, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(10, b, c, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(99, b, c, 0.5), Duration::from_secs(10));
        assert_eq!(backoff(2, b, c, 0.0), Duration::ZERO);
    }

    #[test]
    fn a_resync_moves_the_resume_point_and_a_hint_is_read() {
        let mut r = Resume::default();
        r.on_sent(&json!({"type":"join","room":"a"}));
        r.on_received(&json!({"type":"joined","room":"a","last_id":"5-0","epoch":"e1"}));
        r.on_received(&json!({"type":"message","room":"a","id":"7-0"}));
        r.on_received(&json!({"type":"resync","room":"a","epoch":"e2","last_id":"3-0"}));
        assert_eq!(
            r.rejoin_frames(),
            vec![json!({"type":"join","room":"a","since":"3-0","epoch":"e2"})]
        );
        r.on_received(&json!({"type":"resync","room":"a","epoch":"e3","last_id":null}));
        assert_eq!(r.rejoin_frames()[0]["since"], "0-0");
        assert_eq!(
            hint(&json!({"type":"reconnect","delay_ms":250,"reason":"draining","url":"ws://x/ws"})),
            Some((Duration::from_millis(250), Some("ws://x/ws".into())))
        );
        assert_eq!(
            hint(&json!({"type":"reconnect","delay_ms":250,"reason":"draining"})),
            Some((Duration::from_millis(250), None))
        );
        assert_eq!(hint(&json!({"type":"reconnect"})), None);
        assert_eq!(hint(&json!({"type":"pong"})), None);
    }

    #[test]
    fn a_503_says_how_long_to_wait() {
        use tokio_tungstenite::tungstenite::http::Response;
        let refused = |status: u16, retry: Option<&str>| {
            let mut b = Response::builder().status(status);
            if let Some(r) = retry {
                b = b.header("Retry-After", r);
            }
            tokio_tungstenite::tungstenite::Error::Http(Box::new(b.body(None).unwrap()))
        };
        assert_eq!(
            retry_after(&refused(503, Some("3"))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&refused(503, Some("99999"))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(retry_after(&refused(503, None)), None);
        assert_eq!(retry_after(&refused(503, Some("soon"))), None);
        assert_eq!(retry_after(&refused(429, Some("3"))), None);
    }

    #[test]
    fn resume_tracks_rooms_ids_and_epochs() {
        let mut r = Resume::default();
        r.on_sent(&json!({"type":"join","room":"a"}));
        r.on_sent(&json!({"type":"join","room":"b"}));
        r.on_received(&json!({"type":"joined","room":"a","last_id":"5-0","epoch":"e1"}));
        r.on_received(&json!({"type":"joined","room":"b","last_id":null,"epoch":"e1"}));
        r.on_received(&json!({"type":"message","room":"a","id":"7-0"}));
        r.on_received(&json!({"type":"message","room":"zzz","id":"9-0"}));
        assert_eq!(
            r.rejoin_frames(),
            vec![
                json!({"type":"join","room":"a","since":"7-0","epoch":"e1"}),
                json!({"type":"join","room":"b","since":"0-0","epoch":"e1"}),
            ]
        );
        r.on_sent(&json!({"type":"leave","room":"a"}));
        assert_eq!(r.rooms().collect::<Vec<_>>(), vec!["b"]);
    }
}
