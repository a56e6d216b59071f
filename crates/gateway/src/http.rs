//! HTTP routing: every request that is not a WebSocket session ends here.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::node::Node;
use crate::upgrade::Endpoint;

/// The response body type of every route.
pub type Body = BoxBody<Bytes, Infallible>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A request's decoded query parameters.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes the query of `uri` (none: empty).
    pub fn of(uri: &http::Uri) -> Self {
        Query(
            uri.query()
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// 405 with `Allow`.
pub fn method_not_allowed(allow: &'static str, message: &str) -> Response<Body> {
    let mut res = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

/// A JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut res = Response::new(full(value.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The contract's HTTP error body: `{"error":{"code":…,"message":…}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

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
        "/api/publish" => return Ok(crate::api::publish(&node, req).await),
        "/api/notifications" => return Ok(crate::api::notify(&node, req).await),
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
        let mut res = crate::api::list_notifications(&node, req, &user).await;
        allow_origin(&node, origin, &mut res);
        return Ok(res);
    }
    let path = path.as_str();
    let get_only = |allowed: bool| (!allowed).then(|| method_not_allowed("GET", "use GET"));
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    let res = match path {
        "/ws" => return Ok(crate::upgrade::upgrade(&node, req, Endpoint::Session)),
        p if node.config.echo_path.as_deref() == Some(p) => {
            return Ok(crate::upgrade::upgrade(&node, req, Endpoint::Echo))
        }
        "/healthz" => get_only(is_get)
            .unwrap_or_else(|| json_response(StatusCode::OK, &json!({"status": "ok"}))),
        "/readyz" => match get_only(is_get) {
            Some(r) => r,
            None => readyz(&node).await,
        },
        "/api/stats" => match get_only(is_get) {
            Some(r) => r,
            None => json_response(StatusCode::OK, &stats(&node).await),
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
        "/" | "/index.html" => {
            static_file(get_only(is_get), INDEX_HTML, "text/html; charset=utf-8")
        }
        "/feed" => static_file(get_only(is_get), FEED_HTML, "text/html; charset=utf-8"),
        "/dashboard" => static_file(get_only(is_get), DASHBOARD_HTML, "text/html; charset=utf-8"),
        "/client.js" => static_file(
            get_only(is_get),
            CLIENT_JS,
            "text/javascript; charset=utf-8",
        ),
        "/client.d.ts" => static_file(
            get_only(is_get),
            CLIENT_DTS,
            "application/typescript; charset=utf-8",
        ),
        _ => error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
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

async fn readyz(node: &Node) -> Response<Body> {
    if node.is_draining() {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "draining");
    }
    match node.broker.ping().await {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "broker": node.broker.kind()}),
        ),
        Err(e) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &e.to_string(),
        ),
    }
}

/// `GET /api/stats`: this node, and in cluster mode the totals over live nodes
/// (`cluster.error` when Redis cannot be asked).
pub async fn stats(node: &Node) -> serde_json::Value {
    let active = node.active.load(Ordering::Acquire);
    let capacity = node.config.max_connections;
    let mut out = json!({
        "node_id": node.node_id,
        "active_connections": active,
        "capacity": capacity,
        "utilization": if capacity == 0 { 1.0 } else { active as f64 / capacity as f64 },
        "rooms": node.hub.room_count(),
        "uptime_s": node.started.elapsed().as_secs(),
        "broker": node.broker.kind(),
        "draining": node.is_draining(),
    });
    match node.broker.cluster().await {
        Ok(Some(c)) => {
            out["cluster"] = json!({
                "nodes_alive": c.nodes.len(),
                "nodes": c.nodes,
                "active_connections": c.connections,
            });
        }
        Ok(None) => {}
        Err(e) => out["cluster"] = json!({"error": e.to_string()}),
    }
    out
}

/// The demo chat page, the SSE feed page and the browser client, built into the
/// binary so that `cargo run` and a browser are all a newcomer needs.
const INDEX_HTML: &str = include_str!("../static/index.html");
const FEED_HTML: &str = include_str!("../static/feed.html");
const DASHBOARD_HTML: &str = include_str!("../static/dashboard.html");
const CLIENT_JS: &str = include_str!("../static/client.js");
const CLIENT_DTS: &str = include_str!("../static/client.d.ts");

fn static_file(
    refused: Option<Response<Body>>,
    body: &'static str,
    content_type: &'static str,
) -> Response<Body> {
    refused.unwrap_or_else(|| {
        let mut res = Response::new(full(body));
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    })
}
