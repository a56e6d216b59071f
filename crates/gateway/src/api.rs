//! The back-end HTTP API: `POST /api/publish`, `POST /api/notifications`,
//! `GET /api/users/{id}/notifications`. Every answer is JSON; every refusal is
//! `{"error":{"code","message"}}` with the contract's status, and nothing is half done:
//! a request is validated whole before the one broker call that carries it out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Map, Value};
use wsgate_broker::Channel;
use wsgate_protocol::client::{valid_notification_id, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use wsgate_protocol::names;
use wsgate_protocol::server::{Notification, ServerFrame, StoredEntry, NOTIFICATION_KINDS};

use crate::http::{error_response, json_response, Body};
use crate::node::Node;
use crate::session::now_ts;

/// Most users one `POST /api/notifications` may address.
pub const MAX_NOTIFY_USERS: usize = 1000;
/// Longest notification title, in bytes.
const MAX_TITLE: usize = 256;
/// Longest `action_url`, in bytes.
const MAX_URL: usize = 2048;

type Refusal = Box<Response<Body>>;

fn refuse(status: StatusCode, code: &str, message: &str) -> Refusal {
    Box::new(error_response(status, code, message))
}

fn invalid(message: &str) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_field", message)
}

/// Compares without an early exit, so the time taken does not tell how much of a
/// guessed key was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API key rule: `Authorization: Bearer KEY` or `X-Api-Key: KEY`; 401 when wrong
/// or missing; 403 when no key is configured, unless `--insecure-api`.
fn check_key(node: &Node, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(key) = node.config.api_key.as_deref() else {
        if node.config.insecure_api {
            return Ok(());
        }
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the back-end API is disabled: no --api-key is configured",
        ));
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let given = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    match given {
        Some(g) if same_secret(g.as_bytes(), key.as_bytes()) => Ok(()),
        _ => {
            let mut res = error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required",
            );
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(Box::new(res))
        }
    }
}

/// Reads a body of at most `--max-message-bytes`.
async fn read_body<B>(node: &Node, req: Request<B>) -> Result<Bytes, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let limit = node.config.max_message_bytes;
    if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large(limit));
    }
    // The body must arrive within the handshake deadline too: a client that trickles
    // it would otherwise hold the connection (and a task) for as long as it likes.
    let deadline = Duration::from_millis(node.config.handshake_timeout_ms);
    let Ok(collected) =
        tokio::time::timeout(deadline, Limited::new(req.into_body(), limit).collect()).await
    else {
        return Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the body did not arrive within the handshake deadline",
        ));
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(limit))
        }
        Err(_) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "the body could not be read",
        )),
    }
}

/// Parses a body that must be one JSON object.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_json",
            &format!("not valid JSON: {e}"),
        )),
    }
}

fn too_large(limit: usize) -> Refusal {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("the body is larger than {limit} bytes"),
    )
}

fn only_fields(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), Refusal> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(&format!("unknown field {:?}", truncate(k)))),
        None => Ok(()),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn unavailable(node: &Node, e: wsgate_broker::Error) -> Refusal {
    tracing::warn!(error = %e, "broker call failed (HTTP API)");
    node.metrics.broker_errors.inc();
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the broker is unreachable: nothing was stored or sent",
    )
}

fn method_is(req_method: &Method, want: Method) -> Result<(), Refusal> {
    if *req_method == want {
        return Ok(());
    }
    let allow = if want == Method::POST { "POST" } else { "GET" };
    Err(Box::new(crate::http::method_not_allowed(
        allow,
        &format!("use {want}"),
    )))
}

/// The one target of a `POST /api/publish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishTarget {
    /// A room: stored in its history and sent to its members.
    Room(String),
    /// Every session of one user; not stored.
    User(String),
    /// Every connection of the cluster; not stored.
    Broadcast,
}

/// A validated `POST /api/publish` body.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    /// Where it goes.
    pub target: PublishTarget,
    /// The `data`: any JSON value.
    pub data: Value,
}

/// Parses and validates a `POST /api/publish` body (already read, within the size
/// limit): exactly one of `room`, `user_id`, `broadcast:true`, with `data`.
///
/// # Errors
///
/// The refusal the API answers with: 400 `bad_json` or `invalid_field`.
pub fn parse_publish(bytes: &[u8]) -> Result<PublishRequest, Box<Response<Body>>> {
    let mut body = json_object(bytes)?;
    only_fields(&body, &["room", "user_id", "broadcast", "data"])?;
    let Some(data) = body.remove("data") else {
        return Err(invalid("data is missing"));
    };
    let room = match body.get("room") {
        None => None,
        Some(Value::String(r)) if names::valid_room(r) => Some(r.as_str()),
        Some(_) => return Err(invalid("room must be 1-128 characters of [A-Za-z0-9_.:-]")),
    };
    let user = match body.get("user_id") {
        None => None,
        Some(Value::String(u)) if names::valid_user_id(u) => Some(u.as_str()),
        Some(_) => return Err(invalid("user_id must be a user id of 1-128 bytes")),
    };
    let broadcast = match body.get("broadcast") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(invalid("broadcast must be true")),
    };
    let target = match (room, user, broadcast) {
        (Some(room), None, false) => PublishTarget::Room(room.to_owned()),
        (None, Some(user), false) => PublishTarget::User(user.to_owned()),
        (None, None, true) => PublishTarget::Broadcast,
        _ => {
            return Err(invalid(
                "give exactly one target: room, user_id or broadcast:true",
            ))
        }
    };
    Ok(PublishRequest { target, data })
}

/// `POST /api/publish`: exactly one of `room`, `user_id`, `broadcast:true`, with `data`.
pub async fn publish<B>(node: &Arc<Node>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    publish_inner(node, req).await.unwrap_or_else(|r| *r)
}

async fn publish_inner<B>(node: &Arc<Node>, req: Request<B>) -> Result<Response<Body>, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    method_is(req.method(), Method::POST)?;
    check_key(node, req.headers())?;
    let bytes = read_body(node, req).await?;
    let PublishRequest { target, data } = parse_publish(&bytes)?;
    let ts = now_ts();
    match target {
        PublishTarget::Room(room) => {
            let entry = StoredEntry::publish(&room, &data, &ts);
            let id = node
                .broker
                .publish_entry(&room, &entry)
                .await
                .map_err(|e| unavailable(node, e))?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"id": id.to_string()}),
            ))
        }
        PublishTarget::User(user) => {
            let frame = ServerFrame::Publish {
                id: None,
                room: None,
                user_id: Some(user.clone()),
                data,
                ts,
            };
            node.broker
                .publish(&Channel::User(user), frame.encode().into())
                .await
                .map_err(|e| unavailable(node, e))?;
            Ok(json_response(StatusCode::OK, &json!({})))
        }
        PublishTarget::Broadcast => {
            let frame = ServerFrame::Broadcast { data, ts };
            node.broker
                .publish(&Channel::Broadcast, frame.encode().into())
                .await
                .map_err(|e| unavailable(node, e))?;
            Ok(json_response(StatusCode::OK, &json!({})))
        }
    }
}

/// A validated `POST /api/notifications` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyRequest {
    /// The users, without duplicates, in the order given (1 to 1,000).
    pub users: Vec<String>,
    /// `info` (the default), `success`, `warning` or `error`.
    pub kind: String,
    /// 1-256 bytes.
    pub title: String,
    /// The text.
    pub body: String,
    /// 1-2048 bytes, when given.
    pub action_url: Option<String>,
    /// Any JSON but `null`, when given.
    pub data: Option<Value>,
}

/// Parses and validates a `POST /api/notifications` body (already read, within the
/// size limit).
///
/// # Errors
///
/// The refusal the API answers with: 400 `bad_json` or `invalid_field`.
pub fn parse_notify(bytes: &[u8]) -> Result<NotifyRequest, Box<Response<Body>>> {
    let body = json_object(bytes)?;
    only_fields(
        &body,
        &[
            "user_id",
            "user_ids",
            "kind",
            "title",
            "body",
            "action_url",
            "data",
        ],
    )?;
    let users: Vec<String> = match (body.get("user_id"), body.get("user_ids")) {
        (Some(Value::String(u)), None) if names::valid_user_id(u) => vec![u.clone()],
        (Some(_), None) => return Err(invalid("user_id must be a user id of 1-128 bytes")),
        (None, Some(Value::Array(list))) => {
            if list.is_empty() || list.len() > MAX_NOTIFY_USERS {
                return Err(invalid("user_ids must list 1 to 1000 user ids"));
            }
            let mut users: Vec<String> = Vec::with_capacity(list.len());
            for u in list {
                match u {
                    Value::String(u) if names::valid_user_id(u) => {
                        if !users.contains(u) {
                            users.push(u.clone());
                        }
                    }
                    _ => return Err(invalid("user_ids must be user ids of 1-128 bytes")),
                }
            }
            users
        }
        (None, Some(_)) => return Err(invalid("user_ids must be an array")),
        _ => return Err(invalid("give exactly one of user_id and user_ids")),
    };
    let kind = match body.get("kind") {
        None => "info".to_owned(),
        Some(Value::String(k)) if NOTIFICATION_KINDS.contains(&k.as_str()) => k.clone(),
        Some(_) => return Err(invalid("kind must be one of info, success, warning, error")),
    };
    let title = match body.get("title") {
        Some(Value::String(t)) if !t.is_empty() && t.len() <= MAX_TITLE => t.clone(),
        _ => return Err(invalid("title must be a string of 1-256 bytes")),
    };
    let text = match body.get("body") {
        Some(Value::String(b)) => b.clone(),
        _ => return Err(invalid("body must be a string")),
    };
    let action_url = match body.get("action_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if !u.is_empty() && u.len() <= MAX_URL => Some(u.clone()),
        Some(_) => return Err(invalid("action_url must be a string of 1-2048 bytes")),
    };
    let data = body.get("data").filter(|d| !d.is_null()).cloned();
    Ok(NotifyRequest {
        users,
        kind,
        title,
        body: text,
        action_url,
        data,
    })
}

/// `POST /api/notifications`: one notification for `user_id`, or one per user of
/// `user_ids` (at most 1,000), stored and delivered live in one broker call.
pub async fn notify<B>(node: &Arc<Node>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    notify_inner(node, req).await.unwrap_or_else(|r| *r)
}

async fn notify_inner<B>(node: &Arc<Node>, req: Request<B>) -> Result<Response<Body>, Refusal>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    method_is(req.method(), Method::POST)?;
    check_key(node, req.headers())?;
    let bytes = read_body(node, req).await?;
    let NotifyRequest {
        users,
        kind,
        title,
        body: text,
        action_url,
        data,
    } = parse_notify(&bytes)?;
    let ts = now_ts();
    let items: Vec<Notification> = users
        .into_iter()
        .map(|user_id| Notification {
            id: uuid::Uuid::now_v7().to_string(),
            user_id,
            kind: kind.clone(),
            title: title.clone(),
            body: text.clone(),
            action_url: action_url.clone(),
            data: data.clone(),
            ts: ts.clone(),
            read: false,
        })
        .collect();
    node.broker
        .notify(
            &items,
            node.config.notifications_len,
            node.config.notifications_ttl,
        )
        .await
        .map_err(|e| unavailable(node, e))?;
    let ids: Vec<&str> = items.iter().map(|n| n.id.as_str()).collect();
    Ok(json_response(StatusCode::OK, &json!({ "ids": ids })))
}

/// `GET /api/users/{id}/notifications?limit=&before=&unread_only=`.
pub async fn list_notifications<B>(
    node: &Arc<Node>,
    req: Request<B>,
    user: &str,
) -> Response<Body> {
    list_inner(node, req, user).await.unwrap_or_else(|r| *r)
}

async fn list_inner<B>(
    node: &Arc<Node>,
    req: Request<B>,
    user: &str,
) -> Result<Response<Body>, Refusal> {
    method_is(req.method(), Method::GET)?;
    check_key(node, req.headers())?;
    if !names::valid_user_id(user) {
        return Err(invalid("the user id must be 1-128 bytes"));
    }
    let query = crate::http::Query::of(req.uri());
    let param = |k: &str| query.get(k);
    let limit = match param("limit") {
        None => DEFAULT_HISTORY_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(l) if (1..=MAX_HISTORY_LIMIT).contains(&l) => l,
            _ => return Err(invalid("limit must be an integer from 1 to 100")),
        },
    };
    let before = match param("before") {
        None => None,
        Some(b) if valid_notification_id(b) => Some(b),
        Some(_) => return Err(invalid("before must be a notification id")),
    };
    let unread_only = match param("unread_only") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(invalid("unread_only must be true or false")),
    };
    let (items, unread) = node
        .broker
        .notifications(
            user,
            limit,
            before,
            unread_only,
            node.config.notifications_ttl,
        )
        .await
        .map_err(|e| unavailable(node, e))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": items, "unread": unread}),
    ))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
