//! Routing: every HTTP request of a connection comes here and goes to its handler:
//! the WebSocket upgrade, SSE, the back-end API, health and stats, metrics, assets.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

use crate::node::Node;
use crate::response::{error_response, full, json_response, method_not_allowed, Body};
use crate::upgrade::Endpoint;

/// Routes one request.
pub async fn route<B>(node: Arc<Node>, req: Request<B>) -> Result<Response<Body>, Infallible>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_owned();
    if let Some(res) = cors_preflight(&node, &req) {
        return Ok(res);
    }
    match path.as_str() {
        "/events" => return Ok(crate::sse::events(&node, req).await),
        "/api/publish" => return Ok(crate::api::publish::publish(&node, req).await),
        "/api/notifications" => return Ok(crate::api::notify::notify(&node, req).await),
        _ => {}
    }
    if let Some(user) = path
        .strip_prefix("/api/users/")
        .and_then(|rest| rest.strip_suffix("/notifications"))
    {
        let user: String =
            url::form_urlencoded::parse(format!("u={}", user.replace('+', "%2B")).as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default();
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut res = crate::api::notify::list_notifications(&node, req, &user).await;
        allow_origin(&node, origin, &mut res);
        return Ok(res);
    }
    let path = path.as_str();
    let get_only = |allowed: bool| (!allowed).then(|| method_not_allowed("GET", "use GET"));
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    let res = match path {
        "/ws" => return Ok(crate::upgrade::upgrade(&node, req, Endpoint::Session).await),
        p if node.config.echo_path.as_deref() == Some(p) => {
            return Ok(crate::upgrade::upgrade(&node, req, Endpoint::Echo).await)
        }
        "/healthz" => get_only(is_get)
            .unwrap_or_else(|| json_response(StatusCode::OK, &json!({"status": "ok"}))),
        "/readyz" => match get_only(is_get) {
            Some(r) => r,
            None => crate::health::readyz(&node).await,
        },
        "/api/stats" => match get_only(is_get) {
            Some(r) => r,
            None => json_response(StatusCode::OK, &crate::health::stats(&node).await),
        },
        "/metrics" => get_only(is_get).unwrap_or_else(|| {
            node.metrics.rooms_active.set(node.hub.room_count() as i64);
            let mut res = Response::new(full(node.metrics.encode()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            res
        }),
        p => match crate::assets::find(p) {
            Some(asset) => get_only(is_get).unwrap_or_else(|| asset.response()),
            None => error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        },
    };
    Ok(res)
}

/// CORS for the read-only API: the allowed origin is echoed.
fn allow_origin(node: &Node, origin: Option<HeaderValue>, res: &mut Response<Body>) {
    if let Some(o) = origin {
        if node.config.origin_allowed(o.to_str().ok()) {
            res.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            res.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) for
/// `/events` and the read-only API.
fn cors_preflight<B>(node: &Node, req: &Request<B>) -> Option<Response<Body>> {
    if req.method() != Method::OPTIONS
        || !req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let path = req.uri().path();
    if path != "/events" && !path.starts_with("/api/users/") {
        return None;
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, X-Api-Key, Last-Event-ID"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    allow_origin(node, origin, &mut res);
    Some(res)
}
