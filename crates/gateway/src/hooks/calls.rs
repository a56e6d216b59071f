//! What the gateway sends a hook: one JSON object per call, with `hook` naming which,
//! the node and the session, and what the decision is about. Field names are
//! snake_case, absent values are `null` or left out as documented in
//! docs/http-api.md.

use std::collections::BTreeMap;

use serde::Serialize;
use wsgate_protocol::server::Member;

use crate::auth::Identity;

/// Which kind of session a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// A `/ws` session.
    Websocket,
    /// An `/events` stream.
    Sse,
}

/// The connect hook's call: what the client presented.
#[derive(Debug, Serialize)]
pub struct ConnectCall<'a> {
    /// `"connect"`.
    pub hook: &'static str,
    /// This node's id.
    pub node_id: &'a str,
    /// The id the session will have (`welcome.session_id`; for SSE the stream's).
    pub session_id: &'a str,
    /// `/ws` or `/events`.
    pub transport: Transport,
    /// The client's address, as the gateway resolves it (`--trusted-proxies`).
    pub client_ip: Option<String>,
    /// The request headers that identify a client, by lower-case name, when present:
    /// `cookie`, `authorization`, `origin`, `user-agent`.
    pub headers: BTreeMap<&'static str, &'a str>,
    /// The query string's parameters (the first value of each name), `token` included.
    pub query: BTreeMap<&'a str, &'a str>,
    /// The identity a verified token gave, or `null` (no token keys configured).
    pub token: Option<TokenView<'a>>,
}

/// A verified token's identity, as the connect hook sees it.
#[derive(Debug, Serialize)]
pub struct TokenView<'a> {
    /// `sub`.
    pub user_id: &'a str,
    /// `name` (the user id when the token has none).
    pub username: &'a str,
    /// The `rooms` claim (`[]` without one).
    pub rooms: &'a [String],
    /// `exp`, in seconds since the Unix epoch.
    pub exp: Option<u64>,
}

impl<'a> TokenView<'a> {
    /// The view of `identity`.
    pub fn of(identity: &'a Identity) -> Self {
        TokenView {
            user_id: &identity.user.user_id,
            username: &identity.user.username,
            rooms: identity.grants.as_deref().unwrap_or_default(),
            exp: identity
                .expires_at
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        }
    }
}

/// The headers a connect call passes on.
pub const CONNECT_HEADERS: [&str; 4] = ["cookie", "authorization", "origin", "user-agent"];

impl<'a> ConnectCall<'a> {
    /// The headers of [`CONNECT_HEADERS`] that `headers` holds (several `Cookie`
    /// headers: the first), and the first value of each query parameter.
    pub fn presented(
        headers: &'a http::HeaderMap,
        query: &'a [(String, String)],
    ) -> (BTreeMap<&'static str, &'a str>, BTreeMap<&'a str, &'a str>) {
        let headers = CONNECT_HEADERS
            .iter()
            .filter_map(|name| Some((*name, headers.get(*name)?.to_str().ok()?)))
            .collect();
        let mut params = BTreeMap::new();
        for (k, v) in query {
            params.entry(k.as_str()).or_insert(v.as_str());
        }
        (headers, params)
    }
}

/// The join hook's call.
#[derive(Debug, Serialize)]
pub struct JoinCall<'a> {
    /// `"join"`.
    pub hook: &'static str,
    /// This node's id.
    pub node_id: &'a str,
    /// The session's id.
    pub session_id: &'a str,
    /// `/ws` or `/events`.
    pub transport: Transport,
    /// Who joins.
    pub user: &'a Member,
    /// The room.
    pub room: &'a str,
}

/// The publish hook's call.
#[derive(Debug, Serialize)]
pub struct PublishCall<'a> {
    /// `"publish"`.
    pub hook: &'static str,
    /// This node's id.
    pub node_id: &'a str,
    /// The session's id.
    pub session_id: &'a str,
    /// Who publishes.
    pub user: &'a Member,
    /// The room.
    pub room: &'a str,
    /// The `content` the client sent.
    pub content: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_flat_snake_case_json() {
        let user = Member {
            user_id: "alice".into(),
            username: "Alice".into(),
        };
        let join = JoinCall {
            hook: "join",
            node_id: "gw-1",
            session_id: "s-1",
            transport: Transport::Sse,
            user: &user,
            room: "lobby",
        };
        assert_eq!(
            serde_json::to_string(&join).unwrap(),
            r#"{"hook":"join","node_id":"gw-1","session_id":"s-1","transport":"sse","user":{"user_id":"alice","username":"Alice"},"room":"lobby"}"#
        );
        let mut headers = http::HeaderMap::new();
        headers.insert("cookie", "sid=1".parse().unwrap());
        headers.insert("x-other", "no".parse().unwrap());
        let query = vec![
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        let (h, q) = ConnectCall::presented(&headers, &query);
        let call = ConnectCall {
            hook: "connect",
            node_id: "gw-1",
            session_id: "s-1",
            transport: Transport::Websocket,
            client_ip: Some("10.0.0.1".into()),
            headers: h,
            query: q,
            token: None,
        };
        assert_eq!(
            serde_json::to_string(&call).unwrap(),
            r#"{"hook":"connect","node_id":"gw-1","session_id":"s-1","transport":"websocket","client_ip":"10.0.0.1","headers":{"cookie":"sid=1"},"query":{"a":"1"},"token":null}"#
        );
    }
}
