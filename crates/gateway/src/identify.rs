//! Who a `/ws` or `/events` request is, before its session starts: its token (or, in
//! development mode, its query) by [`token`], then, when one is configured, the
//! connect hook's answer by [`connect`]; for a stream, the join hook's answer for each
//! of its rooms by [`stream_rooms`]. Refusals are HTTP answers, made before the upgrade
//! or the stream.
//!
//! With token keys, the token is checked first (a bad one gets 401 without a hook
//! call) and the hook runs with it: it sees the token's identity and may replace the
//! user or the grants. Without token keys, a connect hook replaces development mode:
//! the hook names the user (`?user_id=` is only passed on to it, never trusted).

use std::net::IpAddr;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use wsgate_protocol::server::Member;

use crate::auth::{AuthError, Identity};
use crate::hooks::answer::{self, ConnectGrant};
use crate::hooks::calls::{ConnectCall, JoinCall, TokenView, Transport};
use crate::hooks::Verdict;
use crate::node::Node;
use crate::query::Query;
use crate::response::{error_response, Body};

/// What a client presented, for the connect hook.
pub struct Presented<'a> {
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// Its query.
    pub query: &'a Query,
    /// The client's address (`--trusted-proxies` applied).
    pub client: Option<IpAddr>,
    /// The id the session will have.
    pub session_id: &'a str,
    /// `/ws` or `/events`.
    pub transport: Transport,
}

/// The identity of the request's credentials: a verified token, or the development
/// identity of its query; `None` when a connect hook and no token keys are configured
/// (the hook names the user).
///
/// # Errors
/// The answer to send instead: 401 for a token refused, 400 for a bad development
/// parameter.
pub async fn token(
    node: &Node,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Option<Identity>, Response<Body>> {
    if node.hooks.connect.is_some() && !node.auth.requires_token() {
        return Ok(None);
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match node
        .auth
        .authenticate_refreshing(query.pairs(), authorization)
        .await
    {
        Ok(i) => Ok(Some(i)),
        Err(AuthError::BadParameter(m)) => {
            Err(error_response(StatusCode::BAD_REQUEST, "invalid_field", m))
        }
        Err(e) => {
            let mut res = error_response(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string());
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(res)
        }
    }
}

/// The session's identity: `base` (from [`token`]) as the connect hook, when one is
/// configured, allows, completes or replaces it. The call is bounded by the hook
/// timeout and the handshake timeout, whichever is shorter.
///
/// # Errors
/// The answer to send instead: the hook's refusal (403 `forbidden`, or 401
/// `unauthorized` when it says so) or, when it failed and its policy is `closed`, 503
/// `unavailable` with `Retry-After: 1`.
pub async fn connect(
    node: &Node,
    presented: Presented<'_>,
    base: Option<Identity>,
) -> Result<Identity, Response<Body>> {
    let Some(hook) = &node.hooks.connect else {
        return Ok(base.unwrap_or_else(anonymous));
    };
    let (headers, query) = ConnectCall::presented(presented.headers, presented.query.pairs());
    let call = ConnectCall {
        hook: "connect",
        node_id: &node.node_id,
        session_id: presented.session_id,
        transport: presented.transport,
        client_ip: presented.client.map(|ip| ip.to_string()),
        headers,
        query,
        token: base.as_ref().map(TokenView::of),
    };
    let deadline = Duration::from_millis(node.config.handshake_timeout_ms);
    let need_user = base.is_none();
    let verdict = hook
        .call(&call, deadline, |b| answer::connect(b, need_user))
        .await;
    match verdict {
        Verdict::Allowed(grant) => Ok(granted(grant, base)),
        Verdict::FailedOpen => Ok(base.unwrap_or_else(anonymous)),
        Verdict::Refused(r) if r.unauthorized => Err(error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &r.message,
        )),
        Verdict::Refused(r) => Err(error_response(
            StatusCode::FORBIDDEN,
            "forbidden",
            &r.message,
        )),
        Verdict::FailedClosed => Err(unavailable("connect")),
    }
}

/// Asks the join hook, when one is configured, whether the stream of `identity` may
/// follow each of `rooms`: one call per room, all at once.
///
/// # Errors
/// 403 `forbidden` naming the first room refused, with the hook's message; 503
/// `unavailable` when a call failed and the join hook's policy is `closed`.
pub async fn stream_rooms(
    node: &Node,
    identity: &Identity,
    session_id: &str,
    rooms: &[String],
) -> Result<(), Response<Body>> {
    let Some(hook) = &node.hooks.join else {
        return Ok(());
    };
    let calls = rooms.iter().map(|room| async move {
        let call = JoinCall {
            hook: "join",
            node_id: &node.node_id,
            session_id,
            transport: Transport::Sse,
            user: &identity.user,
            room,
        };
        (room, hook.call(&call, Duration::MAX, answer::join).await)
    });
    let mut unavailable_seen = false;
    for (room, verdict) in futures_util::future::join_all(calls).await {
        match verdict {
            Verdict::Refused(r) => {
                return Err(error_response(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("{room}: {}", r.message),
                ))
            }
            Verdict::FailedClosed => unavailable_seen = true,
            Verdict::Allowed(()) | Verdict::FailedOpen => {}
        }
    }
    if unavailable_seen {
        return Err(unavailable("join"));
    }
    Ok(())
}

/// 503 for a hook that failed under a `closed` policy.
fn unavailable(hook: &str) -> Response<Body> {
    let mut res = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        &format!("the {hook} hook did not answer; retry later"),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// `base` as an allowing connect answer completes it: the answer's `user_id` (its
/// `username`, or the user id), or only its `username`; its `rooms` replace the
/// token's grants. Without a token, an identity of the answer's alone: no private
/// room but those it grants, and no expiry.
fn granted(grant: ConnectGrant, base: Option<Identity>) -> Identity {
    let mut identity = match (base, &grant.user_id) {
        (Some(base), _) => base,
        (None, Some(user_id)) => Identity {
            user: Member {
                user_id: user_id.clone(),
                username: user_id.clone(),
            },
            grants: Some(Vec::new()),
            expires_at: None,
        },
        // The answer's parser requires a user id when there is no token.
        (None, None) => anonymous(),
    };
    if let Some(user_id) = grant.user_id {
        identity.user.username = grant.username.unwrap_or_else(|| user_id.clone());
        identity.user.user_id = user_id;
    } else if let Some(username) = grant.username {
        identity.user.username = username;
    }
    if let Some(rooms) = grant.rooms {
        identity.grants = Some(rooms);
    }
    identity
}

/// Who a client is when a connect hook without token keys failed under the `open`
/// policy: a made-up `anon-…` user with no private room (the query is never trusted).
fn anonymous() -> Identity {
    let id = format!("anon-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    Identity {
        user: Member {
            user_id: id.clone(),
            username: id,
        },
        grants: Some(Vec::new()),
        expires_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_identity() -> Identity {
        Identity {
            user: Member {
                user_id: "alice".into(),
                username: "Alice".into(),
            },
            grants: Some(vec!["private:a".into()]),
            expires_at: Some(std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000)),
        }
    }

    #[test]
    fn grants_complete_or_replace_the_token() {
        let kept = granted(ConnectGrant::default(), Some(token_identity()));
        assert_eq!(kept.user.user_id, "alice");
        assert_eq!(kept.grants, Some(vec!["private:a".into()]));
        let renamed = granted(
            ConnectGrant {
                username: Some("Al".into()),
                ..Default::default()
            },
            Some(token_identity()),
        );
        assert_eq!(
            (
                renamed.user.user_id.as_str(),
                renamed.user.username.as_str()
            ),
            ("alice", "Al")
        );
        let replaced = granted(
            ConnectGrant {
                user_id: Some("bob".into()),
                username: None,
                rooms: Some(vec![]),
            },
            Some(token_identity()),
        );
        assert_eq!(
            (
                replaced.user.user_id.as_str(),
                replaced.user.username.as_str()
            ),
            ("bob", "bob")
        );
        assert_eq!(replaced.grants, Some(vec![]));
        assert!(replaced.expires_at.is_some(), "the token's expiry stays");
    }

    #[test]
    fn without_a_token_the_hook_names_the_user() {
        let cookie = granted(
            ConnectGrant {
                user_id: Some("u-7".into()),
                username: Some("Seven".into()),
                rooms: Some(vec!["private:team-*".into()]),
            },
            None,
        );
        assert_eq!(
            (cookie.user.user_id.as_str(), cookie.user.username.as_str()),
            ("u-7", "Seven")
        );
        assert!(cookie.may_enter("private:team-x", true));
        assert!(!cookie.may_enter("private:other", true));
        assert!(cookie.expires_at.is_none());
        let anon = anonymous();
        assert!(anon.user.user_id.starts_with("anon-"));
        assert!(!anon.may_enter("private:a", true));
        assert!(!anon.may_enter(crate::reserved::SYSTEM_ROOM, false));
        assert!(anon.may_enter("lobby", false));
    }
}
