//! [`Node`]: the composition root that every task of the gateway shares.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsgate_broker::{open_envelope, Broker, BrokerEvent, Channel, NodeReport};
use wsgate_protocol::server::frame_type;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::{type_label, Metrics};
use crate::subscriptions::Subscriptions;

/// The reserved room where every node publishes its stats once a second, for the
/// dashboard. Read-only for clients; joinable with a token granting it (or by anyone
/// in development mode).
pub const SYSTEM_ROOM: &str = "system:stats";

/// How long a channel stays subscribed after its last local user left.
const UNSUBSCRIBE_LINGER: Duration = Duration::from_secs(2);

/// Everything one gateway node holds, shared by its tasks through an `Arc`.
pub struct Node {
    /// The configuration it was started with.
    pub config: Config,
    /// This node's id (`welcome.node_id`).
    pub node_id: String,
    /// The broker: memory or Redis.
    pub broker: Arc<dyn Broker>,
    /// Local sessions by room and user.
    pub hub: Hub,
    /// Broker subscriptions of this node.
    pub subs: Subscriptions,
    /// Metrics.
    pub metrics: Metrics,
    /// Token verification.
    pub auth: Authenticator,
    /// Open WebSocket connections, counted from the accepted handshake.
    pub active: AtomicUsize,
    /// Sessions per client address (only with `--max-connections-per-ip`).
    per_ip: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    /// Set when shutdown starts: `/readyz` answers 503 and handshakes are refused.
    pub draining: AtomicBool,
    /// Source of node-local session ids.
    next_session: AtomicU64,
    /// When the node started.
    pub started: Instant,
    /// Cancelled at shutdown; every session's token is a child of it.
    pub root: CancellationToken,
    /// Tracks session tasks so shutdown can wait for their drain.
    pub tracker: TaskTracker,
}

impl Node {
    /// A node over `broker`.
    pub fn new(config: Config, node_id: String, broker: Arc<dyn Broker>) -> Arc<Self> {
        let auth = Authenticator::new(config.jwt_secret.as_deref());
        let metrics = Metrics::new();
        // The embedded broker is always there; Redis says when it connects.
        metrics.broker_up.set(i64::from(broker.kind() == "memory"));
        Arc::new(Node {
            node_id,
            subs: Subscriptions::new(broker.clone()),
            broker,
            hub: Hub::new(),
            metrics,
            auth,
            active: AtomicUsize::new(0),
            per_ip: std::sync::Mutex::default(),
            draining: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            started: Instant::now(),
            root: CancellationToken::new(),
            tracker: TaskTracker::new(),
            config,
        })
    }

    /// A fresh node-local session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the node is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Reserves a connection slot for a client at `client`, or says why not: the node
    /// is at `--max-connections`, or the address at `--max-connections-per-ip`.
    ///
    /// # Errors
    /// [`SlotRefused`] naming the limit that was reached.
    pub fn reserve_slot(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, SlotRefused> {
        let max = self.config.max_connections;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| SlotRefused::Node)?;
        let mut slot = Slot {
            node: self.clone(),
            client: None,
        };
        let per_ip = self.config.max_connections_per_ip;
        if let (Some(ip), true) = (client, per_ip > 0) {
            let mut counts = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(ip).or_insert(0);
            if *n >= per_ip {
                return Err(SlotRefused::Address);
            }
            *n += 1;
            slot.client = Some(ip);
        }
        Ok(slot)
    }

    /// Unsubscribes from `channel` a little later, if no local session needs it then.
    pub fn release_later(self: &Arc<Self>, channel: Channel) {
        let node = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(UNSUBSCRIBE_LINGER).await;
            let res = node
                .subs
                .release_if_unused(&channel, || node.hub.needs(&channel))
                .await;
            if let Err(e) = res {
                tracing::warn!(%channel, error = %e, "unsubscribe failed");
            }
        });
    }

    /// Fans broker events out to local sessions until the broker goes away. This is
    /// the one place where delivery starts: the frame is checked as UTF-8 once and
    /// then shared by reference with every recipient.
    pub async fn run_dispatcher(
        self: Arc<Self>,
        mut events: tokio::sync::mpsc::Receiver<BrokerEvent>,
    ) {
        while let Some(event) = events.recv().await {
            match event {
                BrokerEvent::Message { channel, frame } => self.dispatch(&channel, frame),
                BrokerEvent::Down => {
                    self.metrics.broker_up.set(0);
                    self.metrics.broker_disconnects.inc();
                }
                BrokerEvent::Up => {
                    self.metrics.broker_up.set(1);
                    // The broker resubscribed what it knew; make sure every channel a
                    // local session needs is there, including ones whose subscription
                    // failed during the outage.
                    let node = self.clone();
                    tokio::spawn(async move {
                        for channel in node.hub.channels() {
                            if let Err(e) = node.subs.ensure(&channel).await {
                                tracing::warn!(%channel, error = %e, "resubscribe failed");
                            }
                        }
                    });
                }
            }
        }
    }

    /// Publishes this node's stats into [`SYSTEM_ROOM`] once a second (not stored:
    /// one Pub/Sub message per node per second, whatever the number of dashboards).
    pub async fn run_stats(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let messages_in = || {
            self.metrics
                .frames_in
                .get_or_create(&vec![("type", "message")])
                .get()
        };
        let mut last = (
            messages_in(),
            self.metrics.fanout_deliveries.get(),
            Instant::now(),
        );
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.root.cancelled() => return,
            }
            let now = (
                messages_in(),
                self.metrics.fanout_deliveries.get(),
                Instant::now(),
            );
            let secs = now.2.duration_since(last.2).as_secs_f64().max(0.001);
            let data = serde_json::json!({
                "node_id": self.node_id,
                "connections": self.active.load(Ordering::Acquire),
                "capacity": self.config.max_connections,
                "rooms": self.hub.room_count(),
                "messages_in_per_s": ((now.0 - last.0) as f64 / secs).round(),
                "deliveries_per_s": ((now.1 - last.1) as f64 / secs).round(),
                "slow_consumer_closes": self.metrics.slow_consumer_closes.get(),
                "uptime_s": self.started.elapsed().as_secs(),
                "broker": self.broker.kind(),
            });
            last = now;
            let frame = wsgate_protocol::server::ServerFrame::Publish {
                id: None,
                room: Some(SYSTEM_ROOM.to_owned()),
                user_id: None,
                data,
                ts: crate::session::now_ts(),
            };
            let _ = self
                .broker
                .publish(
                    &Channel::Room(SYSTEM_ROOM.to_owned()),
                    frame.encode().into(),
                )
                .await;
        }
    }

    /// Reports this node to the broker twice per heartbeat interval: the cluster
    /// registry, and the reaping of nodes that stopped reporting.
    pub async fn run_heartbeat(self: Arc<Self>) {
        let period =
            Duration::from_millis(self.config.heartbeat_ms / 2).max(Duration::from_millis(50));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.root.cancelled() => return,
            }
            let report = NodeReport {
                connections: self.active.load(Ordering::Acquire) as u64,
            };
            match self.broker.heartbeat(report).await {
                Ok(()) if failing => {
                    tracing::info!("cluster heartbeat restored");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cluster heartbeat failing");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    fn dispatch(&self, channel: &Channel, payload: Bytes) {
        // A user-channel frame may name a session to skip (`#skip:<id>\n<frame>`).
        let (skip, inner) = {
            let (skip, frame) = open_envelope(&payload);
            (
                skip.map(str::to_owned),
                skip.is_some().then(|| payload.slice_ref(frame)),
            )
        };
        let frame = inner.unwrap_or(payload);
        let frame = match Utf8Bytes::try_from(frame) {
            Ok(f) => f,
            Err(_) => {
                tracing::warn!(%channel, "dropping a broker frame that is not UTF-8");
                return;
            }
        };
        let out = self.hub.dispatch_except(channel, &frame, skip.as_deref());
        self.metrics.fanout_deliveries.inc_by(out.delivered as u64);
        self.metrics
            .frames_out(type_label(frame_type(frame.as_str())), out.delivered as u64);
        // Slow consumers closed here are counted when their session ends.
    }
}

/// A reserved connection slot, released when dropped.
pub struct Slot {
    /// The node whose count it holds.
    node: Arc<Node>,
    /// The client address counted against `--max-connections-per-ip`, if any.
    client: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.node.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            let mut counts = self.node.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// Why a connection slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// The node holds `--max-connections` already (503).
    Node,
    /// The client's address holds `--max-connections-per-ip` already (429).
    Address,
}

impl SlotRefused {
    /// The HTTP refusal: status, contract error code, message, `Retry-After` seconds.
    pub fn response(self) -> http::Response<crate::http::Body> {
        let (status, code, message, retry) = match self {
            SlotRefused::Node => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this node is at capacity",
                "1",
            ),
            SlotRefused::Address => (
                http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many connections from this address",
                "5",
            ),
        };
        let mut res = crate::http::error_response(status, code, message);
        res.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static(retry),
        );
        res
    }
}
