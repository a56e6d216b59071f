//! One `/ws` session: [`run`] opens it (welcome, hub, user channel), starts its writer
//! ([`crate::writer`]), runs the read loop that parses each client frame once and
//! hands the command to its group, and at the end leaves no trace in rooms, presence
//! or typing, whatever ended it.
//!
//! The commands, one group per file: [`rooms`] (join, leave, typing, presence),
//! [`messages`] (message, direct, history), [`inbox`] (notifications, mark read, the
//! state saved for the next `welcome`), [`refresh`] (a new token without reconnecting).

mod hooked;
mod inbox;
mod joined;
mod messages;
mod publishing;
mod refresh;
mod rooms;

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Sink, Stream, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;
use wsgate_broker::{Channel, SessionRef};
use wsgate_protocol::client::{self, ClientFrame, Command, ParseLimits};
use wsgate_protocol::server::ServerFrame;
use wsgate_protocol::{CloseCode, ErrorCode, FrameError, PROTOCOL_VERSION};

use crate::auth::Identity;
use crate::handle::SessionHandle;
use crate::lifecycle::Lifetime;
use crate::node::Node;
use crate::queue::Outbound;
use crate::ratelimit::TokenBucket;
use crate::slot::Slot;
use crate::socket::{await_close_reply, end_on_read_error};
use crate::writer::{ping_seq, run_writer, WriterParams};

/// How long a session's reader waits for the client to read its answers (the send
/// queue to drain below half) before it closes the connection with 1013.
const READER_STALL: Duration = Duration::from_secs(10);

/// Serves one upgraded WebSocket until it ends, then cleans up after it. `session_id`
/// was chosen before the upgrade (the connect hook saw it).
pub fn run<S>(
    node: Arc<Node>,
    ws: S,
    identity: Identity,
    session_id: String,
    slot: Slot,
    client: Option<std::net::IpAddr>,
) -> impl std::future::Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static,
{
    // Split before the session's future is made: a parameter of an async fn stays in
    // its state for the whole session, and the socket (~330 bytes) would sit there
    // moved-from in every connection.
    let (sink, stream) = ws.split();
    run_split(node, sink, stream, identity, session_id, slot, client)
}

async fn run_split<Si, St>(
    node: Arc<Node>,
    sink: Si,
    stream: St,
    identity: Identity,
    session_id: String,
    slot: Slot,
    client: Option<std::net::IpAddr>,
) where
    Si: Sink<Message, Error = WsError> + Unpin + Send + 'static,
    St: Stream<Item = Result<Message, WsError>> + Unpin + Send + 'static,
{
    let span = tracing::info_span!("session", %session_id, user_id = %identity.user.user_id, node_id = %node.node_id);
    async move {
        let session_ref = SessionRef {
            session_id: session_id.clone(),
            user: identity.user.clone(),
        };
        let lifetime = Lifetime::open(
            &node,
            slot,
            &session_id,
            Some(Arc::new(session_ref.clone())),
        );
        let handle = lifetime.handle.clone();
        let epoch = Instant::now();
        let last_seen = Arc::new(AtomicU64::new(0));
        let acked_ping = Arc::new(AtomicU64::new(0));
        let mut session = Session {
            node: node.clone(),
            session: session_ref,
            expiry: refresh::expiry_of(&node, &identity),
            identity,
            handle: handle.clone(),
            rooms: joined::Joined::default(),
            typing: HashSet::new(),
            bucket: TokenBucket::new(
                node.config.rate_limit,
                node.config.rate_limit * 2.0,
                Instant::now(),
            ),
            limits: ParseLimits {
                max_content_bytes: node.config.max_message_bytes,
            },
            publishing: publishing::Batch::default(),
        };
        tracing::debug!(client = ?client, "session open");
        // The steps before and after the read loop are boxed: their futures are large
        // (broker calls) and would otherwise sit in every idle session's task.
        Box::pin(session.start()).await;
        // Subscribed to the user's channel before the writer starts: once the client
        // has read `welcome`, a direct message or notification to it cannot be missed.
        Box::pin(session.ensure_user_channel()).await;
        let writer = run_writer(
            sink,
            WriterParams {
                queue: handle.queue.clone(),
                control: handle.control.clone(),
                heartbeat: Duration::from_millis(node.config.heartbeat_ms),
                last_seen: last_seen.clone(),
                epoch,
                expiry: session.expiry.clone(),
                drain_timeout: Duration::from_millis(node.config.shutdown_timeout_ms),
                write_timeout: Duration::from_millis(node.config.write_timeout_ms),
                max_out_frame: node.config.max_out_frame(),
                acked_ping: acked_ping.clone(),
            },
        );
        // The writer is polled once per burst: a span entered and left on every poll
        // showed in the fan-out profile, so it gets one only when debug logs are on.
        let writer = if tracing::enabled!(tracing::Level::DEBUG) {
            node.tracker
                .spawn(writer.instrument(tracing::debug_span!("writer")))
        } else {
            node.tracker.spawn(writer)
        };
        let mut stream = stream;
        session
            .read_loop(&mut stream, &last_seen, &acked_ping, epoch)
            .await;
        // Messages read before the session ended are still published and answered.
        Box::pin(session.settle_publishing()).await;
        tracing::debug!("reader done");
        let (code, delivered) = writer.await.unwrap_or((1011, Vec::new()));
        Box::pin(session.save_restore(&delivered)).await;
        tracing::debug!(code, "writer done");
        // Leave rooms and presence first: the peer is gone or told to go.
        Box::pin(session.cleanup()).await;
        Box::pin(await_close_reply(&mut stream, code)).await;
        lifetime.close(Some(code));
        tracing::debug!(code, "session closed");
    }
    .instrument(span)
    .await
}

/// A session's state, as its reader task holds it.
struct Session {
    /// The node.
    node: Arc<Node>,
    /// Who is connected, and with which grants.
    identity: Identity,
    /// When its token expires, shared with the writer (`None`: development mode).
    expiry: Option<Arc<crate::writer::expiry::Expiry>>,
    /// The session as presence records it.
    session: SessionRef,
    /// The session as the hub sees it.
    handle: SessionHandle,
    /// Rooms this session is in → (history epoch, `last_id` its `joined` announced).
    rooms: joined::Joined,
    /// Rooms where this session's user is flagged as typing by this session.
    typing: HashSet<String>,
    /// The per-connection rate limit.
    bucket: TokenBucket,
    /// Limits the parser applies.
    limits: ParseLimits,
    /// `message`s read and not yet published.
    publishing: publishing::Batch,
}

impl Session {
    /// Queues `welcome` (the first frame, before any fan-out can reach the session)
    /// and registers the session with the hub.
    async fn start(&mut self) {
        let user = &self.session.user.user_id;
        let inbox = &self.node.inbox;
        let unread = match inbox.unread(user, self.node.config.notifications_ttl).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "unread count unavailable for welcome");
                None
            }
        };
        let restore = inbox.take_restore(user).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "saved state unavailable for welcome");
            None
        });
        let welcome = ServerFrame::Welcome {
            protocol: PROTOCOL_VERSION,
            session_id: self.session.session_id.clone(),
            node_id: self.node.node_id.clone(),
            user_id: self.session.user.user_id.clone(),
            username: self.session.user.username.clone(),
            heartbeat_ms: self.node.config.heartbeat_ms,
            unread_notifications: unread,
            restore,
        };
        self.send(&welcome, "welcome");
        self.node
            .hub
            .register(&self.session.user.user_id, &self.handle);
        crate::webhooks::session_opened(&self.node, &self.session).await;
    }

    async fn ensure_user_channel(&self) {
        let ch = Channel::User(self.session.user.user_id.clone());
        if let Err(e) = self.node.subs.ensure(&ch).await {
            tracing::warn!(error = %e, "cannot subscribe the user channel; direct messages may not arrive");
        }
    }

    async fn read_loop<S>(
        &mut self,
        stream: &mut S,
        last_seen: &AtomicU64,
        acked_ping: &AtomicU64,
        epoch: Instant,
    ) where
        S: Stream<Item = Result<Message, WsError>> + Unpin,
    {
        let token = self.handle.control.token.clone();
        // The session's own answers share the queue with fan-out. A client that
        // pipelines hundreds of frames in one write (pings, say) must not overflow it
        // with answers it has not had a chance to read: the next frame is read only
        // while the queue is at most half full, so such a client is slowed down by
        // TCP, not closed with 1013. Fan-out alone still closes a reader that lags.
        // A client that sends but does not read at all is closed with 1013 once its
        // answers have waited for it for READER_STALL.
        let queue = self.handle.queue.clone();
        let backlog = (queue.capacity() / 2).max(1);
        loop {
            let msg = tokio::select! {
                biased;
                _ = token.cancelled() => return,
                m = async {
                    // Boxed, as it is rare: its timer would otherwise take room in
                    // every idle session's task.
                    if queue.len() >= backlog
                        && Box::pin(tokio::time::timeout(READER_STALL, queue.wait_below(backlog)))
                            .await
                            .is_err()
                    {
                        return Err(());
                    }
                    Ok(stream.next().await)
                } => m,
            };
            let Ok(msg) = msg else {
                tracing::debug!("the client does not read its answers: closed as a slow consumer");
                return self.handle.control.close(CloseCode::TryAgainLater);
            };
            if self
                .on_frame(msg, last_seen, acked_ping, epoch)
                .await
                .is_break()
            {
                return;
            }
            // Frames that are already here are served before the `message`s among
            // them are published, so a burst is published as one batch (one round
            // trip, in order: `publishing`). Each batched message will queue up to two
            // frames for this client (its `ack` and its own copy): the batch stops
            // growing where the queue's half-full rule above would have stopped reading.
            while !self.publishing.is_empty()
                && !self.publishing.is_full()
                && queue.len() + 2 * self.publishing.len() < backlog
            {
                let Some(msg) = stream.next().now_or_never() else {
                    break;
                };
                if self
                    .on_frame(msg, last_seen, acked_ping, epoch)
                    .await
                    .is_break()
                {
                    return;
                }
            }
            Box::pin(self.settle_publishing()).await;
        }
    }

    /// Serves one read from the socket; `Break` when the session ends.
    async fn on_frame(
        &mut self,
        msg: Option<Result<Message, WsError>>,
        last_seen: &AtomicU64,
        acked_ping: &AtomicU64,
        epoch: Instant,
    ) -> ControlFlow<()> {
        last_seen.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        match msg {
            // Boxed: serving a frame (a join waits on the broker) needs a large
            // future, and an idle session's task must not carry its space.
            Some(Ok(Message::Text(text))) => Box::pin(self.on_text(&text)).await,
            Some(Ok(Message::Binary(_))) => {
                self.handle.control.close(CloseCode::Unsupported);
                return ControlFlow::Break(());
            }
            Some(Ok(Message::Pong(payload))) => {
                if let Some(seq) = ping_seq(&payload) {
                    acked_ping.fetch_max(seq, Ordering::AcqRel);
                }
            }
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                // What was sent before the close is published and answered first.
                Box::pin(self.settle_publishing()).await;
                self.handle.control.close(CloseCode::Normal);
                return ControlFlow::Break(());
            }
            Some(Err(e)) => {
                end_on_read_error(&self.handle.control, &e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Parses one client frame and serves its command.
    async fn on_text(&mut self, text: &Utf8Bytes) {
        let frame = match client::parse(text.as_str(), &self.limits) {
            Ok(f) => f,
            Err(e) => {
                self.node
                    .metrics
                    .frames_in
                    .get_or_create(&vec![("type", "invalid")])
                    .inc();
                self.settle_publishing().await;
                return self.error(e);
            }
        };
        let ClientFrame { reference, command } = frame;
        self.node
            .metrics
            .frames_in
            .get_or_create(&vec![("type", command.kind())])
            .inc();
        if command != Command::Ping && !self.bucket.try_take(Instant::now()) {
            self.settle_publishing().await;
            return self.error(
                FrameError::new(ErrorCode::RateLimited, "too many frames; slow down")
                    .with_ref(reference),
            );
        }
        let r = reference.clone();
        if !matches!(command, Command::Message { .. }) {
            // Answered after every publish before it, and seeing them.
            self.settle_publishing().await;
        }
        let res = match command {
            Command::Join { room, since, epoch } => self.join(room, since, epoch, r).await,
            Command::Leave { room } => self.leave(room, r).await,
            Command::Typing { room, is_typing } => self.typing(room, is_typing).await,
            Command::Message { room, content } => self.message(room, content, r),
            Command::Direct { to, content } => self.direct(to, content, r).await,
            Command::History {
                room,
                before,
                limit,
            } => self.history(room, before, limit, r).await,
            Command::Notifications {
                limit,
                before,
                unread_only,
            } => self.notifications(limit, before, unread_only, r).await,
            Command::MarkRead { ids } => self.mark_read(ids, r).await,
            Command::Members {
                room,
                cursor,
                limit,
            } => self.members(room, cursor, limit, r).await,
            Command::Refresh { token } => self.refresh(token, r).await,
            Command::Ping => {
                self.send(&ServerFrame::Pong { reference: r }, "pong");
                Ok(())
            }
        };
        if let Err(e) = res {
            // A refused `message` is answered after the publishes before it.
            self.settle_publishing().await;
            self.error(e.with_ref(reference));
        }
    }

    /// Queues a frame of this session's own (an answer).
    fn send(&self, frame: &ServerFrame, kind: &'static str) {
        self.send_text(frame.encode(), kind);
    }

    /// Queues an encoded frame of this session's own.
    fn send_text(&self, text: String, kind: &'static str) {
        if self
            .handle
            .offer(Outbound::Frame(Utf8Bytes::from(text)))
            .is_ok()
        {
            self.node.metrics.frames_out(kind, 1);
        }
    }

    /// Answers with an `error` frame.
    fn error(&self, e: FrameError) {
        self.node.metrics.error(e.code);
        self.send(
            &ServerFrame::Error {
                code: e.code,
                message: e.message,
                reference: e.reference,
            },
            "error",
        );
    }

    /// The `unavailable` answer to a failed broker call (and its log line and count).
    fn unavailable(&self, e: wsgate_broker::Error) -> FrameError {
        tracing::warn!(error = %e, "broker call failed");
        self.node.metrics.broker_errors.inc();
        FrameError::new(
            ErrorCode::Unavailable,
            "the broker is unreachable; not accepted, retry later",
        )
    }

    /// Leaves every room (presence, typing, hub) and the user's channel.
    async fn cleanup(&mut self) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.leave_room(&room, true).await;
        }
        crate::webhooks::session_closed(&self.node, &self.session).await;
        if self
            .node
            .hub
            .unregister(&self.session.user.user_id, self.handle.id)
        {
            self.node
                .release_later(Channel::User(self.session.user.user_id.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ws = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

    fn future_size<A, B, C, D, E, G, F: Fn(A, B, C, D, E, G) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every idle connection carries its session task's state: a change that grows it
    /// (a timer or a socket kept inline) shows here before it shows in RSS. 1,664
    /// bytes when this was written (2,248 before the socket was split outside it).
    #[test]
    fn a_session_task_stays_small() {
        let size = future_size(run::<Ws>);
        assert!(size <= 2048, "the session future is {size} bytes");
    }
}
