//! The Rust client and token refresh against a real gateway (`--jwt-secret`,
//! `--refresh-notice-s 2`, 3-second tokens): `Reconnecting` with a token source takes
//! a fresh token on every `refresh_needed` and keeps its one session past each token's
//! expiry; `Client::refresh` reports the new `exp`, or the server's refusal.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wsgate_client::reconnect::{Event, GetToken, Options, Reconnecting, REFRESH_REF};
use wsgate_e2e::{token, unix_now, Gateway, WAIT};

const SECRET: &str = "rust-refresh-test-secret-0123456789abcdef";

#[tokio::test]
async fn a_token_source_keeps_one_session_past_each_tokens_expiry() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--refresh-notice-s", "2"]);
    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let source = GetToken::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok(token(SECRET, json!({"sub":"rusty","exp":unix_now() + 3}))) }
    });
    let options = Options {
        get_token: Some(source),
        ..Options::default()
    };
    // The URL's token (none here, or a stale one) is replaced by the source's.
    let mut client = Reconnecting::start(&gw.ws_url("token=stale"), options);
    let mut first_exp = None;
    let mut refreshed = Vec::new();
    let mut welcomes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Two refreshes, and past the first token's expiry.
    while refreshed.len() < 2 || first_exp.is_none_or(|exp| unix_now() <= exp) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = tokio::time::timeout(left, client.next())
            .await
            .expect("two refreshes in time")
            .expect("the client runs");
        match event {
            Event::Frame(f) if f["type"] == "welcome" => welcomes += 1,
            Event::Frame(f) if f["type"] == "refresh_needed" => {
                first_exp = first_exp.or(f["exp"].as_u64());
            }
            Event::Frame(f) if f["type"] == "refreshed" => {
                assert_eq!(f["ref"], REFRESH_REF);
                refreshed.push(f["exp"].as_u64().expect("exp"));
            }
            Event::Frame(_) | Event::Open => {}
            other => panic!("the session should carry on: {other:?}"),
        }
    }
    assert_eq!(welcomes, 1);
    assert!(asked.load(Ordering::SeqCst) >= 3);
    assert!(refreshed[1] >= refreshed[0], "{refreshed:?}");
    // Still served on that session.
    client
        .send(json!({"type":"ping","ref":"after"}))
        .expect("queued");
    loop {
        let event = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("the pong in time")
            .expect("the client runs");
        match event {
            Event::Frame(f) if f["type"] == "pong" && f["ref"] == "after" => break,
            Event::Frame(_) => {}
            other => panic!("the session should carry on: {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_refresh_reports_the_exp_or_the_refusal() {
    let gw = Gateway::start(&["--jwt-secret", SECRET]);
    let first = token(SECRET, json!({"sub":"rusty","exp":unix_now() + 600}));
    let mut c = wsgate_client::Client::connect(&gw.ws_url(&format!("token={first}")))
        .await
        .expect("connect");
    let exp = unix_now() + 900;
    let next = token(SECRET, json!({"sub":"rusty","exp":exp}));
    assert_eq!(c.refresh(&next, WAIT).await.expect("refreshed"), exp);
    let other = token(SECRET, json!({"sub":"someone-else","exp":exp}));
    let refused = c.refresh(&other, WAIT).await.expect_err("another user");
    assert_eq!(refused.code(), Some("forbidden"));
    let bad = c.refresh("garbage", WAIT).await.expect_err("a bad token");
    assert_eq!(bad.code(), Some("invalid_field"));
}

/// A source whose `n`th token (from 1) is `make(n)`, counting the calls.
fn source(make: impl Fn(u32) -> String + Send + Sync + 'static) -> (GetToken, Arc<AtomicU32>) {
    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let make = Arc::new(make);
    let source = GetToken::new(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let t = make(n);
        async move { Ok(t) }
    });
    (source, asked)
}

/// Events until the `n`th `welcome`, with the session ids seen.
async fn until_welcome(client: &mut Reconnecting, n: usize) -> (Vec<Event>, Vec<String>) {
    let mut events = Vec::new();
    let mut sessions = Vec::new();
    while sessions.len() < n {
        let event = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("an event in time")
            .expect("the client runs");
        if let Event::Frame(f) = &event {
            if f["type"] == "welcome" {
                sessions.push(f["session_id"].as_str().unwrap_or_default().to_owned());
            }
        }
        assert!(!matches!(event, Event::Closed(_)), "{event:?}");
        events.push(event);
    }
    (events, sessions)
}

fn fast(get_token: GetToken) -> Options {
    Options {
        base: Duration::from_millis(50),
        get_token: Some(get_token),
        ..Options::default()
    }
}

#[tokio::test]
async fn a_refused_refresh_reconnects_with_a_fresh_token() {
    let gw = Gateway::start(&["--jwt-secret", SECRET]);
    // Less than the notice (30 s) is left of the first token: noticed at once; the
    // second is another user's (forbidden); the third is good.
    let (get_token, asked) = source(|n| match n {
        1 => token(SECRET, json!({"sub":"rusty","exp":unix_now() + 20})),
        2 => token(SECRET, json!({"sub":"mallory","exp":unix_now() + 600})),
        _ => token(SECRET, json!({"sub":"rusty","exp":unix_now() + 600})),
    });
    let mut client = Reconnecting::start(&gw.ws_url(""), fast(get_token));
    let (events, sessions) = until_welcome(&mut client, 2).await;
    let failed: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::RefreshFailed(why) => Some(why),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert!(failed[0].contains("forbidden"), "{failed:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Reconnecting(_))));
    assert_ne!(sessions[0], sessions[1]);
    assert_eq!(asked.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn with_a_token_source_an_expiry_reconnects_instead_of_stopping() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--refresh-notice-s", "0"]);
    let (get_token, asked) = source(|n| {
        let life = if n == 1 { 1 } else { 600 };
        token(SECRET, json!({"sub":"rusty","exp":unix_now() + life}))
    });
    let mut client = Reconnecting::start(&gw.ws_url(""), fast(get_token));
    let (events, sessions) = until_welcome(&mut client, 2).await;
    assert!(events.iter().any(|e| matches!(e, Event::Reconnecting(_))));
    assert!(!events.iter().any(|e| matches!(e, Event::RefreshFailed(_))
        || matches!(e, Event::Frame(f) if f["type"] == "refresh_needed")));
    assert_ne!(sessions[0], sessions[1]);
    assert_eq!(asked.load(Ordering::SeqCst), 2);
}
