//! Every client frame of the contract and its answer, against the real binary.

use std::time::Duration;

use serde_json::json;
use wsgate_e2e::{ask, assert_quiet, join, presence_of, Gateway, WAIT};

#[tokio::test]
async fn welcome_join_message_ack_history_ping_leave() {
    let gw = Gateway::start(&["--node-id", "gw-test"]);
    let (mut a, welcome) = gw.connect("alice").await;
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["node_id"], "gw-test");
    assert_eq!(welcome["user_id"], "alice");
    assert_eq!(welcome["username"], "alice-name");
    assert_eq!(welcome["heartbeat_ms"], 25000);
    assert!(welcome["session_id"].as_str().unwrap().len() >= 32);

    let joined = ask(
        &mut a,
        json!({"type":"join","room":"lobby","ref":"j1"}),
        "joined",
    )
    .await;
    assert_eq!(joined["ref"], "j1");
    assert_eq!(joined["room"], "lobby");
    assert_eq!(
        joined["members"],
        json!([{"user_id":"alice","username":"alice-name"}])
    );
    assert_eq!(joined["last_id"], json!(null));
    assert_eq!(joined["recovered"], true);
    assert_eq!(
        (
            &joined["members_count"],
            &joined["members_more"],
            &joined["presence"]
        ),
        (&json!(1), &json!(false), &json!("full"))
    );
    assert!(joined["epoch"].as_str().unwrap().len() <= 32);

    let (mut b, _) = gw.connect("bob").await;
    let joined_b = join(&mut b, "lobby").await;
    assert_eq!(joined_b["members"].as_array().unwrap().len(), 2);
    // Alice hears her own arrival, then Bob's.
    let own = a.recv_type("presence", WAIT).await.unwrap();
    assert_eq!(own["user"]["user_id"], "alice");
    let presence = a.recv_type("presence", WAIT).await.unwrap();
    assert_eq!(
        presence,
        json!({"type":"presence","room":"lobby","event":"join","user":{"user_id":"bob","username":"bob-name"},"count":2})
    );

    a.send(&json!({"type":"message","room":"lobby","content":"hello","ref":7}))
        .await
        .unwrap();
    let mut got_ack = None;
    let mut got_msg = None;
    while got_ack.is_none() || got_msg.is_none() {
        let f = a.recv(WAIT).await.unwrap();
        match f["type"].as_str().unwrap() {
            "ack" => got_ack = Some(f),
            "message" => got_msg = Some(f),
            other => panic!("unexpected {other}"),
        }
    }
    let (ack, msg) = (got_ack.unwrap(), got_msg.unwrap());
    assert_eq!(ack["ref"], 7);
    assert_eq!(ack["room"], "lobby");
    assert_eq!(ack["id"], msg["id"]);
    assert_eq!(msg["content"], "hello");
    assert_eq!(msg["user_id"], "alice");
    assert_eq!(msg["username"], "alice-name");
    assert!(msg["ts"].as_str().unwrap().ends_with('Z'));
    let msg_b = b.recv_type("message", WAIT).await.unwrap();
    assert_eq!(msg_b, msg, "every recipient gets the same frame");

    // No ref: no ack.
    a.send(&json!({"type":"message","room":"lobby","content":"second"}))
        .await
        .unwrap();
    let m2 = a.recv(WAIT).await.unwrap();
    assert_eq!(m2["type"], "message");
    let id = |v: &serde_json::Value| {
        v["id"]
            .as_str()
            .unwrap()
            .parse::<wsgate_protocol::MessageId>()
            .unwrap()
    };
    assert!(id(&m2) > id(&msg), "ids sort in publish order");
    b.recv_type("message", WAIT).await.unwrap();

    let history = ask(
        &mut b,
        json!({"type":"history","room":"lobby","ref":"h"}),
        "history",
    )
    .await;
    assert_eq!(history["ref"], "h");
    let contents: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, vec![json!("hello"), json!("second")]);
    let before = ask(
        &mut b,
        json!({"type":"history","room":"lobby","before":m2["id"],"limit":1}),
        "history",
    )
    .await;
    assert_eq!(before["messages"], json!([msg]));

    let pong = ask(&mut a, json!({"type":"ping","ref":99}), "pong").await;
    assert_eq!(pong, json!({"type":"pong","ref":99}));

    let left = ask(
        &mut b,
        json!({"type":"leave","room":"lobby","ref":1}),
        "left",
    )
    .await;
    assert_eq!(left, json!({"type":"left","ref":1,"room":"lobby"}));
    assert_eq!(presence_of(&mut a, "bob").await, "leave");
    // Bob no longer gets the room's messages.
    a.send(&json!({"type":"message","room":"lobby","content":"after"}))
        .await
        .unwrap();
    a.recv_type("message", WAIT).await.unwrap();
    assert_quiet(&mut b, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn typing_is_broadcast_and_expires_after_five_seconds() {
    let gw = Gateway::start(&[]);
    let (mut a, _) = gw.connect("alice").await;
    let (mut b, _) = gw.connect("bob").await;
    join(&mut a, "t").await;
    join(&mut b, "t").await;
    a.send(&json!({"type":"typing","room":"t","is_typing":true}))
        .await
        .unwrap();
    let t = b.recv_type("typing", WAIT).await.unwrap();
    assert_eq!(
        t,
        json!({"type":"typing","room":"t","users":[{"user_id":"alice","username":"alice-name"}]})
    );
    let started = std::time::Instant::now();
    // Nobody clears it: the server does, about 5 s later.
    let t = b
        .recv_type("typing", Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(t["users"], json!([]));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(4500),
        "expired too early: {elapsed:?}"
    );
    // An explicit stop is announced at once.
    a.send(&json!({"type":"typing","room":"t","is_typing":true}))
        .await
        .unwrap();
    b.recv_type("typing", WAIT).await.unwrap();
    a.send(&json!({"type":"typing","room":"t","is_typing":false}))
        .await
        .unwrap();
    let t = b.recv_type("typing", WAIT).await.unwrap();
    assert_eq!(t["users"], json!([]));
}

#[tokio::test]
async fn direct_reaches_every_session_of_the_user_and_presence_counts_sessions() {
    let gw = Gateway::start(&[]);
    let (mut bob1, _) = gw.connect("bob").await;
    let (mut bob2, _) = gw.connect("bob").await;
    let (mut alice, _) = gw.connect("alice").await;
    let ack = ask(
        &mut alice,
        json!({"type":"direct","to":"bob","content":"psst","ref":"d"}),
        "ack",
    )
    .await;
    assert_eq!(ack["ref"], "d");
    assert!(ack.get("room").is_none());
    for bob in [&mut bob1, &mut bob2] {
        let d = bob.recv_type("direct", WAIT).await.unwrap();
        assert_eq!(d["id"], ack["id"]);
        assert_eq!(
            d["from"],
            json!({"user_id":"alice","username":"alice-name"})
        );
        assert_eq!(d["content"], "psst");
    }
    assert_quiet(&mut alice, Duration::from_millis(200)).await;

    join(&mut alice, "p").await;
    join(&mut bob1, "p").await;
    assert_eq!(presence_of(&mut alice, "bob").await, "join");
    let joined = join(&mut bob2, "p").await;
    assert_eq!(
        joined["members"].as_array().unwrap().len(),
        2,
        "bob counted once"
    );
    // The second session of bob is not a new presence.
    ask(&mut bob1, json!({"type":"leave","room":"p"}), "left").await;
    assert_quiet(&mut alice, Duration::from_millis(500)).await;
    // The last one leaving is.
    drop(bob2);
    assert_eq!(presence_of(&mut alice, "bob").await, "leave");
}

#[tokio::test]
async fn http_endpoints() {
    let gw = Gateway::start(&["--node-id", "gw-h", "--max-connections", "50"]);
    let (status, _, body) = gw.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = gw.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (_c, _) = gw.connect("u1").await;
    let (status, _, body) = gw.get("/api/stats").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["node_id"], "gw-h");
    assert_eq!(stats["active_connections"], 1);
    assert_eq!(stats["capacity"], 50);
    assert_eq!(stats["utilization"], 0.02);
    assert!(stats["uptime_s"].is_u64() && stats["rooms"].is_u64());
    let (status, head, body) = gw.get("/ws").await;
    assert_eq!(status, 426, "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));
    assert!(body.contains("upgrade_required"));
    let (status, _, body) = gw.get("/nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]["code"],
        "not_found"
    );
    let (status, _, body) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "wsgate_connections_active 1",
        "wsgate_connections_total 1",
        "wsgate_frames_out_total{type=\"welcome\"} 1",
        "wsgate_fanout_deliveries_total",
        "wsgate_errors_total{code=\"bad_json\"} 0",
        "wsgate_closes_total{code=\"1013\"} 0",
        "wsgate_slow_consumer_closes_total 0",
    ] {
        assert!(body.contains(name), "metrics lack {name}:\n{body}");
    }
}
