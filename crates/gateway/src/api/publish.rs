//! `POST /api/publish`: a back end publishes into a room (stored), to a user, or to
//! every connection of the cluster.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use wsgate_broker::Channel;
use wsgate_protocol::names;
use wsgate_protocol::server::{ServerFrame, StoredEntry};

use super::{
    check_key, invalid, json_object, method_is, only_fields, read_body, unavailable, Refusal,
};
use crate::clock::now_ts;
use crate::node::Node;
use crate::response::{json_response, Body};

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
    /// `idempotency_key`: a retry with the same key within `--idempotency-ttl` is
    /// answered the first publish's answer and publishes nothing.
    pub idempotency_key: Option<String>,
}

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Parses and validates a `POST /api/publish` body (already read, within the size
/// limit): exactly one of `room`, `user_id`, `broadcast:true`, with `data`.
///
/// # Errors
///
/// The refusal the API answers with: 400 `bad_json` or `invalid_field`.
pub fn parse_publish(bytes: &[u8]) -> Result<PublishRequest, Box<Response<Body>>> {
    let mut body = json_object(bytes)?;
    only_fields(
        &body,
        &["room", "user_id", "broadcast", "data", "idempotency_key"],
    )?;
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
    let idempotency_key = match body.get("idempotency_key") {
        None => None,
        Some(Value::String(k))
            if !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY
                && !k.chars().any(char::is_control) =>
        {
            Some(k.clone())
        }
        Some(_) => {
            return Err(invalid(
                "idempotency_key must be a string of 1-256 bytes without control characters",
            ))
        }
    };
    Ok(PublishRequest {
        target,
        data,
        idempotency_key,
    })
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
    let PublishRequest {
        target,
        data,
        idempotency_key: key,
    } = parse_publish(&bytes)?;
    let ts = now_ts();
    let ttl = node.config.idempotency_ttl;
    // A retry is answered what the first publish was, with `"replayed": true`.
    let answer = |mut body: Value, fresh: bool| {
        if !fresh {
            body["replayed"] = Value::Bool(true);
        }
        json_response(StatusCode::OK, &body)
    };
    // A key counts for its target: the same key sent to another room, user or to
    // everyone is another publish, never answered with a different target's answer.
    let key = key.map(|k| match &target {
        PublishTarget::Room(r) => format!("room:{r}:{k}"),
        PublishTarget::User(u) => format!("user:{u}:{k}"),
        PublishTarget::Broadcast => format!("broadcast:{k}"),
    });
    let key = key.as_deref();
    let once = |channel: Channel, frame: String| async move {
        match key {
            Some(k) => {
                node.broker
                    .publish_once(&channel, frame.into(), k, ttl)
                    .await
            }
            None => node
                .broker
                .publish(&channel, frame.into())
                .await
                .map(|()| true),
        }
    };
    match target {
        PublishTarget::Room(room) => {
            let entry = StoredEntry::publish(&room, &data, &ts);
            let (id, fresh) = match key {
                Some(k) => node.broker.publish_entry_once(&room, &entry, k, ttl).await,
                None => node
                    .broker
                    .publish_entry(&room, &entry)
                    .await
                    .map(|id| (id, true)),
            }
            .map_err(|e| unavailable(node, e))?;
            Ok(answer(json!({"id": id.to_string()}), fresh))
        }
        PublishTarget::User(user) => {
            let frame = ServerFrame::Publish {
                id: None,
                room: None,
                user_id: Some(user.clone()),
                data,
                ts,
            };
            let fresh = once(Channel::User(user), frame.encode())
                .await
                .map_err(|e| unavailable(node, e))?;
            Ok(answer(json!({}), fresh))
        }
        PublishTarget::Broadcast => {
            let frame = ServerFrame::Broadcast { data, ts };
            let fresh = once(Channel::Broadcast, frame.encode())
                .await
                .map_err(|e| unavailable(node, e))?;
            Ok(answer(json!({}), fresh))
        }
    }
}
