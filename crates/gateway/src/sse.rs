//! Server-Sent Events, `GET /events?rooms=a,b`: one-way consumers of rooms.
//!
//! An SSE stream is a session without a reader: it is registered with the hub like a
//! WebSocket session (same queue bound, same slow-consumer rule, same connection
//! limit) and its writer turns frames into named events. Every event's `id:` is a
//! cursor over all the stream's rooms (`a=ID;b=ID`), so a reconnect with
//! `Last-Event-ID` resumes every room exactly; where history no longer reaches, a
//! `reset` event for that room comes first.

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
use wsgate_protocol::server::{frame_type, stored_room_id};
use wsgate_protocol::MessageId;

use crate::auth::{AuthError, Identity};
use crate::handle::{Control, Outbound, Queue, SessionHandle};
use crate::http::{error_response, Body};
use crate::node::{Node, Slot};

/// A keep-alive comment is sent this often.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Events buffered towards hyper; beyond it the session queue fills (slow consumer).
const BODY_BUFFER: usize = 32;
/// The `retry:` the stream opens with, in ms.
const RETRY_MS: u64 = 3000;

/// The event names an SSE stream carries; other frames are not sent.
const EVENTS: [&str; 5] = ["message", "publish", "broadcast", "notification", "reset"];

/// Parses a cursor `a=ID;b=ID` (unknown or malformed parts are ignored).
pub fn parse_cursor(s: &str) -> Vec<(String, MessageId)> {
    s.split(';')
        .filter_map(|part| {
            let (room, id) = part.trim().split_once('=')?;
            let id = id.parse().ok()?;
            names::valid_room(room).then(|| (room.to_owned(), id))
        })
        .collect()
}

/// Formats a cursor over `rooms`.
pub fn format_cursor(cursor: &[(String, MessageId)]) -> String {
    let mut out = String::new();
    for (i, (room, id)) in cursor.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(room);
        out.push('=');
        out.push_str(&id.to_string());
    }
    out
}

/// `GET /events`.
pub async fn events<B>(node: &Arc<Node>, req: Request<B>) -> Response<Body> {
    if req.method() != Method::GET {
        return crate::http::method_not_allowed("GET", "use GET");
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
    let query = crate::http::Query::of(req.uri());
    let param = |k: &str| query.get(k);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = match node.auth.authenticate(query.pairs(), authorization) {
        Ok(i) => i,
        Err(AuthError::BadParameter(m)) => {
            return error_response(StatusCode::BAD_REQUEST, "invalid_field", m)
        }
        Err(e) => return error_response(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string()),
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
    if let Some(r) = rooms
        .iter()
        .find(|r| !identity.may_enter(r, &node.config.private_room_prefix))
    {
        return error_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            &format!("the private room {r} is not granted to you"),
        );
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| param("last_event_id"))
        .map(parse_cursor)
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
    let client = req
        .extensions()
        .get::<std::net::SocketAddr>()
        .map(|peer| crate::proxy::client_ip(peer.ip(), headers, &node.config.trusted_proxies));
    let slot = match node.reserve_slot(client) {
        Ok(slot) => slot,
        Err(refused) => return refused.response(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
    let task_node = node.clone();
    node.tracker
        .spawn(run(task_node, identity, rooms, resume, tx, slot));
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
    rooms: Vec<String>,
    resume: Vec<(String, MessageId)>,
    body: mpsc::Sender<Bytes>,
    slot: Slot,
) {
    node.metrics.connections_total.inc();
    node.metrics.connections_active.inc();
    let queue = Queue::new(node.config.send_queue);
    let key = uuid::Uuid::new_v4().to_string();
    let control = Arc::new(Control::new(node.root.child_token()));
    let handle = SessionHandle {
        id: node.next_session_id(),
        key: Arc::from(key.as_str()),
        queue: queue.clone(),
        control: control.clone(),
    };
    let user = identity.user.user_id.clone();
    if node.hub.register(&user, &handle) {
        let _ = node.subs.ensure(&Channel::User(user.clone())).await;
    }
    let mut cursor: Vec<(String, MessageId)> = Vec::with_capacity(rooms.len());
    let mut ok = body
        .send(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
        .await
        .is_ok();
    for room in &rooms {
        if !ok {
            break;
        }
        node.hub.join(room, &handle, node.config.send_queue);
        let since = resume.iter().find(|(r, _)| r == room).map(|(_, id)| *id);
        let joined = async {
            node.subs.ensure(&Channel::Room(room.clone())).await?;
            match since {
                Some(since) => {
                    let replay = node.broker.replay(room, since).await?;
                    let mut head = Vec::new();
                    let start = if replay.complete {
                        since
                    } else {
                        head.push(Utf8Bytes::from(format!(
                            r#"{{"type":"reset","room":"{room}"}}"#
                        )));
                        MessageId::ZERO
                    };
                    let seen = replay
                        .entries
                        .last()
                        .map(|(id, _)| *id)
                        .unwrap_or(start)
                        .max(start);
                    head.extend(
                        replay
                            .entries
                            .into_iter()
                            .filter_map(|(_, f)| Utf8Bytes::try_from(f).ok()),
                    );
                    Ok::<_, wsgate_broker::Error>((head, Some(seen), start))
                }
                None => {
                    let state = node.broker.room_state(room).await?;
                    Ok((Vec::new(), None, state.last_id.unwrap_or(MessageId::ZERO)))
                }
            }
        };
        match joined.await {
            Ok((head, seen, start)) => {
                cursor.push((room.clone(), start));
                if node.hub.finish_join(room, handle.id, head, seen).is_err() {
                    ok = false;
                }
            }
            Err(e) => {
                tracing::warn!(%room, error = %e, "sse subscription failed; closing the stream");
                ok = false;
            }
        }
    }
    if ok {
        // An event with an id and no data sets the browser's Last-Event-ID without
        // firing anything: a reconnect before any event still resumes every room.
        ok = body
            .send(Bytes::from(format!("id: {}\n\n", format_cursor(&cursor))))
            .await
            .is_ok();
    }
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut batch = Vec::new();
    while ok {
        tokio::select! {
            _ = control.token.cancelled() => break,
            _ = body.closed() => break,
            _ = keepalive.tick() => {
                ok = send(&body, &control, Bytes::from_static(b": keepalive\n\n")).await;
            }
            more = queue.take(&mut batch) => {
                if !more { break }
                'items: for item in batch.drain(..) {
                    let frames = match item {
                        Outbound::Frame(f) => vec![f],
                        Outbound::Batch(fs) => fs,
                        // Only the echo endpoint queues binary frames.
                        Outbound::Binary(_) => continue,
                    };
                    for f in frames {
                        if let Some(event) = to_event(&f, &mut cursor) {
                            if !send(&body, &control, event).await {
                                ok = false;
                                break 'items;
                            }
                        }
                    }
                }
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
    if control.code() == Some(wsgate_protocol::CloseCode::TryAgainLater.code()) {
        node.metrics.slow_consumer_closes.inc();
    }
    queue.close();
    node.metrics.connections_active.dec();
    drop(slot);
}

/// Sends one chunk unless the session ends first.
async fn send(body: &mpsc::Sender<Bytes>, control: &Control, chunk: Bytes) -> bool {
    tokio::select! {
        r = body.send(chunk) => r.is_ok(),
        _ = control.token.cancelled() => false,
    }
}

/// The SSE event for a frame, advancing the cursor; `None` for frames SSE does not carry.
fn to_event(frame: &Utf8Bytes, cursor: &mut [(String, MessageId)]) -> Option<Bytes> {
    let text = frame.as_str();
    let kind = frame_type(text)?;
    if !EVENTS.contains(&kind) {
        return None;
    }
    if let Some((room, id)) = stored_room_id(text) {
        if let Some(entry) = cursor.iter_mut().find(|(r, _)| r == room) {
            entry.1 = id;
        }
    }
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str("event: ");
    out.push_str(kind);
    out.push_str("\nid: ");
    out.push_str(&format_cursor(cursor));
    out.push_str("\ndata: ");
    out.push_str(text);
    out.push_str("\n\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_ignore_garbage() {
        let c = parse_cursor("a=1-0;b.c=1700000000000-12;bad;x=nope;=1-0; d = 2-3");
        assert_eq!(
            c,
            vec![
                ("a".into(), MessageId::new(1, 0)),
                ("b.c".into(), MessageId::new(1_700_000_000_000, 12)),
            ]
        );
        assert_eq!(format_cursor(&c), "a=1-0;b.c=1700000000000-12");
    }

    #[test]
    fn events_advance_the_cursor() {
        let mut cursor = vec![
            ("a".to_owned(), MessageId::ZERO),
            ("b".to_owned(), MessageId::new(5, 0)),
        ];
        let f = Utf8Bytes::from(r#"{"type":"message","id":"9-1","room":"a","content":"x"}"#);
        let e = to_event(&f, &mut cursor).unwrap();
        assert_eq!(
            std::str::from_utf8(&e).unwrap(),
            "event: message\nid: a=9-1;b=5-0\ndata: {\"type\":\"message\",\"id\":\"9-1\",\"room\":\"a\",\"content\":\"x\"}\n\n"
        );
        let typing = Utf8Bytes::from(r#"{"type":"typing","room":"a","users":[]}"#);
        assert!(to_event(&typing, &mut cursor).is_none());
    }
}
