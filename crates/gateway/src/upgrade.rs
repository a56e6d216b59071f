//! The WebSocket handshake on `/ws`: validated by hand on hyper 1.x, refused with a
//! clear HTTP status before the upgrade (426, 400, 401, 503), then handed to a
//! session task with this gateway's own `WebSocketConfig`.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::node::Node;
use crate::query::Query;
use crate::response::{error_response, full, Body};

/// Read buffer per connection, allocated up front: small, since client frames are
/// small; it grows for a large frame (bounded by the frame limit).
const READ_BUFFER: usize = 256;
/// Frames are written to the socket once this much is buffered, or at a flush.
const WRITE_BUFFER: usize = 16 * 1024;

/// The WebSocket settings of every session: small buffers, bounded sizes.
/// `max_out_frame` bounds what the server writes in one frame: the write buffer must
/// take one such frame on top of what is waiting to be flushed, or tungstenite refuses
/// it and the connection would be lost without a close code.
pub fn ws_config(max_frame_bytes: usize, max_out_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + max_out_frame + 1024)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "400",
        401 => "401",
        403 => "403",
        405 => "405",
        429 => "429",
        426 => "426",
        503 => "503",
        _ => "other",
    }
}

/// `res`, a refusal before the upgrade, counted by its status.
fn counted(node: &Node, res: Response<Body>) -> Response<Body> {
    node.metrics
        .handshake_refusals
        .get_or_create(&vec![("status", status_label(res.status()))])
        .inc();
    res
}

/// A `Sec-WebSocket-Key` must be the base64 of exactly 16 bytes.
pub fn valid_key(key: &[u8]) -> bool {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    key.len() == 24
        && key[22] == b'='
        && key[23] == b'='
        && key[..22].iter().all(|b| B64.contains(b))
        // The last sextet carries 2 bits of data and 4 bits that must be zero.
        && b"AQgw".contains(&key[21])
}

/// What an accepted upgrade is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws`: an authenticated protocol session.
    Session,
    /// `--echo-path`: every message comes back (conformance and diagnostics).
    Echo,
}

/// Answers a request on `/ws` (or the echo path): either a refusal, or 101 with the
/// connection's task spawned.
pub async fn upgrade<B>(node: &Arc<Node>, mut req: Request<B>, endpoint: Endpoint) -> Response<Body>
where
    B: Send + 'static,
{
    let refuse = |status: StatusCode, code: &str, message: &str| {
        node.metrics
            .handshake_refusals
            .get_or_create(&vec![("status", status_label(status))])
            .inc();
        error_response(status, code, message)
    };
    if req.method() != Method::GET {
        let mut res = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET with a WebSocket upgrade",
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return res;
    }
    let headers = req.headers();
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        let mut res = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        );
        res.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        return res;
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut res = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "bad_handshake",
            "only WebSocket version 13 is supported",
        );
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return res;
    }
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(k) if valid_key(k.as_bytes()) => k.as_bytes().to_vec(),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_handshake",
                "Sec-WebSocket-Key must be the base64 of 16 bytes",
            )
        }
    };
    if !node
        .config
        .origin_allowed(headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()))
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this origin is not allowed",
        );
    }
    if node.is_draining() {
        let mut res = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node is shutting down",
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    }
    // Who it is: the token first (a bad one costs no hook call), the connect hook once
    // the connection is admitted (a refused one costs none either).
    let query = Query::of(req.uri());
    let base = match endpoint {
        Endpoint::Echo => None,
        Endpoint::Session => match crate::identify::token(node, &query, headers).await {
            Ok(base) => base,
            Err(res) => return counted(node, res),
        },
    };
    let client = req.extensions().get::<std::net::SocketAddr>().map(|peer| {
        crate::proxy::client_ip(peer.ip(), req.headers(), &node.config.trusted_proxies)
    });
    if let Err(retry) = node.admission.admit(std::time::Instant::now()) {
        node.metrics.admission_refusals.inc();
        return crate::admission::refusal(retry);
    }
    let slot = match node.capacity.reserve(client) {
        Ok(slot) => slot,
        Err(refused) => return counted(node, refused.response()),
    };
    let session_id = uuid::Uuid::new_v4().to_string();
    let identity = match endpoint {
        Endpoint::Echo => None,
        Endpoint::Session => {
            let presented = crate::identify::Presented {
                headers: req.headers(),
                query: &query,
                client,
                session_id: &session_id,
                transport: crate::hooks::calls::Transport::Websocket,
            };
            match crate::identify::connect(node, presented, base).await {
                Ok(identity) => Some(identity),
                Err(res) => return counted(node, res),
            }
        }
    };

    if let Some(permit) = req.extensions().get::<crate::slot::HttpPermit>() {
        // A session now, counted by its slot.
        permit.release();
    }
    let accept = derive_accept_key(&key);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_node = node.clone();
    let config = ws_config(node.config.max_frame_bytes(), node.config.max_out_frame());
    node.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                match identity {
                    Some(identity) => {
                        crate::session::run(task_node, ws, identity, session_id, slot, client).await
                    }
                    None => crate::echo::run(task_node, ws, slot).await,
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });

    let mut res = Response::new(full(bytes::Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::valid_key;

    #[test]
    fn keys() {
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(
            !valid_key(b"dGhlIHNhbXBsZSBub25jZR=="),
            "non-zero padding bits"
        );
        assert!(!valid_key(b"dGhlIHNhbXBsZSBub25j!Q=="));
        assert!(!valid_key(b""));
    }
}
