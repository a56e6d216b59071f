//! Webhooks (Pusher's idea): the cluster tells a back end, asynchronously and at least
//! once, what happened in it: `room_occupied`, `room_vacated`, `member_added`,
//! `member_removed` and `user_offline` (after the presence grace), and
//! `client_message` in namespaces that ask for it.
//!
//! The events are decided where presence is decided: the broker records each
//! transition in its outbox in the same step as the transition
//! ([`wsgate_broker::Outbox`]), so there is one event per transition however many
//! nodes saw it. This module feeds the broker what only the gateway knows (sessions
//! opening and closing for `user_offline`, clients' messages), and runs the node's
//! delivery task ([`deliver`]: batches, signature, retries) over the shared outbox;
//! [`body`] is the POST's JSON.

mod body;
mod deliver;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wsgate_broker::{Event, EventName, SessionRef};
use wsgate_protocol::server::StoredEntry;
use wsgate_protocol::MessageId;

use crate::grace_queue::SESSION;
use crate::http_client::HttpClient;
use crate::node::Node;

pub use deliver::{BACKOFF_MIN, POLL};

/// The running delivery task, stopped at shutdown by [`Handle::finish`].
pub struct Handle {
    /// Tells the task to take nothing new.
    stop: CancellationToken,
    /// The task.
    task: JoinHandle<()>,
}

/// Starts the node's delivery task when `--webhook-url` is set.
pub fn start(node: &Arc<Node>) -> Option<Handle> {
    let args = node.config.webhooks.clone();
    let url = crate::http_client::parse_url(args.webhook_url.as_deref()?).ok()?;
    let key = crate::hooks::signature::key(args.webhook_secret.as_deref()?.as_bytes());
    let timeout = Duration::from_millis(args.webhook_timeout_ms);
    let stop = CancellationToken::new();
    let deliverer = deliver::Deliverer {
        node: node.clone(),
        client: HttpClient::new(timeout.min(Duration::from_secs(5))),
        args,
        url,
        key,
        stop: stop.clone(),
    };
    tracing::info!("webhooks on");
    Some(Handle {
        stop,
        task: tokio::spawn(deliverer.run()),
    })
}

impl Handle {
    /// At shutdown, once presence has settled: the batch in flight is finished and, for
    /// the embedded outbox (nobody else will deliver it), everything left is sent,
    /// until `deadline`. Past it the task is stopped; on Redis what it held is taken
    /// over by another node once stale.
    pub async fn finish(self, deadline: tokio::time::Instant) {
        self.stop.cancel();
        let abort = self.task.abort_handle();
        if tokio::time::timeout_at(deadline, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("shutdown deadline reached with webhook events undelivered");
        }
    }
}

/// Whether sessions are counted for `user_offline`.
pub fn counts_sessions(node: &Node) -> bool {
    node.config
        .webhooks
        .recording
        .records(EventName::UserOffline)
}

/// A `/ws` session opened: its user is online (for `user_offline`).
pub async fn session_opened(node: &Node, session: &SessionRef) {
    if !counts_sessions(node) {
        return;
    }
    if let Err(e) = node.online.connect(session).await {
        tracing::warn!(error = %e, "session not counted for user_offline");
    }
}

/// A `/ws` session closed: once the presence grace is over (a session of the user
/// that opened meanwhile, on any node, keeps the user online), it stops counting.
pub async fn session_closed(node: &Node, session: &SessionRef) {
    if !counts_sessions(node) {
        return;
    }
    let wait = Duration::from_millis(node.config.presence_grace_ms);
    let deferred = !wait.is_zero()
        && node.grace.defer(
            tokio::time::Instant::now() + wait,
            SESSION,
            Arc::new(session.clone()),
        );
    if !deferred {
        disconnect(node, session).await;
    }
}

/// Stops counting `session` now; a failure waits for a retry (`presence_retry`).
pub async fn disconnect(node: &Node, session: &SessionRef) {
    if let Err(e) = node.online.disconnect(session).await {
        tracing::warn!(error = %e, "user_offline count failed; retrying in the background");
        if !node.removals.add(SESSION, session) {
            node.metrics.presence_removals_lost.inc();
        }
    }
}

/// Adds every local `/ws` session to the online counts again (the registry had
/// reaped this node). Returns whether every one was added.
pub async fn reconnect_all(node: &Node) -> bool {
    if !counts_sessions(node) {
        return true;
    }
    for handle in node.hub.sessions() {
        let Some(session) = handle.presence else {
            continue;
        };
        if node.online.connect(&session).await.is_err() {
            return false;
        }
    }
    true
}

/// Records `client_message` for each of `entries` that was published (`results`) in
/// a namespace that asks for it. `user_id` sent them all.
pub async fn client_messages(
    node: &Node,
    user_id: &str,
    entries: &[(String, StoredEntry)],
    results: &[Result<MessageId, wsgate_broker::Error>],
) {
    let namespaces = &node.config.namespaces;
    // One call per run of messages to one room.
    let mut runs: Vec<(&str, Vec<Event>)> = Vec::new();
    for ((room, entry), result) in entries.iter().zip(results) {
        let Ok(id) = result else { continue };
        if !namespaces.for_room(room).webhook_client_messages {
            continue;
        }
        let event = Event {
            name: EventName::ClientMessage,
            room: Some(room.clone()),
            user_id: Some(user_id.to_owned()),
            message: Some(entry.frame(*id)),
        };
        match runs.last_mut() {
            Some((r, events)) if *r == room.as_str() => events.push(event),
            _ => runs.push((room, vec![event])),
        }
    }
    for (room, events) in runs {
        if let Err(e) = node.outbox.record(room, &events).await {
            tracing::warn!(%room, error = %e, "client_message webhook events lost");
        }
    }
}

/// Whether a batch of messages may need [`client_messages`] (a cheap test first).
pub fn wants_client_messages(node: &Node) -> bool {
    node.config
        .webhooks
        .recording
        .records(EventName::ClientMessage)
}
