//! What a node says about itself over HTTP: `/readyz` (readiness) and `/api/stats`.

use http::{Response, StatusCode};
use serde_json::json;

use crate::node::Node;
use crate::response::{error_response, json_response, Body};

/// `GET /readyz`: 200 while accepting connections with a reachable broker; 503 while
/// draining, while the broker is down, and until the cluster registry took the node's
/// first report (a node restarted under the same id has cleared its old presence).
pub async fn readyz(node: &Node) -> Response<Body> {
    if node.is_draining() {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "draining");
    }
    match node.broker.ping().await {
        Ok(()) if !node.is_registered() => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "not yet registered in the cluster",
        ),
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "broker": node.broker.kind()}),
        ),
        Err(e) => {
            // The broker's own error text (addresses, server messages) stays in the
            // logs: a readiness probe is often reachable from outside.
            tracing::debug!(error = %e, "not ready");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the broker is unreachable",
            )
        }
    }
}

/// `GET /api/stats`: this node, and in cluster mode the totals over live nodes
/// (`cluster.error` when Redis cannot be asked).
pub async fn stats(node: &Node) -> serde_json::Value {
    let active = node.active();
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
    match node.registry.cluster().await {
        Ok(Some(c)) => {
            out["cluster"] = json!({
                "nodes_alive": c.nodes.len(),
                "nodes": c.nodes,
                "active_connections": c.connections,
            });
        }
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "cluster totals unavailable");
            out["cluster"] = json!({"error": "the broker is unreachable"});
        }
    }
    out
}
