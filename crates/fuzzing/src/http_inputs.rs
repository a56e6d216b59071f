//! What the gateway reads off an HTTP request before any session exists: the query
//! (`wsgate_gateway::query::Query`), the development-mode identity and the JWT claims
//! (`auth::Authenticator`), `Sec-WebSocket-Key` (`upgrade::valid_key`), the SSE
//! cursor of `Last-Event-ID` (`wsgate_protocol::sse::Cursor`) and `--trusted-proxies` networks
//! with `X-Real-IP`/`X-Forwarded-For` (`proxy`).
//!
//! The first byte picks the input, the rest is the input. To reach the claims parser,
//! the JWT case signs the fuzzed claims with the gateway's secret, as a token issuer
//! would (the signature check is not what is fuzzed here).

use std::net::IpAddr;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::{HeaderMap, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, EncodingKey};
use wsgate_gateway::auth::{AuthError, Authenticator};
use wsgate_gateway::proxy::{client_ip, Net};
use wsgate_gateway::query::Query;
use wsgate_gateway::upgrade::valid_key;
use wsgate_protocol::names;
use wsgate_protocol::sse::Cursor;

const SECRET: &str = "fuzz-secret";

/// Checks one input; panics when a property does not hold.
pub fn check(data: &[u8]) {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => query(input),
        1 => key(input),
        2 => signed_claims(input),
        3 => raw_token(input),
        4 => cursor(input),
        _ => proxy(input),
    }
}

/// `/ws?<input>` → the query pairs → the development-mode identity.
fn query(input: &[u8]) {
    let mut target = b"/ws?".to_vec();
    target.extend_from_slice(input);
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let q = Query::of(&uri);
    // The first value of a key wins (a second `user_id` cannot override the first).
    if let Some((k, v)) = q.pairs().first() {
        assert_eq!(q.get(k), Some(v.as_str()));
    }
    match Authenticator::new(None, None, None).authenticate(q.pairs(), None) {
        Ok(id) => {
            assert!(names::valid_user_id(&id.user.user_id), "{:?}", id.user);
            assert!(!id.user.username.is_empty());
            assert!(names::valid_username(&id.user.username), "{:?}", id.user);
            assert!(id.grants.is_none() && id.expires_at.is_none());
            if let Some(u) = q.get("user_id") {
                assert_eq!(id.user.user_id, u);
            }
        }
        Err(e) => assert!(matches!(e, AuthError::BadParameter(_)), "{e:?}"),
    }
}

/// A key is valid exactly when it is the canonical base64 of 16 bytes.
fn key(input: &[u8]) {
    let reference = input.len() == 24 && STANDARD.decode(input).is_ok_and(|b| b.len() == 16);
    assert_eq!(
        valid_key(input),
        reference,
        "{:?}",
        String::from_utf8_lossy(input)
    );
}

/// The fuzzed bytes as the claims of a correctly signed HS256 token.
fn signed_claims(claims: &[u8]) {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("signing");
    let token = format!("{message}.{signature}");
    let auth = Authenticator::new(Some(SECRET), None, None);
    let by_query = auth.authenticate(&[("token".into(), token.clone())], None);
    let by_header = auth.authenticate(&[], Some(&format!("Bearer {token}")));
    match (&by_query, &by_header) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.user, b.user);
            assert!(names::valid_user_id(&a.user.user_id), "{:?}", a.user);
            assert!(names::valid_username(&a.user.username), "{:?}", a.user);
            assert!(a.grants.is_some() && a.expires_at.is_some());
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            assert!(
                matches!(
                    a,
                    AuthError::Invalid | AuthError::Expired | AuthError::NotYetValid
                ),
                "{a:?}"
            );
        }
        _ => panic!("query and header disagree: {by_query:?} / {by_header:?}"),
    }
}

/// Unsigned garbage as a token: always refused, never a panic.
fn raw_token(input: &[u8]) {
    let Ok(token) = std::str::from_utf8(input) else {
        return;
    };
    let auth = Authenticator::new(Some(SECRET), None, None);
    let r = auth.authenticate(&[("token".into(), token.to_owned())], None);
    assert!(r.is_err(), "an unsigned token was accepted: {token:?}");
    if let Ok(h) = HeaderValue::from_str(token) {
        let r = auth.authenticate(&[], h.to_str().ok());
        assert!(r.is_err(), "an unsigned header was accepted: {token:?}");
    }
}

/// `Last-Event-ID`: every part kept is a valid room with an id, and the cursor printed
/// from them parses back the same.
fn cursor(input: &[u8]) {
    let Ok(s) = std::str::from_utf8(input) else {
        return;
    };
    let parsed = Cursor::parse(s);
    assert!(parsed.entries().iter().all(|p| names::valid_room(&p.room)));
    let printed = parsed.to_string();
    assert_eq!(Cursor::parse(&printed), parsed, "{printed:?}");
}

/// `NET\nPEER\nX-REAL-IP\nX-FORWARDED-FOR`.
fn proxy(input: &[u8]) {
    let Ok(s) = std::str::from_utf8(input) else {
        return;
    };
    let mut parts = s.splitn(4, '\n');
    let nets: Vec<Net> = parts
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect();
    let peer: IpAddr = parts
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let mut headers = HeaderMap::new();
    if let Some(v) = parts.next().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert("x-real-ip", v);
    }
    if let Some(v) = parts.next().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert("x-forwarded-for", v);
    }
    for n in &nets {
        let _ = n.contains(peer);
    }
    let ip = client_ip(peer, &headers, &nets);
    if !nets.iter().any(|n| n.contains(peer)) {
        assert_eq!(ip, peer, "an untrusted peer named another address");
    }
}
