//! One client of `deploy`: connects, joins its room, records every `publish` of it, and
//! behaves as a well-made client does through a rolling restart: it follows the
//! `reconnect` hint exactly, rejoins with `since`/`epoch`, and retries a refused
//! connection after `Retry-After` (503) or a jittered backoff.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use wsgate_protocol::MessageId;

use crate::conn::{self, Endpoint, Ws};
use crate::stamp;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What is shared by every client and the controller.
pub(super) struct Shared {
    /// Clients that joined at least once.
    pub ready: AtomicU64,
    /// Clients joined right now.
    pub joined_now: AtomicU64,
    /// When the restart began, ns since the origin (0: not yet).
    pub restart_ns: AtomicU64,
    /// When the settle ended (`u64::MAX`: not yet).
    pub window_end_ns: AtomicU64,
    /// Per client, whether a joined session of it ended (so a presence `join` of its
    /// user may be churn, not its first arrival).
    pub dropped: Vec<AtomicBool>,
    /// The user offset (user d<k> is client k - offset).
    pub offset: usize,
}

impl Shared {
    /// For `n` clients.
    pub(super) fn new(n: usize, offset: usize) -> Shared {
        Shared {
            ready: AtomicU64::new(0),
            joined_now: AtomicU64::new(0),
            restart_ns: AtomicU64::new(0),
            window_end_ns: AtomicU64::new(u64::MAX),
            dropped: (0..n).map(|_| AtomicBool::new(false)).collect(),
            offset,
        }
    }

    /// Whether a presence `join` of `user` can only be that user's first arrival: one
    /// of this bench's users whose session never ended (other users always count).
    fn first_arrival(&self, user: &str) -> bool {
        let Some(k) = user.strip_prefix('d').and_then(|k| k.parse::<usize>().ok()) else {
            return false;
        };
        k.checked_sub(self.offset)
            .and_then(|i| self.dropped.get(i))
            .is_some_and(|d| !d.load(Ordering::Relaxed))
    }
}

/// What one client saw, read by the controller while it runs.
#[derive(Debug, Default)]
pub(super) struct Rec {
    /// Distinct ids of its room received.
    pub seen: HashSet<MessageId>,
    /// Ids received again.
    pub dup: u64,
    /// (received, ns since the origin; latency, µs) per delivery.
    pub samples: Vec<(u64, u64)>,
    /// Successful rejoins after the first join.
    pub rejoins: u64,
    /// When it last joined after a reconnect.
    pub last_back_ns: Option<u64>,
    /// Joined right now (left as is when the bench stops).
    pub joined: bool,
    /// `reconnect` hints received.
    pub hints: u64,
    /// Connections that ended after joined without a hint.
    pub unexpected_closes: u64,
    /// Close codes received.
    pub close_codes: BTreeMap<String, u64>,
    /// Connection attempts or joins that failed, by kind.
    pub failures: BTreeMap<String, u64>,
    /// Rejoins answered `recovered: false`.
    pub recovered_false: u64,
    /// `resync` frames of its room.
    pub resyncs: u64,
    /// Presence events after the restart began, per user named: (leaves, joins).
    pub presence: BTreeMap<String, (u64, u64)>,
    /// Welcomed by more than one node.
    pub moved: bool,
}

/// One client's settings.
pub(super) struct Cfg {
    pub idx: usize,
    pub user: String,
    pub room: String,
    pub home: Endpoint,
    pub source: Option<Ipv4Addr>,
    pub attempt_timeout: Duration,
}

/// A small pseudo-random source for jitter.
struct Jitter(u64);

impl Jitter {
    fn frac(&mut self) -> f64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Why a connection attempt failed.
enum OpenErr {
    /// HTTP 503 with a Retry-After in seconds.
    Busy(u64),
    /// Anything else, by kind.
    Other(String),
}

async fn open(c: &Cfg, ep: &Endpoint) -> Result<Ws, OpenErr> {
    let url = ep.request_url(crate::target::Target::Wsgate, &c.user);
    let attempt = async {
        let socket =
            TcpSocket::new_v4().map_err(|e| OpenErr::Other(format!("tcp:{:?}", e.kind())))?;
        if let Some(ip) = c.source {
            socket
                .bind(SocketAddr::new(IpAddr::V4(ip), 0))
                .map_err(|e| OpenErr::Other(format!("bind:{:?}", e.kind())))?;
        }
        let stream = socket
            .connect(ep.addr)
            .await
            .map_err(|e| OpenErr::Other(format!("tcp:{:?}", e.kind())))?;
        let _ = stream.set_nodelay(true);
        match tokio_tungstenite::client_async_with_config(url, stream, Some(conn::small_config()))
            .await
        {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match (status, retry) {
                    (503, Some(s)) => Err(OpenErr::Busy(s)),
                    _ => Err(OpenErr::Other(format!("http:{status}"))),
                }
            }
            Err(_) => Err(OpenErr::Other("handshake".into())),
        }
    };
    tokio::time::timeout(c.attempt_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(OpenErr::Other("timeout".into())))
}

/// Sleeps `d`; false when told to stop first.
async fn sleep(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// How a session ended.
enum End {
    Stopped,
    /// Told to come back after `delay_ms`, to `url` if given.
    Hint(u64, Option<String>),
    /// Closed after joined, without a hint.
    Dropped,
    /// Failed before joined.
    Failed(String),
}

/// What survives a reconnect.
#[derive(Default)]
struct Resume {
    last_id: Option<MessageId>,
    epoch: Option<String>,
    node: Option<String>,
    refs: u64,
}

/// Runs one client until `stop`.
pub(super) async fn run(
    c: Cfg,
    sh: Arc<Shared>,
    rec: Arc<Mutex<Rec>>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut jitter = Jitter(stamp::now_ns() ^ (c.idx as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut target = c.home.clone();
    let mut resume = Resume::default();
    let mut backoff = BACKOFF_MIN;
    loop {
        let first = resume.epoch.is_none();
        let permit = if first {
            limit.clone().acquire_owned().await.ok()
        } else {
            None
        };
        let opened = open(&c, &target).await;
        let end = match opened {
            Ok(ws) => session(ws, &c, &sh, &rec, &mut resume, &mut stop, permit).await,
            Err(OpenErr::Busy(s)) => {
                drop(permit);
                *lock(&rec).failures.entry("http:503".into()).or_default() += 1;
                let wait = Duration::from_secs(s) + Duration::from_secs_f64(jitter.frac());
                if !sleep(wait, &mut stop).await {
                    return;
                }
                continue;
            }
            Err(OpenErr::Other(kind)) => {
                drop(permit);
                End::Failed(kind)
            }
        };
        match end {
            End::Stopped => return,
            End::Hint(delay_ms, url) => {
                backoff = BACKOFF_MIN;
                target = url
                    .and_then(|u| Endpoint::parse(&u).ok())
                    .unwrap_or_else(|| c.home.clone());
                if !sleep(Duration::from_millis(delay_ms), &mut stop).await {
                    return;
                }
            }
            End::Dropped | End::Failed(_) => {
                if let End::Failed(kind) = end {
                    *lock(&rec).failures.entry(kind).or_default() += 1;
                } else {
                    backoff = BACKOFF_MIN;
                }
                target = c.home.clone();
                let wait = backoff.mul_f64(0.5 + 0.5 * jitter.frac());
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if !sleep(wait, &mut stop).await {
                    return;
                }
            }
        }
    }
}

fn lock(rec: &Mutex<Rec>) -> std::sync::MutexGuard<'_, Rec> {
    rec.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection: welcome, join (resuming when it was joined before), then frames
/// until it ends.
async fn session(
    mut ws: Ws,
    c: &Cfg,
    sh: &Shared,
    rec: &Mutex<Rec>,
    st: &mut Resume,
    stop: &mut watch::Receiver<bool>,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> End {
    let deadline = Instant::now() + c.attempt_timeout;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    st.refs += 1;
    let want_ref = st.refs;
    let mut join = json!({"type": "join", "room": c.room, "ref": want_ref});
    if let Some(epoch) = &st.epoch {
        join["since"] = st
            .last_id
            .map_or_else(|| "0-0".to_owned(), |id| id.to_string())
            .into();
        join["epoch"] = epoch.clone().into();
    }
    let mut welcomed = false;
    let mut joined = false;
    let mut hint = None;
    let end = loop {
        // Until joined, within the attempt's deadline; then for as long as it lasts.
        let until = if joined { far } else { deadline };
        let next = tokio::select! {
            _ = stop.changed() => break End::Stopped,
            m = tokio::time::timeout_at(until, ws.next()) => match m {
                Ok(m) => m,
                Err(_) => break End::Failed("timeout".into()),
            },
        };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(f))) => {
                let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                *lock(rec).close_codes.entry(code.to_string()).or_default() += 1;
                break ended(joined, "closed");
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break ended(joined, "dropped"),
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match v["type"].as_str().unwrap_or("") {
            "welcome" if !welcomed => {
                welcomed = true;
                let node = v["node_id"].as_str().map(str::to_owned);
                if st.node.is_some() && node != st.node {
                    lock(rec).moved = true;
                }
                st.node = node;
                if ws.send(Message::text(join.to_string())).await.is_err() {
                    break ended(joined, "write");
                }
            }
            "publish" if v["room"] == c.room.as_str() => {
                let Some(id) = v["id"].as_str().and_then(|s| s.parse::<MessageId>().ok()) else {
                    continue;
                };
                let now = stamp::now_ns();
                st.last_id = st.last_id.max(Some(id));
                let mut r = lock(rec);
                if r.seen.insert(id) {
                    if let Some(t) = v["data"]["t"].as_u64() {
                        r.samples.push((now, now.saturating_sub(t) / 1000));
                    }
                } else {
                    r.dup += 1;
                }
            }
            "joined" if v["ref"] == json!(want_ref) => {
                joined = true;
                permit.take();
                let now = stamp::now_ns();
                let again = st.epoch.is_some();
                st.epoch = v["epoch"].as_str().map(str::to_owned).or(st.epoch.take());
                if st.last_id.is_none() {
                    st.last_id = v["last_id"].as_str().and_then(|s| s.parse().ok());
                }
                sh.joined_now.fetch_add(1, Ordering::Relaxed);
                let mut r = lock(rec);
                r.joined = true;
                if again {
                    r.rejoins += 1;
                    r.last_back_ns = Some(now);
                    if v["recovered"] != json!(true) {
                        r.recovered_false += 1;
                    }
                } else {
                    sh.ready.fetch_add(1, Ordering::Relaxed);
                }
            }
            "error" if !joined => {
                let code = v["code"].as_str().unwrap_or("?");
                break End::Failed(format!("error:{code}"));
            }
            "presence" => presence(&v, sh, rec),
            "resync" if v["room"] == c.room.as_str() => {
                lock(rec).resyncs += 1;
                if let Some(e) = v["epoch"].as_str() {
                    st.epoch = Some(e.to_owned());
                }
            }
            "reconnect" => {
                lock(rec).hints += 1;
                hint = Some((
                    v["delay_ms"].as_u64().unwrap_or(0),
                    v["url"].as_str().map(str::to_owned),
                ));
            }
            _ => {}
        }
    };
    if joined && !matches!(end, End::Stopped) {
        sh.dropped[c.idx].store(true, Ordering::Relaxed);
        sh.joined_now.fetch_sub(1, Ordering::Relaxed);
        lock(rec).joined = false;
    }
    match (end, hint) {
        (End::Stopped, _) => End::Stopped,
        (_, Some((d, u))) => End::Hint(d, u),
        (End::Dropped, None) => {
            lock(rec).unexpected_closes += 1;
            End::Dropped
        }
        (e, None) => e,
    }
}

fn ended(joined: bool, kind: &str) -> End {
    if joined {
        End::Dropped
    } else {
        End::Failed(kind.to_owned())
    }
}

/// Counts a presence event received after the restart began (not a user's first
/// arrival before it).
fn presence(v: &Value, sh: &Shared, rec: &Mutex<Rec>) {
    let restart = sh.restart_ns.load(Ordering::Relaxed);
    if restart == 0 || stamp::now_ns() < restart {
        return;
    }
    let user = v["user"]["user_id"].as_str().unwrap_or("?");
    let mut r = lock(rec);
    match v["event"].as_str() {
        Some("leave") => r.presence.entry(user.to_owned()).or_default().0 += 1,
        Some("join") if !sh.first_arrival(user) => {
            r.presence.entry(user.to_owned()).or_default().1 += 1
        }
        _ => {}
    }
}
