//! Every error code of the contract that a single node can produce, each with its
//! `ref` echoed, and the connection still serving afterwards.

use std::time::Duration;

use serde_json::{json, Value};
use wsgate_e2e::{ask, join, token, unix_now, Gateway, WAIT};

async fn expect_error(c: &mut wsgate_client::Client, frame: Value, code: &str) -> Value {
    let e = ask(c, frame.clone(), "error").await;
    assert_eq!(e["code"], code, "for {frame}: {e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    e
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_carries_on() {
    let gw = Gateway::start(&[]);
    let (mut c, _) = gw.connect("alice").await;
    c.send_raw(tokio_tungstenite::tungstenite::Message::Text(
        "not json".into(),
    ))
    .await
    .unwrap();
    assert_eq!(c.recv(WAIT).await.unwrap()["code"], "bad_json");
    c.send_raw(tokio_tungstenite::tungstenite::Message::Text(
        "[1,2]".into(),
    ))
    .await
    .unwrap();
    assert_eq!(c.recv(WAIT).await.unwrap()["code"], "bad_json");
    let deep = "[".repeat(10_000);
    c.send_raw(tokio_tungstenite::tungstenite::Message::Text(deep.into()))
        .await
        .unwrap();
    assert_eq!(c.recv(WAIT).await.unwrap()["code"], "bad_json");

    let e = expect_error(&mut c, json!({"ref":"r0"}), "unknown_type").await;
    assert_eq!(e["ref"], "r0");
    expect_error(&mut c, json!({"type":"dance","ref":1}), "unknown_type").await;

    for bad in [
        json!({"type":"join","ref":2}),
        json!({"type":"join","room":"","ref":2}),
        json!({"type":"join","room":"has space","ref":2}),
        json!({"type":"join","room":"x".repeat(129),"ref":2}),
        json!({"type":"join","room":5,"ref":2}),
        json!({"type":"join","room":"a","since":"yesterday","ref":2}),
        json!({"type":"join","room":"a","epoch":"not valid!","ref":2}),
        json!({"type":"message","room":"a","content":"","ref":2}),
        json!({"type":"message","room":"a","content":"x".repeat(65_537),"ref":2}),
        json!({"type":"typing","room":"a","is_typing":"yes","ref":2}),
        json!({"type":"direct","content":"x","ref":2}),
        json!({"type":"history","room":"a","limit":500,"ref":2}),
    ] {
        let e = expect_error(&mut c, bad, "invalid_field").await;
        assert_eq!(e["ref"], 2);
    }
    expect_error(
        &mut c,
        json!({"type":"message","room":"elsewhere","content":"x","ref":3}),
        "not_member",
    )
    .await;
    expect_error(
        &mut c,
        json!({"type":"typing","room":"elsewhere","is_typing":true}),
        "not_member",
    )
    .await;
    expect_error(
        &mut c,
        json!({"type":"leave","room":"elsewhere"}),
        "not_member",
    )
    .await;
    // Development mode grants no private room.
    expect_error(
        &mut c,
        json!({"type":"join","room":"private:x"}),
        "forbidden",
    )
    .await;
    // Still serving.
    assert_eq!(join(&mut c, "fine").await["room"], "fine");
    let (_, _, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains("wsgate_errors_total{code=\"invalid_field\"} 12"),
        "{metrics}"
    );
}

#[tokio::test]
async fn too_many_rooms() {
    let gw = Gateway::start(&["--max-rooms-per-connection", "2"]);
    let (mut c, _) = gw.connect("alice").await;
    join(&mut c, "r1").await;
    join(&mut c, "r2").await;
    // Re-joining a room already joined is not a third room.
    join(&mut c, "r2").await;
    expect_error(
        &mut c,
        json!({"type":"join","room":"r3","ref":"x"}),
        "too_many_rooms",
    )
    .await;
    ask(&mut c, json!({"type":"leave","room":"r1"}), "left").await;
    join(&mut c, "r3").await;
}

#[tokio::test]
async fn rate_limited_frames_are_refused_not_fatal() {
    let gw = Gateway::start(&["--rate-limit", "5"]);
    let (mut c, _) = gw.connect("alice").await;
    join(&mut c, "r").await; // one token of the burst of 10
    for i in 0..30 {
        c.send(&json!({"type":"message","room":"r","content":format!("m{i}"),"ref":i}))
            .await
            .unwrap();
    }
    let mut acks = 0;
    let mut limited = 0;
    while acks + limited < 30 {
        let f = c.recv(WAIT).await.unwrap();
        match f["type"].as_str().unwrap() {
            "ack" => acks += 1,
            "error" => {
                assert_eq!(f["code"], "rate_limited");
                limited += 1;
            }
            _ => {}
        }
    }
    assert!(limited >= 15, "only {limited} limited");
    assert!((9..=15).contains(&acks), "{acks} accepted");
    // Pings stay free; after a pause, frames are accepted again.
    ask(&mut c, json!({"type":"ping"}), "pong").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ack = ask(
        &mut c,
        json!({"type":"message","room":"r","content":"later","ref":"ok"}),
        "ack",
    )
    .await;
    assert_eq!(ack["ref"], "ok");
}

#[tokio::test]
async fn tokens_are_checked_before_the_upgrade_and_private_rooms_need_a_grant() {
    let secret = "test-secret";
    let gw = Gateway::start(&["--jwt-secret", secret]);
    let expect_401 = |url: String| async move {
        match wsgate_client::Client::connect(&url).await {
            Err(wsgate_client::Error::Ws(tokio_tungstenite::tungstenite::Error::Http(res))) => {
                assert_eq!(res.status().as_u16(), 401, "{url}");
            }
            Err(e) => panic!("{url}: expected 401, got {e}"),
            Ok(_) => panic!("{url}: expected 401, got a session"),
        }
    };
    expect_401(gw.ws_url("")).await;
    expect_401(gw.ws_url("user_id=alice")).await;
    expect_401(gw.ws_url("token=garbage")).await;
    let wrong = token("other-secret", json!({"sub":"alice","exp":unix_now()+600}));
    expect_401(gw.ws_url(&format!("token={wrong}"))).await;
    let expired = token(secret, json!({"sub":"alice","exp":unix_now()-600}));
    expect_401(gw.ws_url(&format!("token={expired}"))).await;
    let no_sub = token(secret, json!({"exp":unix_now()+600}));
    expect_401(gw.ws_url(&format!("token={no_sub}"))).await;

    let good = token(
        secret,
        json!({"sub":"alice","name":"Alice","exp":unix_now()+600,"rooms":["private:ops","private:team-*"]}),
    );
    let mut c = wsgate_client::Client::connect(&gw.ws_url(&format!("token={good}")))
        .await
        .unwrap();
    let welcome = c.recv(WAIT).await.unwrap();
    assert_eq!(
        (welcome["user_id"].as_str(), welcome["username"].as_str()),
        (Some("alice"), Some("Alice"))
    );
    join(&mut c, "private:ops").await;
    join(&mut c, "private:team-blue").await;
    join(&mut c, "public").await;
    expect_error(
        &mut c,
        json!({"type":"join","room":"private:finance","ref":"f"}),
        "forbidden",
    )
    .await;
    expect_error(
        &mut c,
        json!({"type":"history","room":"private:finance"}),
        "forbidden",
    )
    .await;

    // A token that expires while connected closes the session with 1008.
    let short = token(secret, json!({"sub":"bob","exp":unix_now()+2}));
    let mut b = wsgate_client::Client::connect(&gw.ws_url(&format!("token={short}")))
        .await
        .unwrap();
    assert_eq!(b.closed(Duration::from_secs(15)).await.unwrap(), Some(1008));
}
