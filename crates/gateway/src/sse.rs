//! Server-Sent Events, `GET /events?rooms=a,b`: one-way consumers of rooms.
//!
//! An SSE stream is a session without a reader: it is registered with the hub like a
//! WebSocket session (same queue bound, same slow-consumer rule, same connection
//! limit, the same join with catch-up) and its body task turns frames into named
//! events ([`wsgate_protocol::sse`]). Every event's `id:` is a cursor over all the
//! stream's rooms (`a=ID;b=ID`), so a reconnect with `Last-Event-ID` resumes every room
//! exactly; where history no longer reaches, a `reset` event for that room comes first.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_broker::Channel;
use wsgate_protocol::names;
use wsgate_protocol::server::ServerFrame;
use wsgate_protocol::sse::{self, Cursor};
use wsgate_protocol::MessageId;

use crate::auth::Identity;
use crate::handle::Control;
use crate::join::RoomJoin;
use crate::lifecycle::Lifetime;
use crate::node::Node;
use crate::query::Query;
use crate::queue::Outbound;
use crate::response::{error_response, method_not_allowed, Body};
use crate::slot::Slot;

/// A keep-alive comment is sent this often.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Events buffered towards hyper; beyond it the session queue fills (slow consumer).
/// Small: each may be a large frame, and what a stream holds must stay bounded.
const BODY_BUFFER: usize = 4;
/// The `retry:` the stream opens with, in ms.
const RETRY_MS: u64 = 3000;

/// `GET /events`.
pub async fn events<B>(node: &Arc<Node>, req: Request<B>) -> Response<Body> {
    if req.method() != Method::GET {
        return method_not_allowed("GET", "use GET");
    }
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !node.config.origin_allowed(origin) {
        return error_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this origin is not allowed",
        );
    }
    let query = Query::of(req.uri());
    let param = |k: &str| query.get(k);
    // `None` when a connect hook without token keys names the user, below.
    let base = match crate::identify::token(node, &query, headers).await {
        Ok(base) => base,
        Err(res) => return res,
    };
    let mut rooms: Vec<String> = Vec::new();
    for r in param("rooms")
        .unwrap_or("")
        .split(',')
        .filter(|r| !r.is_empty())
    {
        if !names::valid_room(r) {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "rooms must be names of 1-128 characters of [A-Za-z0-9_.:-]",
            );
        }
        if !rooms.iter().any(|x| x == r) {
            rooms.push(r.to_owned());
        }
    }
    if rooms.is_empty() || rooms.len() > node.config.max_rooms_per_connection {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            &format!(
                "rooms must list 1 to {} rooms",
                node.config.max_rooms_per_connection
            ),
        );
    }
    let not_granted = |identity: &Identity| {
        let r = rooms
            .iter()
            .find(|r| !identity.may_enter(r, node.config.namespaces.is_private(r)))?;
        Some(error_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("the private room {r} is not granted to you"),
        ))
    };
    if let Some(refused) = base.as_ref().and_then(not_granted) {
        return refused;
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| param("last_event_id"))
        .map(Cursor::parse)
        .unwrap_or_default();
    let unavailable = |msg: &str| {
        let mut res = error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        res
    };
    if node.is_draining() {
        return unavailable("this node is shutting down");
    }
    if let Some(r) = rooms.iter().find(|r| !node.room_allowed(r)) {
        return unavailable(&format!(
            "this node holds its limit of {} rooms; cannot follow {r}",
            node.config.max_rooms
        ));
    }
    let client = req
        .extensions()
        .get::<std::net::SocketAddr>()
        .map(|peer| crate::proxy::client_ip(peer.ip(), headers, &node.config.trusted_proxies));
    if let Err(retry) = node.admission.admit(std::time::Instant::now()) {
        node.metrics.admission_refusals.inc();
        return crate::admission::refusal(retry);
    }
    let slot = match node.capacity.reserve(client) {
        Ok(slot) => slot,
        Err(refused) => return refused.response(),
    };
    // The hooks once the stream is admitted: the connect hook may name the user and
    // grant rooms (checked again), the join hook decides on each room.
    let key = uuid::Uuid::new_v4().to_string();
    let presented = crate::identify::Presented {
        headers,
        query: &query,
        client,
        session_id: &key,
        transport: crate::hooks::calls::Transport::Sse,
    };
    let identity = match crate::identify::connect(node, presented, base).await {
        Ok(identity) => identity,
        Err(res) => return res,
    };
    if let Some(refused) = not_granted(&identity) {
        return refused;
    }
    if let Err(res) = crate::identify::stream_rooms(node, &identity, &key, &rooms).await {
        return res;
    }
    if let Some(permit) = req.extensions().get::<crate::slot::HttpPermit>() {
        // A session now, counted by its slot.
        permit.release();
    }
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
    let task_node = node.clone();
    node.tracker
        .spawn(run(task_node, identity, key, rooms, resume, tx, slot));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut res = Response::new(StreamBody::new(stream).boxed());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    res
}

async fn run(
    node: Arc<Node>,
    identity: Identity,
    key: String,
    rooms: Vec<String>,
    resume: Cursor,
    body: mpsc::Sender<Bytes>,
    slot: Slot,
) {
    let lifetime = Lifetime::open(&node, slot, &key, None);
    let handle = lifetime.handle.clone();
    let user = identity.user.user_id.clone();
    if node.hub.register(&user, &handle) {
        let _ = node.subs.ensure(&Channel::User(user.clone())).await;
    }
    let mut cursor = Cursor::new();
    let mut ok = body.send(Bytes::from(sse::retry(RETRY_MS))).await.is_ok();
    for room in &rooms {
        if !ok {
            break;
        }
        match join(&node, &handle, room, resume.get(room), resume.epoch(room)).await {
            Ok((start, epoch)) => {
                cursor.set_with_epoch(room, start, &epoch);
            }
            Err(e) => {
                tracing::warn!(%room, error = %e, "sse subscription failed; closing the stream");
                ok = false;
            }
        }
    }
    if ok {
        ok = body.send(Bytes::from(sse::id_only(&cursor))).await.is_ok();
    }
    let control = &handle.control;
    let write_timeout = Duration::from_millis(node.config.write_timeout_ms);
    let expiry = sleep_until_expiry(identity.expires_at);
    tokio::pin!(expiry);
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut batch = Vec::new();
    while ok {
        tokio::select! {
            _ = control.token.cancelled() => break,
            _ = body.closed() => break,
            _ = keepalive.tick() => {
                ok = send(&body, control, Bytes::from_static(sse::KEEPALIVE.as_bytes()), write_timeout).await;
            }
            _ = &mut expiry => {
                // As a WebSocket session is closed with 1008: the stream ends, and says
                // why, so the client fetches a fresh token before it reconnects.
                let frame = ServerFrame::Expired {}.encode();
                if let Some(event) = sse::event(&frame, &mut cursor) {
                    let _ = send(&body, control, Bytes::from(event), write_timeout).await;
                }
                control.close(wsgate_protocol::CloseCode::Policy);
                break;
            }
            more = handle.queue.take(&mut batch) => {
                if !more { break }
                'items: for item in batch.drain(..) {
                    let frames = match item {
                        Outbound::Frame(f) | Outbound::Stored(f, _) => vec![f],
                        Outbound::Batch(fs) => fs,
                        // Only the echo endpoint queues binary frames.
                        Outbound::Binary(_) => continue,
                    };
                    for f in frames {
                        if let Some(event) = sse::event(f.as_str(), &mut cursor) {
                            if !send(&body, control, Bytes::from(event), write_timeout).await {
                                ok = false;
                                break 'items;
                            }
                        }
                    }
                }
                handle.queue.written();
            }
        }
    }
    for room in &rooms {
        if node.hub.leave(room, handle.id) {
            node.release_later(Channel::Room(room.clone()));
        }
    }
    if node.hub.unregister(&user, handle.id) {
        node.release_later(Channel::User(user));
    }
    lifetime.close(None);
}

/// Joins one room of the stream, resuming after `since` when the stream's cursor
/// named the room. Returns where the room's part of the cursor starts, and its epoch:
/// `since` when the replay is complete and in the cursor's epoch; `0-0` after a
/// `reset`, when it is not (then the replay is what history holds, from its start).
async fn join(
    node: &Arc<Node>,
    handle: &crate::handle::SessionHandle,
    room: &str,
    since: Option<MessageId>,
    epoch: Option<&str>,
) -> Result<(MessageId, String), wsgate_broker::Error> {
    let join = RoomJoin::start(node, handle, room).await?;
    let mut catch_up = join.catch_up(since).await?;
    let (head, start) = match since {
        Some(since) => {
            let same_epoch = epoch.is_none_or(|e| e == catch_up.state.epoch);
            if !same_epoch {
                // Ids of another epoch say nothing about this one: start over.
                catch_up = join.catch_up(Some(MessageId::ZERO)).await?;
            }
            let mut head = Vec::with_capacity(catch_up.frames.len() + 1);
            let start = if catch_up.complete && same_epoch {
                since
            } else {
                let reset = ServerFrame::Reset {
                    room: room.to_owned(),
                };
                head.push(Utf8Bytes::from(reset.encode()));
                MessageId::ZERO
            };
            head.append(&mut catch_up.frames);
            (head, start)
        }
        None => (
            Vec::new(),
            catch_up.state.last_id.unwrap_or(MessageId::ZERO),
        ),
    };
    // A full queue closes the stream as a slow consumer; the loop notices.
    let _ = join.finish(head, catch_up.seen, &catch_up.state);
    Ok((start, catch_up.state.epoch))
}

/// Sends one chunk unless the session ends first; a chunk the client does not take
/// within `timeout` ends the stream as a slow consumer.
async fn send(
    body: &mpsc::Sender<Bytes>,
    control: &Control,
    chunk: Bytes,
    timeout: Duration,
) -> bool {
    tokio::select! {
        r = body.send(chunk) => r.is_ok(),
        _ = control.token.cancelled() => false,
        _ = tokio::time::sleep(timeout) => {
            control.close(wsgate_protocol::CloseCode::TryAgainLater);
            false
        }
    }
}

/// Resolves when the stream's token expires (never without one).
async fn sleep_until_expiry(at: Option<std::time::SystemTime>) {
    match at {
        Some(at) => {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs(365 * 24 * 3600));
            tokio::time::sleep(left).await
        }
        None => std::future::pending().await,
    }
}
