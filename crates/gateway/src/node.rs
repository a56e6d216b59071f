//! [`Node`]: the composition root that every task of the gateway shares.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsgate_broker::{
    Backend, Broker, Channel, Inbox, Online, Outbox, Presence, PresenceChange, Registry,
};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::count_ticker::CountTicker;
use crate::grace_queue::GraceQueue;
use crate::hooks::Hooks;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::pending_removals::PendingRemovals;
use crate::slot::Capacity;
use crate::subscriptions::Subscriptions;

/// How long a channel stays subscribed after its last local user left.
const UNSUBSCRIBE_LINGER: Duration = Duration::from_secs(2);

/// Everything one gateway node holds, shared by its tasks through an `Arc`.
pub struct Node {
    /// The configuration it was started with.
    pub config: Config,
    /// This node's id (`welcome.node_id`).
    pub node_id: String,
    /// Publishing, subscriptions and history: memory or Redis.
    pub broker: Arc<dyn Broker>,
    /// Room membership and typing.
    pub presence: Arc<dyn Presence>,
    /// Notifications and saved session state.
    pub inbox: Arc<dyn Inbox>,
    /// The cluster's node registry.
    pub registry: Arc<dyn Registry>,
    /// Webhook events owed, until delivered ([`crate::webhooks`]).
    pub outbox: Arc<dyn Outbox>,
    /// Sessions per user, cluster-wide (`user_offline`).
    pub online: Arc<dyn Online>,
    /// Local sessions by room and user.
    pub hub: Hub,
    /// Broker subscriptions of this node.
    pub subs: Subscriptions,
    /// Metrics.
    pub metrics: Metrics,
    /// Token verification.
    pub auth: Authenticator,
    /// The back-end hooks (connect, join, publish), when configured.
    pub hooks: Hooks,
    /// New sessions a second (`--accept-rate`).
    pub admission: crate::admission::Admission,
    /// Connection counts and limits.
    pub capacity: Arc<Capacity>,
    /// Presence removals that failed, waiting for a retry.
    pub removals: PendingRemovals,
    /// Count-mode rooms whose count changed and is not yet published.
    pub counts: CountTicker,
    /// Presence entries of closed sessions waiting out the grace.
    pub grace: GraceQueue,
    /// Set when shutdown starts: `/readyz` answers 503 and handshakes are refused.
    pub draining: AtomicBool,
    /// Set by the first heartbeat the registry took: by then whatever a previous run
    /// under this node id left in presence is gone, and joins may add to it.
    pub registered: AtomicBool,
    /// Source of node-local session ids.
    next_session: AtomicU64,
    /// When the node started.
    pub started: Instant,
    /// Cancelled at shutdown; every session's token is a child of it.
    pub root: CancellationToken,
    /// Cancelled when the node leaves the cluster registry, at the very end of a
    /// drain: until then it keeps reporting itself alive, or the others would reap
    /// the presence its closed sessions keep through their grace.
    pub deregistering: CancellationToken,
    /// Tracks session tasks so shutdown can wait for their drain.
    pub tracker: TaskTracker,
}

impl Node {
    /// A node over `backend`, checking tokens with `auth`.
    pub fn new(
        config: Config,
        node_id: String,
        backend: Backend,
        auth: Authenticator,
    ) -> Arc<Self> {
        let metrics = Metrics::new();
        // The embedded broker is always there; Redis says when it connects.
        metrics
            .broker_up
            .set(i64::from(backend.broker.kind() == "memory"));
        let hooks = Hooks::new(&config, &metrics.hooks);
        Arc::new(Node {
            node_id,
            subs: Subscriptions::new(backend.broker.clone()),
            broker: backend.broker,
            presence: backend.presence,
            inbox: backend.inbox,
            registry: backend.registry,
            outbox: backend.outbox,
            online: backend.online,
            hub: Hub::new(crate::hub::PendingCap {
                frames: config.send_queue.max(1024),
                bytes: config.replay_max_bytes(),
            }),
            metrics,
            auth,
            hooks,
            admission: crate::admission::Admission::new(config.accept_rate),
            capacity: Capacity::new(config.max_connections, config.max_connections_per_ip),
            removals: PendingRemovals::default(),
            counts: CountTicker::default(),
            grace: GraceQueue::default(),
            draining: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            started: Instant::now(),
            root: CancellationToken::new(),
            deregistering: CancellationToken::new(),
            tracker: TaskTracker::new(),
            config,
        })
    }

    /// A fresh node-local session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Open sessions (WebSocket and SSE) now.
    pub fn active(&self) -> usize {
        self.capacity.active()
    }

    /// Whether the node is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether the cluster registry has taken this node's first report (see
    /// [`Node::registered`]).
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// Whether a session may join `room` without the node going past `--max-rooms`
    /// rooms with local members.
    pub fn room_allowed(&self, room: &str) -> bool {
        self.hub.has_room(room) || self.hub.room_count() < self.config.max_rooms
    }

    /// Removes `session` from `room`'s presence and returns what it changed. A
    /// failure is not dropped: the removal waits for a retry (and what it owes the
    /// room is announced then), and this answers `None`.
    pub async fn presence_remove(
        &self,
        room: &str,
        session: &wsgate_broker::SessionRef,
    ) -> Option<PresenceChange> {
        match self.presence.remove(room, session).await {
            Ok(change) => Some(change),
            Err(e) => {
                tracing::warn!(%room, error = %e, "presence removal failed; retrying in the background");
                if !self.removals.add(room, session) {
                    self.metrics.presence_removals_lost.inc();
                    tracing::error!(%room, "too many presence removals waiting: one is lost");
                }
                None
            }
        }
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
}
