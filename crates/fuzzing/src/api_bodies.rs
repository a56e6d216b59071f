//! Bodies of `POST /api/publish` and `POST /api/notifications` → the gateway's own
//! parsers (`wsgate_gateway::api::parse_publish`, `parse_notify`), any bytes (HTTP
//! bodies need not be UTF-8).
//!
//! Invariants: no panic; a refusal is 400 with the contract's JSON error body
//! (`bad_json` exactly when the body is not one JSON object, else `invalid_field`) and
//! a short message; an accepted request obeys every rule of docs/http-api.md, and the
//! frames the handler then builds from it encode to JSON that carries it unchanged.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use wsgate_gateway::api::{
    parse_notify, parse_publish, NotifyRequest, PublishRequest, PublishTarget, MAX_NOTIFY_USERS,
};
use wsgate_gateway::response::Body;
use wsgate_protocol::names;
use wsgate_protocol::server::{
    frame_type, stored_room_id, Notification, ServerFrame, StoredEntry, NOTIFICATION_KINDS,
};
use wsgate_protocol::MessageId;

const TS: &str = "2026-01-01T00:00:00.000Z";

/// Checks one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    let json: Option<Map<String, Value>> = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    };
    match parse_publish(data) {
        Ok(req) => publish_ok(&req, json.as_ref().expect("accepted a non-object")),
        Err(res) => refusal(*res, json.is_some()),
    }
    match parse_notify(data) {
        Ok(req) => notify_ok(&req, json.as_ref().expect("accepted a non-object")),
        Err(res) => refusal(*res, json.is_some()),
    }
}

fn publish_ok(req: &PublishRequest, obj: &Map<String, Value>) {
    assert!(obj.keys().all(
        |k| ["room", "user_id", "broadcast", "data", "idempotency_key"].contains(&k.as_str())
    ));
    match &req.idempotency_key {
        Some(k) => {
            assert_eq!(obj.get("idempotency_key"), Some(&Value::String(k.clone())));
            assert!(!k.is_empty() && k.len() <= 256 && !k.chars().any(char::is_control));
        }
        None => assert!(obj.get("idempotency_key").is_none()),
    }
    assert_eq!(obj.get("data"), Some(&req.data));
    let targets = [
        obj.get("room").is_some(),
        obj.get("user_id").is_some(),
        obj.get("broadcast") == Some(&Value::Bool(true)),
    ];
    assert_eq!(targets.iter().filter(|t| **t).count(), 1, "{obj:?}");
    let id = MessageId::new(1_767_225_660_000, 7);
    match &req.target {
        PublishTarget::Room(room) => {
            assert!(names::valid_room(room), "{room:?}");
            assert_eq!(obj.get("room"), Some(&Value::String(room.clone())));
            // What the handler stores and every member gets.
            let frame = StoredEntry::publish(room, &req.data, TS).frame(id);
            let v: Value = serde_json::from_str(&frame).expect("a publish frame that is not JSON");
            assert_eq!(
                v,
                json!({"type":"publish","id":id.to_string(),"room":room,"data":req.data,"ts":TS}),
                "{frame}"
            );
            assert_eq!(stored_room_id(&frame), Some((room.as_str(), id)));
        }
        PublishTarget::User(user) => {
            assert!(names::valid_user_id(user), "{user:?}");
            assert_eq!(obj.get("user_id"), Some(&Value::String(user.clone())));
            let frame = ServerFrame::Publish {
                id: None,
                room: None,
                user_id: Some(user.clone()),
                data: req.data.clone(),
                ts: TS.into(),
            }
            .encode();
            let v: Value = serde_json::from_str(&frame).expect("a publish frame that is not JSON");
            assert_eq!(
                v,
                json!({"type":"publish","user_id":user,"data":req.data,"ts":TS})
            );
            assert_eq!(frame_type(&frame), Some("publish"));
            assert_eq!(stored_room_id(&frame), None);
        }
        PublishTarget::Broadcast => {
            let frame = ServerFrame::Broadcast {
                data: req.data.clone(),
                ts: TS.into(),
            }
            .encode();
            let v: Value = serde_json::from_str(&frame).expect("a broadcast that is not JSON");
            assert_eq!(v, json!({"type":"broadcast","data":req.data,"ts":TS}));
            assert_eq!(frame_type(&frame), Some("broadcast"));
        }
    }
}

fn notify_ok(req: &NotifyRequest, obj: &Map<String, Value>) {
    assert!((1..=MAX_NOTIFY_USERS).contains(&req.users.len()));
    let distinct: HashSet<&String> = req.users.iter().collect();
    assert_eq!(distinct.len(), req.users.len(), "duplicate users");
    assert!(req.users.iter().all(|u| names::valid_user_id(u)));
    match (obj.get("user_id"), obj.get("user_ids")) {
        (Some(Value::String(u)), None) => assert_eq!(req.users, std::slice::from_ref(u)),
        (None, Some(Value::Array(list))) => {
            // In the order given, duplicates once.
            let mut want: Vec<String> = Vec::new();
            for u in list {
                let u = u.as_str().expect("a non-string user accepted").to_owned();
                if !want.contains(&u) {
                    want.push(u);
                }
            }
            assert_eq!(req.users, want);
        }
        other => panic!("accepted without exactly one of user_id/user_ids: {other:?}"),
    }
    assert!(NOTIFICATION_KINDS.contains(&req.kind.as_str()));
    assert!((1..=256).contains(&req.title.len()));
    if let Some(url) = &req.action_url {
        assert!((1..=2048).contains(&url.len()));
    }
    assert_ne!(req.data, Some(Value::Null));
    assert_eq!(obj.get("title"), Some(&Value::String(req.title.clone())));
    assert_eq!(obj.get("body"), Some(&Value::String(req.body.clone())));
    // What each user gets, encoded as the handler does; it reads back unchanged.
    let n = Notification {
        id: "01a21255-8f3d-70af-87b3-3ff77971f150".into(),
        user_id: req.users[0].clone(),
        kind: req.kind.clone(),
        title: req.title.clone(),
        body: req.body.clone(),
        action_url: req.action_url.clone(),
        data: req.data.clone(),
        ts: TS.into(),
        read: false,
    };
    let frame = ServerFrame::Notification {
        notification: n.clone(),
        unread: 1,
    }
    .encode();
    assert_eq!(frame_type(&frame), Some("notification"));
    match serde_json::from_str::<ServerFrame>(&frame) {
        Ok(ServerFrame::Notification { notification, .. }) => {
            assert_eq!(notification, n, "{frame}")
        }
        other => panic!("not a notification frame: {other:?}"),
    }
}

/// A refusal is a 400 with `{"error":{"code","message"}}`.
fn refusal(res: Response<Body>, was_object: bool) {
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let bytes = ready(res.into_body().collect())
        .expect("a refusal body that is not complete at once")
        .unwrap_or_else(|e| match e {})
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("a refusal body that is not JSON");
    let code = v["error"]["code"].as_str().expect("no error.code");
    let message = v["error"]["message"].as_str().expect("no error.message");
    let want = if was_object {
        "invalid_field"
    } else {
        "bad_json"
    };
    assert_eq!(code, want, "{message}");
    // An unknown field is named, cut to 64 characters; nothing else is echoed.
    assert!(
        message.len() <= 1024,
        "a long message: {} bytes",
        message.len()
    );
}

/// The value of a future that is ready at its first poll (a complete body is).
fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}
