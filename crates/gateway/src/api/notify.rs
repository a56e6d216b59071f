//! Notifications from a back end: `POST /api/notifications` stores one per user and
//! delivers it live; `GET /api/users/{id}/notifications` lists a user's.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use wsgate_protocol::client::{valid_notification_id, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use wsgate_protocol::names;
use wsgate_protocol::server::{Notification, NOTIFICATION_KINDS};

use super::{
    check_key, invalid, json_object, method_is, only_fields, read_body, unavailable, Refusal,
};
use crate::clock::now_ts;
use crate::node::Node;
use crate::query::Query;
use crate::response::{json_response, Body};

/// Most users one `POST /api/notifications` may address.
pub const MAX_NOTIFY_USERS: usize = 1000;
/// Longest notification title, in bytes.
const MAX_TITLE: usize = 256;
/// Longest `action_url`, in bytes.
const MAX_URL: usize = 2048;

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
    node.inbox
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
    let query = Query::of(req.uri());
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
    let page = node
        .inbox
        .notifications(
            user,
            limit,
            before,
            unread_only,
            node.config.notifications_ttl,
            node.config.max_out_frame() - 1024,
        )
        .await
        .map_err(|e| unavailable(node, e))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"items": page.items, "unread": page.unread, "more": page.more}),
    ))
}
