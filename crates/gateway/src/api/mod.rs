//! The back-end HTTP API: [`publish`] (`POST /api/publish`) and [`notify`]
//! (`POST /api/notifications`, `GET /api/users/{id}/notifications`). Every answer is
//! JSON; every refusal is `{"error":{"code","message"}}` with the contract's status,
//! and nothing is half done: a request is validated whole before the one broker call
//! that carries it out. This file holds what every endpoint shares: the API key, the
//! body reader and the refusals.

pub mod notify;
pub mod publish;

pub use notify::{parse_notify, NotifyRequest, MAX_NOTIFY_USERS};
pub use publish::{parse_publish, PublishRequest, PublishTarget};

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};

use crate::node::Node;
use crate::response::{error_response, method_not_allowed, Body};

/// An API refusal: the complete error response (boxed: it is large and rare).
pub type Refusal = Box<Response<Body>>;

pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Refusal {
    Box::new(error_response(status, code, message))
}

pub(crate) fn invalid(message: &str) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, "invalid_field", message)
}

/// Compares without an early exit, so the time taken does not tell how much of a
/// guessed key was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API key rule: `Authorization: Bearer KEY` or `X-Api-Key: KEY`; 401 when wrong
/// or missing; 403 when no key is configured, unless `--insecure-api`.
pub(crate) fn check_key(node: &Node, headers: &HeaderMap) -> Result<(), Refusal> {
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
pub(crate) async fn read_body<B>(node: &Node, req: Request<B>) -> Result<Bytes, Refusal>
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
pub(crate) fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, Refusal> {
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

pub(crate) fn too_large(limit: usize) -> Refusal {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("the body is larger than {limit} bytes"),
    )
}

pub(crate) fn only_fields(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), Refusal> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(&format!("unknown field {:?}", truncate(k)))),
        None => Ok(()),
    }
}

pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub(crate) fn unavailable(node: &Node, e: wsgate_broker::Error) -> Refusal {
    tracing::warn!(error = %e, "broker call failed (HTTP API)");
    node.metrics.broker_errors.inc();
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the broker is unreachable: nothing was stored or sent",
    )
}

pub(crate) fn method_is(req_method: &Method, want: Method) -> Result<(), Refusal> {
    if *req_method == want {
        return Ok(());
    }
    let allow = if want == Method::POST { "POST" } else { "GET" };
    Err(Box::new(method_not_allowed(allow, &format!("use {want}"))))
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
