//! One WebSocket session: the reader loop that parses and serves client frames, the
//! writer task it feeds ([`crate::writer`]), and the clean-up that leaves no trace in
//! rooms, presence or typing when it ends, whatever ended it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{Sink, Stream, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;
use wsgate_broker::{Channel, SessionRef};
use wsgate_protocol::client::{self, ClientFrame, Command, ParseLimits};
use wsgate_protocol::server::{frame_id, PresenceEvent, RestoreRoom, ServerFrame, StoredEntry};
use wsgate_protocol::{CloseCode, ErrorCode, FrameError, MessageId, PROTOCOL_VERSION};

use crate::auth::Identity;
use crate::handle::{Control, Outbound, Queue, SessionHandle};
use crate::node::{Node, Slot};
use crate::ratelimit::TokenBucket;
use crate::writer::{run_writer, WriterParams};

/// How long a typing flag lasts without a refresh.
pub const TYPING_TTL: Duration = Duration::from_secs(5);

/// How long the reader waits for the peer's close reply after the session ended.
/// A live peer answers at once; the wait matters for a slow consumer, whose close
/// frame sits behind the backlog in the socket buffers: dropping the socket before the
/// peer has read up to it would lose the close frame (the kernel resets a connection
/// closed with unread data), so the peer would never learn its close code.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// How long a session's reader waits for the client to read its answers (the send
/// queue to drain below half) before it closes the connection with 1013.
const READER_STALL: Duration = Duration::from_secs(10);

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_ts() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Serves one upgraded WebSocket until it ends, then cleans up after it.
pub async fn run<S>(
    node: Arc<Node>,
    ws: S,
    identity: Identity,
    slot: Slot,
    client: Option<std::net::IpAddr>,
) where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static,
{
    let session_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("session", %session_id, user_id = %identity.user.user_id, node_id = %node.node_id);
    async move {
        node.metrics.connections_total.inc();
        node.metrics.connections_active.inc();
        let (sink, stream) = ws.split();
        let queue = Queue::new(node.config.send_queue);
        let control = Arc::new(Control::new(node.root.child_token()));
        let handle = SessionHandle {
            id: node.next_session_id(),
            key: Arc::from(session_id.as_str()),
            queue: queue.clone(),
            control: control.clone(),
        };
        let epoch = Instant::now();
        let last_seen = Arc::new(AtomicU64::new(0));
        let mut session = Session {
            node: node.clone(),
            session: SessionRef {
                session_id: session_id.clone(),
                user: identity.user.clone(),
            },
            identity,
            handle,
            rooms: HashMap::new(),
            typing: HashSet::new(),
            bucket: TokenBucket::new(
                node.config.rate_limit,
                node.config.rate_limit * 2.0,
                Instant::now(),
            ),
            limits: ParseLimits {
                max_content_bytes: node.config.max_message_bytes,
            },
        };
        tracing::debug!(client = ?client, "session open");
        // The steps before and after the read loop are boxed: their futures are large
        // (broker calls) and would otherwise sit in every idle session's task.
        Box::pin(session.start()).await;
        // Subscribed to the user's channel before the writer starts: once the client
        // has read `welcome`, a direct message or notification to it cannot be missed.
        Box::pin(session.ensure_user_channel()).await;
        let writer = node.tracker.spawn(
            run_writer(
                sink,
                WriterParams {
                    queue,
                    control: control.clone(),
                    heartbeat: Duration::from_millis(node.config.heartbeat_ms),
                    last_seen: last_seen.clone(),
                    epoch,
                    expires_at: session.identity.expires_at,
                    drain_timeout: Duration::from_millis(node.config.shutdown_timeout_ms),
                },
            )
            // A debug-level child span: at info it is disabled and costs the writer,
            // which is polled once per burst, nothing.
            .instrument(tracing::debug_span!("writer")),
        );
        let mut stream = stream;
        session.read_loop(&mut stream, &last_seen, epoch).await;
        tracing::debug!("reader done");
        let (code, delivered) = writer.await.unwrap_or((1011, Vec::new()));
        Box::pin(session.save_restore(&delivered)).await;
        tracing::debug!(code, "writer done");
        // Leave rooms and presence first: the peer is gone or told to go.
        Box::pin(session.cleanup()).await;
        Box::pin(await_close_reply(&mut stream, code)).await;
        node.metrics.close(code);
        // Counted by the reason chosen, even when the close frame could not be written.
        if control.code() == Some(CloseCode::TryAgainLater.code()) {
            node.metrics.slow_consumer_closes.inc();
        }
        node.metrics.connections_active.dec();
        drop(slot);
        tracing::debug!(code, "session closed");
    }
    .instrument(span)
    .await
}

/// Ends a connection after a read error: with the close code the contract gives
/// the error (1009 too big, 1007 invalid UTF-8, 1002 protocol error), or without a
/// close frame when the peer is gone.
pub fn end_on_read_error(control: &Control, e: &WsError) {
    let code = match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => CloseCode::TooBig,
        WsError::Capacity(_) => CloseCode::TooBig,
        WsError::Utf8(_) => CloseCode::InvalidPayload,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return control.vanish(),
        WsError::Protocol(_) => CloseCode::Protocol,
        _ => return control.vanish(),
    };
    tracing::debug!(error = %e, code = code.code(), "read error");
    control.close(code);
}

/// When the server sent the close frame (`code`), lets the peer read up to it and
/// answer before the socket is dropped (bounded by [`CLOSE_HANDSHAKE_WAIT`]).
pub async fn await_close_reply<S>(stream: &mut S, code: u16)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    if code != crate::handle::ABNORMAL && code != CloseCode::Normal.code() {
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_WAIT, async {
            while stream.next().await.is_some() {}
        })
        .await;
    }
}

struct Session {
    node: Arc<Node>,
    identity: Identity,
    session: SessionRef,
    handle: SessionHandle,
    /// Rooms this session is in → (history epoch, `last_id` its `joined` announced).
    rooms: HashMap<String, (String, Option<MessageId>)>,
    /// Rooms where this session's user is flagged as typing by this session.
    typing: HashSet<String>,
    bucket: TokenBucket,
    limits: ParseLimits,
}

impl Session {
    /// Queues `welcome` (the first frame, before any fan-out can reach the session)
    /// and registers the session with the hub.
    async fn start(&mut self) {
        let user = &self.session.user.user_id;
        let broker = &self.node.broker;
        let unread = match broker
            .unread(user, self.node.config.notifications_ttl)
            .await
        {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "unread count unavailable for welcome");
                None
            }
        };
        let restore = broker.take_restore(user).await.unwrap_or_else(|e| {
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
    }

    async fn ensure_user_channel(&self) {
        let ch = Channel::User(self.session.user.user_id.clone());
        if let Err(e) = self.node.subs.ensure(&ch).await {
            tracing::warn!(error = %e, "cannot subscribe the user channel; direct messages may not arrive");
        }
    }

    async fn read_loop<S>(&mut self, stream: &mut S, last_seen: &AtomicU64, epoch: Instant)
    where
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
                    if queue.len() >= backlog
                        && tokio::time::timeout(READER_STALL, queue.wait_below(backlog))
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
            last_seen.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            match msg {
                // Boxed: serving a frame (a join waits on the broker) needs a large
                // future, and an idle session's task must not carry its space.
                Some(Ok(Message::Text(text))) => Box::pin(self.on_text(&text)).await,
                Some(Ok(Message::Binary(_))) => {
                    return self.handle.control.close(CloseCode::Unsupported)
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => {
                    return self.handle.control.close(CloseCode::Normal)
                }
                Some(Err(e)) => return end_on_read_error(&self.handle.control, &e),
            }
        }
    }

    async fn on_text(&mut self, text: &Utf8Bytes) {
        let frame = match client::parse(text.as_str(), &self.limits) {
            Ok(f) => f,
            Err(e) => {
                self.node
                    .metrics
                    .frames_in
                    .get_or_create(&vec![("type", "invalid")])
                    .inc();
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
            return self.error(
                FrameError::new(ErrorCode::RateLimited, "too many frames; slow down")
                    .with_ref(reference),
            );
        }
        let res = match command {
            Command::Join { room, since, epoch } => {
                self.join(room, since, epoch, reference.clone()).await
            }
            Command::Leave { room } => self.leave(room, reference.clone()).await,
            Command::Message { room, content } => {
                self.message(room, content, reference.clone()).await
            }
            Command::Typing { room, is_typing } => self.typing(room, is_typing).await,
            Command::Direct { to, content } => self.direct(to, content, reference.clone()).await,
            Command::History {
                room,
                before,
                limit,
            } => self.history(room, before, limit, reference.clone()).await,
            Command::Notifications {
                limit,
                before,
                unread_only,
            } => {
                self.notifications(limit, before, unread_only, reference.clone())
                    .await
            }
            Command::MarkRead { ids } => self.mark_read(ids, reference.clone()).await,
            Command::Ping => {
                self.send(
                    &ServerFrame::Pong {
                        reference: reference.clone(),
                    },
                    "pong",
                );
                Ok(())
            }
        };
        if let Err(e) = res {
            self.error(e.with_ref(reference));
        }
    }

    fn send(&self, frame: &ServerFrame, kind: &'static str) {
        self.send_text(frame.encode(), kind);
    }

    fn send_text(&self, text: String, kind: &'static str) {
        if self
            .handle
            .offer(Outbound::Frame(Utf8Bytes::from(text)))
            .is_ok()
        {
            self.node.metrics.frames_out(kind, 1);
        }
    }

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

    fn require_writable(&self, room: &str) -> Result<(), FrameError> {
        if room == crate::node::SYSTEM_ROOM {
            return Err(FrameError::new(
                ErrorCode::Forbidden,
                "the system room is read-only",
            ));
        }
        self.require_member(room)
    }

    fn require_member(&self, room: &str) -> Result<(), FrameError> {
        if self.rooms.contains_key(room) {
            Ok(())
        } else {
            Err(FrameError::new(ErrorCode::NotMember, "join the room first"))
        }
    }

    fn require_access(&self, room: &str) -> Result<(), FrameError> {
        if self
            .identity
            .may_enter(room, &self.node.config.private_room_prefix)
        {
            Ok(())
        } else {
            Err(FrameError::new(
                ErrorCode::Forbidden,
                "this private room is not granted to you",
            ))
        }
    }

    async fn join(
        &mut self,
        room: String,
        since: Option<MessageId>,
        epoch: Option<String>,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        self.require_access(&room)?;
        let already = self.rooms.contains_key(&room);
        if !already && self.rooms.len() >= self.node.config.max_rooms_per_connection {
            return Err(FrameError::new(
                ErrorCode::TooManyRooms,
                format!(
                    "at most {} rooms per connection",
                    self.node.config.max_rooms_per_connection
                ),
            ));
        }
        let node = self.node.clone();
        node.hub.join(&room, &self.handle, node.config.send_queue);
        let channel = Channel::Room(room.clone());
        let answer = async {
            node.subs.ensure(&channel).await?;
            let first = if already {
                false
            } else {
                node.broker.presence_add(&room, &self.session).await?
            };
            let members = node.broker.presence_members(&room).await?;
            let (head, seen, state, recovered) = match since {
                Some(since) => {
                    let replay = node.broker.replay(&room, since).await?;
                    let epoch_ok = epoch.as_deref().is_none_or(|e| e == replay.state.epoch);
                    let seen = replay
                        .entries
                        .last()
                        .map(|(id, _)| *id)
                        .unwrap_or(since)
                        .max(since);
                    let head: Vec<Utf8Bytes> = replay
                        .entries
                        .into_iter()
                        .filter_map(|(_, f)| Utf8Bytes::try_from(f).ok())
                        .collect();
                    (head, Some(seen), replay.state, replay.complete && epoch_ok)
                }
                None => (Vec::new(), None, node.broker.room_state(&room).await?, true),
            };
            Ok::<_, wsgate_broker::Error>((first, members, head, seen, state, recovered))
        };
        let (first, members, mut head, seen, state, recovered) = match answer.await {
            Ok(a) => a,
            Err(e) => {
                if !already {
                    if node.hub.leave(&room, self.handle.id) {
                        node.release_later(channel);
                    }
                    let _ = node.broker.presence_remove(&room, &self.session).await;
                }
                return Err(self.unavailable(e));
            }
        };
        let replayed = head.len() as u64;
        let joined_at = (state.epoch.clone(), state.last_id);
        let joined = ServerFrame::Joined {
            reference,
            room: room.clone(),
            members,
            last_id: state.last_id.map(|id| id.to_string()),
            epoch: state.epoch,
            recovered,
        };
        head.push(Utf8Bytes::from(joined.encode()));
        if first {
            // Published before `joined` is queued: the session's own arrival reaches
            // it right after `joined` (held while the join is pending), and before
            // anything another client does once it has seen `joined`.
            self.presence(&room, PresenceEvent::Join).await;
        }
        if node
            .hub
            .finish_join(&room, self.handle.id, head, seen)
            .is_ok()
        {
            node.metrics.frames_out("message", replayed);
            node.metrics.frames_out("joined", 1);
        }
        self.rooms.insert(room.clone(), joined_at);
        Ok(())
    }

    async fn presence(&self, room: &str, event: PresenceEvent) {
        let frame = ServerFrame::Presence {
            room: room.to_owned(),
            event,
            user: self.session.user.clone(),
        };
        if let Err(e) = self
            .node
            .broker
            .publish(&Channel::Room(room.to_owned()), frame.encode().into())
            .await
        {
            tracing::warn!(%room, error = %e, "presence event lost");
        }
    }

    async fn leave(&mut self, room: String, reference: Option<Value>) -> Result<(), FrameError> {
        if !self.rooms.contains_key(&room) {
            return Err(FrameError::new(ErrorCode::NotMember, "not in this room"));
        }
        self.leave_room(&room).await;
        self.send(&ServerFrame::Left { reference, room }, "left");
        Ok(())
    }

    /// Takes the session out of `room` everywhere: hub, typing, presence.
    async fn leave_room(&mut self, room: &str) {
        self.rooms.remove(room);
        if self.node.hub.leave(room, self.handle.id) {
            self.node.release_later(Channel::Room(room.to_owned()));
        }
        if self.typing.remove(room) {
            if let Ok(users) = self
                .node
                .broker
                .typing_set(room, &self.session.user, false, TYPING_TTL)
                .await
            {
                self.publish_typing(room, users).await;
            }
        }
        match self.node.broker.presence_remove(room, &self.session).await {
            Ok(true) => self.presence(room, PresenceEvent::Leave).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(%room, error = %e, "presence removal failed"),
        }
    }

    async fn message(
        &mut self,
        room: String,
        content: String,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        self.require_writable(&room)?;
        let entry = StoredEntry::message(&room, &self.session.user, &content, &now_ts());
        let id = self
            .node
            .broker
            .publish_entry(&room, &entry)
            .await
            .map_err(|e| self.unavailable(e))?;
        if reference.is_some() {
            self.send(
                &ServerFrame::Ack {
                    reference,
                    room: Some(room),
                    id: id.to_string(),
                },
                "ack",
            );
        }
        Ok(())
    }

    async fn typing(&mut self, room: String, is_typing: bool) -> Result<(), FrameError> {
        self.require_writable(&room)?;
        let users = self
            .node
            .broker
            .typing_set(&room, &self.session.user, is_typing, TYPING_TTL)
            .await
            .map_err(|e| self.unavailable(e))?;
        if is_typing {
            self.typing.insert(room.clone());
            let node = self.node.clone();
            let room = room.clone();
            tokio::spawn(async move {
                tokio::time::sleep(TYPING_TTL + Duration::from_millis(50)).await;
                if let Ok(Some(users)) = node.broker.typing_expire(&room).await {
                    let frame = ServerFrame::Typing {
                        room: room.clone(),
                        users,
                    };
                    let _ = node
                        .broker
                        .publish(&Channel::Room(room), frame.encode().into())
                        .await;
                }
            });
        } else {
            self.typing.remove(&room);
        }
        self.publish_typing(&room, users).await;
        Ok(())
    }

    async fn publish_typing(&self, room: &str, users: Vec<wsgate_protocol::server::Member>) {
        let frame = ServerFrame::Typing {
            room: room.to_owned(),
            users,
        };
        if let Err(e) = self
            .node
            .broker
            .publish(&Channel::Room(room.to_owned()), frame.encode().into())
            .await
        {
            tracing::warn!(%room, error = %e, "typing update lost");
        }
    }

    async fn direct(
        &mut self,
        to: String,
        content: String,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        let id = uuid::Uuid::new_v4().to_string();
        let frame = ServerFrame::Direct {
            id: id.clone(),
            from: self.session.user.clone(),
            content,
            ts: now_ts(),
        };
        self.node
            .broker
            .publish(&Channel::User(to), frame.encode().into())
            .await
            .map_err(|e| self.unavailable(e))?;
        if reference.is_some() {
            self.send(
                &ServerFrame::Ack {
                    reference,
                    room: None,
                    id,
                },
                "ack",
            );
        }
        Ok(())
    }

    async fn history(
        &mut self,
        room: String,
        before: Option<MessageId>,
        limit: usize,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        self.require_access(&room)?;
        let frames = self
            .node
            .broker
            .history(&room, before, limit)
            .await
            .map_err(|e| self.unavailable(e))?;
        // The stored frames are spliced in as they are: no decoding, no re-encoding.
        let mut out = String::with_capacity(64 + frames.iter().map(|f| f.len() + 1).sum::<usize>());
        out.push_str(r#"{"type":"history","#);
        if let Some(r) = &reference {
            out.push_str(r#""ref":"#);
            out.push_str(&r.to_string());
            out.push(',');
        }
        out.push_str(r#""room":"#);
        out.push_str(&Value::String(room).to_string());
        out.push_str(r#","messages":["#);
        let mut first = true;
        for f in &frames {
            let Ok(text) = std::str::from_utf8(f) else {
                continue;
            };
            if frame_id(text).is_none() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(text);
        }
        out.push_str("]}");
        self.send_text(out, "history");
        Ok(())
    }

    fn unavailable(&self, e: wsgate_broker::Error) -> FrameError {
        tracing::warn!(error = %e, "broker call failed");
        self.node.metrics.broker_errors.inc();
        FrameError::new(
            ErrorCode::Unavailable,
            "the broker is unreachable; not accepted, retry later",
        )
    }

    /// Saves this session's rooms with the last id it delivered in each (or, where it
    /// delivered none, the `last_id` its `joined` announced) and their epochs, for the
    /// user's next `welcome`: one broker write per closing session, nothing per
    /// delivery.
    async fn save_restore(&self, delivered: &crate::writer::Delivered) {
        if self.rooms.is_empty() {
            return;
        }
        let rooms: Vec<RestoreRoom> = self
            .rooms
            .iter()
            .map(|(room, (epoch, joined_last))| {
                let sent = delivered.iter().find(|(r, _)| r == room).map(|(_, id)| *id);
                RestoreRoom {
                    room: room.clone(),
                    last_id: sent.max(*joined_last).map(|id| id.to_string()),
                    epoch: epoch.clone(),
                }
            })
            .collect();
        let ttl = self.node.config.session_state_ttl;
        if let Err(e) = self
            .node
            .broker
            .save_restore(&self.session.user.user_id, &rooms, ttl)
            .await
        {
            tracing::warn!(error = %e, "could not save the session state");
        }
    }

    async fn notifications(
        &self,
        limit: usize,
        before: Option<String>,
        unread_only: bool,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        let (items, unread) = self
            .node
            .broker
            .notifications(
                &self.session.user.user_id,
                limit,
                before.as_deref(),
                unread_only,
                self.node.config.notifications_ttl,
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        let frame = ServerFrame::Notifications {
            reference,
            items,
            unread,
        };
        self.send(&frame, "notifications");
        Ok(())
    }

    async fn mark_read(
        &self,
        ids: Option<Vec<String>>,
        reference: Option<Value>,
    ) -> Result<(), FrameError> {
        let (ids, unread) = self
            .node
            .broker
            .mark_read(
                &self.session.user.user_id,
                ids.as_deref(),
                &self.session.session_id,
                self.node.config.notifications_ttl,
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        self.send(
            &ServerFrame::MarkedRead {
                reference,
                ids,
                unread,
            },
            "marked_read",
        );
        Ok(())
    }

    /// Leaves every room (presence, typing, hub) and the user's channel.
    async fn cleanup(&mut self) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.leave_room(&room).await;
        }
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
