//! Session life: close codes, slow consumers, heartbeat, capacity, graceful shutdown.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use wsgate_e2e::{ask, join, presence_of, Gateway, WAIT};

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let gw = Gateway::start(&[]);
    let (mut c, _) = gw.connect("a").await;
    c.send_raw(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(1003));
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let gw = Gateway::start(&[]);
    let (mut c, _) = gw.connect("a").await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    c.send_raw(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(1007));
}

#[tokio::test]
async fn oversized_messages_close_with_1009_and_bystanders_are_unharmed() {
    let gw = Gateway::start(&["--max-message-bytes", "1000"]);
    let (mut a, _) = gw.connect("a").await;
    let (mut b, _) = gw.connect("b").await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;
    // Content just over the limit: an error, not a close.
    let e = ask(
        &mut a,
        json!({"type":"message","room":"r","content":"x".repeat(1001)}),
        "error",
    )
    .await;
    assert_eq!(e["code"], "invalid_field");
    // A message over the limit plus the 4 KiB envelope allowance: 1009.
    let huge = json!({"type":"message","room":"r","content":"x".repeat(6000)}).to_string();
    a.send_raw(Message::Text(huge.into())).await.unwrap();
    assert_eq!(a.closed(WAIT).await.unwrap(), Some(1009));
    assert_eq!(presence_of(&mut b, "a").await, "leave");
    ask(&mut b, json!({"type":"ping"}), "pong").await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1013_and_others_get_everything_in_order() {
    let gw = Gateway::start(&[
        "--send-queue",
        "16",
        "--rate-limit",
        "100000",
        "--max-message-bytes",
        "65536",
    ]);
    let (mut slow, _) = gw.connect("slow").await;
    let (mut fast, _) = gw.connect("fast").await;
    let (mut publisher, _) = gw.connect("pub").await;
    join(&mut slow, "r").await;
    join(&mut fast, "r").await;
    join(&mut publisher, "r").await;
    // The slow client reads nothing from here on. Enough data to fill the kernel's
    // socket buffers and then its queue: 400 × 60 KB = 24 MB.
    let content = "x".repeat(60_000);
    let total = 400;
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < total {
            let f = fast
                .recv(Duration::from_secs(30))
                .await
                .expect("fast client keeps receiving");
            if f["type"] == "message" {
                assert_eq!(f["content"].as_str().map(str::len), Some(60_000));
                ids.push(
                    f["id"]
                        .as_str()
                        .unwrap()
                        .parse::<wsgate_protocol::MessageId>()
                        .unwrap(),
                );
            }
        }
        ids
    });
    for i in 0..total {
        publisher
            .send(&json!({"type":"message","room":"r","content":content,"ref":i}))
            .await
            .unwrap();
        // Keep the publisher's own queue drained.
        while let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(0),
            publisher.recv(Duration::from_millis(1)),
        )
        .await
        {}
    }
    // Now the slow client reads: whatever was buffered, then the 1013 close.
    let slow_close = tokio::spawn(async move { slow.closed(Duration::from_secs(30)).await });
    let ids = reader.await.unwrap();
    assert_eq!(ids.len(), total);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert_eq!(slow_close.await.unwrap().unwrap(), Some(1013));
    let (_, _, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains("wsgate_slow_consumer_closes_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn silent_peers_are_dropped_after_two_heartbeats_and_cleaned_up() {
    let gw = Gateway::start(&["--heartbeat-ms", "300"]);
    let (mut watcher, w) = gw.connect("watcher").await;
    assert_eq!(w["heartbeat_ms"], 300);
    join(&mut watcher, "r").await;
    // A raw client: handshake, join, then silence (it never answers pings).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    raw.write_all(
        b"GET /ws?user_id=ghost HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        raw.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // A masked client text frame: {"type":"join","room":"r"}
    let payload = br#"{"type":"join","room":"r"}"#;
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    raw.write_all(&frame).await.unwrap();
    assert_eq!(presence_of(&mut watcher, "ghost").await, "join");
    // … and starts typing: {"type":"typing","room":"r","is_typing":true}
    let payload = br#"{"type":"typing","room":"r","is_typing":true}"#;
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    raw.write_all(&frame).await.unwrap();
    let t = watcher.recv_type("typing", WAIT).await.unwrap();
    assert_eq!(t["users"][0]["user_id"], "ghost");
    let started = Instant::now();
    // When the ghost is dropped, its typing flag goes with it, long before the 5 s expiry.
    let t = watcher.recv_type("typing", WAIT).await.unwrap();
    assert_eq!(t["users"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The watcher answers pings (its client reads), so it stays; the ghost goes.
    assert_eq!(presence_of(&mut watcher, "ghost").await, "leave");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The ghost's socket was closed by the server.
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true));
    ask(&mut watcher, json!({"type":"ping"}), "pong").await;
}

#[tokio::test]
async fn at_capacity_the_handshake_gets_503_with_retry_after() {
    let gw = Gateway::start(&["--max-connections", "2"]);
    let (_a, _) = gw.connect("a").await;
    let (b, _) = gw.connect("b").await;
    match wsgate_client::Client::connect(&gw.ws_url("user_id=c")).await {
        Err(wsgate_client::Error::Ws(tokio_tungstenite::tungstenite::Error::Http(res))) => {
            assert_eq!(res.status().as_u16(), 503);
            assert_eq!(
                res.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1")
            );
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // A slot frees when a client leaves.
    b.close().await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match wsgate_client::Client::connect(&gw.ws_url("user_id=c")).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    }
}

#[tokio::test]
async fn sigterm_closes_every_session_with_1001_and_exits_0() {
    let mut gw = Gateway::start(&["--shutdown-timeout-ms", "3000"]);
    let (mut a, _) = gw.connect("a").await;
    let (mut b, _) = gw.connect("b").await;
    // `c` will not read during the drain, so it does not answer the close frame and
    // keeps the node draining until the deadline.
    let (mut c, _) = gw.connect("c").await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;
    assert_eq!(presence_of(&mut a, "b").await, "join");
    let started = Instant::now();
    gw.terminate();
    assert_eq!(a.closed(WAIT).await.unwrap(), Some(1001));
    assert_eq!(b.closed(WAIT).await.unwrap(), Some(1001));
    // While draining: not ready, and new sessions are refused with 503 + Retry-After.
    let (status, _, body) = gw.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    match wsgate_client::Client::connect(&gw.ws_url("user_id=late")).await {
        Err(wsgate_client::Error::Ws(tokio_tungstenite::tungstenite::Error::Http(res))) => {
            assert_eq!(res.status().as_u16(), 503);
            assert!(res.headers().contains_key("retry-after"));
        }
        other => panic!("expected 503 while draining, got {:?}", other.map(|_| ())),
    }
    let status = gw.wait_exit(Duration::from_secs(15)).expect("exited");
    assert!(status.success(), "exit status {status:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    assert!(gw.logs().iter().any(|l| l.contains("shutdown complete")));
    // The close frame was written to `c` before the exit.
    assert_eq!(c.closed(WAIT).await.unwrap(), Some(1001));
}
