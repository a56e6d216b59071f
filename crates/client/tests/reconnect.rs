//! `reconnect::Reconnecting` over real sockets, against small in-process servers:
//! a `resync` reloaded in place (the reload holds what is up to `last_id`, live frames
//! after it come once, duplicates are dropped, the rejoin names the new epoch), a
//! draining node's `reconnect` hint (exactly its delay, to its URL), and a handshake
//! refused with 503 and `Retry-After` (waited out, plus at most a second).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use wsgate_client::reconnect::{Event, Options, Reconnecting};

const WAIT: Duration = Duration::from_secs(10);
const HINT_MS: u64 = 400;

type Ws = WebSocketStream<TcpStream>;

async fn put(ws: &mut Ws, f: Value) {
    ws.send(Message::Text(f.to_string().into()))
        .await
        .expect("send");
}

/// The next text frame the client sent, as JSON.
async fn take(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame from the client in time")
            .expect("open")
            .expect("read");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("json");
        }
    }
}

fn welcome(node: &str) -> Value {
    json!({"type":"welcome","protocol":1,"session_id":node,"node_id":node,
        "user_id":"me","username":"Me","heartbeat_ms":25000})
}

fn msg(id: &str) -> Value {
    json!({"type":"message","id":id,"room":"r","user_id":"u","username":"U","content":id,"ts":"t"})
}

async fn next(c: &mut Reconnecting) -> Event {
    tokio::time::timeout(WAIT, c.next())
        .await
        .expect("an event in time")
        .expect("the client runs")
}

#[tokio::test]
async fn a_resync_is_reloaded_in_place_then_a_hint_moves_the_client_after_its_delay() {
    let first = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let second = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let next_url = format!("ws://{}/ws", second.local_addr().expect("addr"));
    let url = format!("ws://{}/ws", first.local_addr().expect("addr"));
    // What the servers saw: (what, when).
    let (tx, mut seen) = mpsc::unbounded_channel::<(Value, Instant)>();

    let hint_url = next_url.clone();
    let tx1 = tx.clone();
    tokio::spawn(async move {
        let (tcp, _) = first.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("ws");
        put(&mut ws, welcome("one")).await;
        let join = take(&mut ws).await;
        assert_eq!(join, json!({"type":"join","room":"r"}));
        put(
            &mut ws,
            json!({"type":"joined","room":"r","members":[],"members_count":1,"members_more":false,
            "presence":"full","last_id":null,"epoch":"e1","recovered":true}),
        )
        .await;
        // 10-0 is newer than 9-0 (not as strings); the second 9-0 is a duplicate
        for id in ["9-0", "10-0", "9-0"] {
            put(&mut ws, msg(id)).await;
        }
        // Redis lost its data: the room stands at 20-1 in epoch e2
        put(
            &mut ws,
            json!({"type":"resync","room":"r","epoch":"e2","last_id":"20-1"}),
        )
        .await;
        put(&mut ws, msg("20-0")).await; // the reload's: dropped
        put(&mut ws, msg("20-2")).await; // live: handed over
        let reload = take(&mut ws).await;
        tx1.send((reload.clone(), Instant::now())).unwrap();
        let history = json!({"type":"history","ref":reload["ref"],"room":"r","more":false,
            "messages":[msg("19-0"), msg("20-0"), msg("20-1"), msg("20-2")]});
        put(&mut ws, history).await;
        put(&mut ws, msg("20-2")).await; // already handed over
        put(&mut ws, msg("21-0")).await;
        put(
            &mut ws,
            json!({"type":"reconnect","delay_ms":HINT_MS,"reason":"draining","url":hint_url}),
        )
        .await;
        let close = CloseFrame {
            code: CloseCode::Away,
            reason: "draining".into(),
        };
        ws.close(Some(close)).await.expect("close");
        tx1.send((json!("closed"), Instant::now())).unwrap();
        // the close handshake completes; the client does not come back here
        while let Some(Ok(_)) = ws.next().await {}
    });
    tokio::spawn(async move {
        let (tcp, _) = second.accept().await.expect("accept");
        let at = Instant::now();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("ws");
        put(&mut ws, welcome("two")).await;
        tx.send((take(&mut ws).await, at)).unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    });

    let mut c = Reconnecting::start(&url, Options::default());
    c.send(json!({"type":"join","room":"r"})).unwrap();
    let mut ids = Vec::new();
    let mut resync = None;
    let mut reloaded = None;
    let delay = loop {
        match next(&mut c).await {
            Event::Frame(f) if f["type"] == "message" => ids.push(f["id"].clone()),
            Event::Frame(f) if f["type"] == "history" => reloaded = Some(f),
            Event::Resync {
                room,
                epoch,
                last_id,
            } => resync = Some((room, epoch, last_id)),
            Event::Reconnecting(d) => break d,
            Event::Closed(why) => panic!("stopped: {why}"),
            _ => {}
        }
    };
    assert_eq!(
        ids,
        ["9-0", "10-0", "20-2", "21-0"],
        "each once, none of the reload's"
    );
    assert_eq!(resync, Some(("r".into(), "e2".into(), Some("20-1".into()))));
    let (reload, _) = seen.recv().await.expect("the reload request");
    assert_eq!(
        reload,
        json!({"type":"history","room":"r","limit":100,"ref":"resync:r"})
    );
    let reloaded = reloaded.expect("the reload's answer");
    assert_eq!(reloaded["ref"], "resync:r");
    let reload_ids: Vec<_> = reloaded["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(reload_ids, ["19-0", "20-0", "20-1"], "up to last_id only");
    // the hinted delay, exactly: no backoff, no jitter
    assert_eq!(delay, Duration::from_millis(HINT_MS));

    let (closed, closed_at) = seen.recv().await.expect("closed");
    assert_eq!(closed, "closed");
    let (rejoin, came_at) = tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("the client came to the hinted URL")
        .expect("rejoin");
    // the resume point of the resync and what came after it, in the new epoch
    assert_eq!(
        rejoin,
        json!({"type":"join","room":"r","since":"21-0","epoch":"e2"})
    );
    let waited = came_at - closed_at;
    assert!(
        waited >= Duration::from_millis(HINT_MS) - Duration::from_millis(5),
        "came back after {waited:?}, before the hinted {HINT_MS} ms"
    );
    assert!(
        waited < Duration::from_millis(HINT_MS) + Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(next(&mut c).await, Event::Open);
}

/// Reads an HTTP request head (up to the blank line).
async fn read_head(tcp: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.expect("read");
        assert!(n > 0, "the client hung up mid-request");
        head.extend_from_slice(&buf[..n]);
    }
}

async fn refuse(tcp: &mut TcpStream, retry_after: Option<u64>) {
    read_head(tcp).await;
    let retry = retry_after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
    let res = format!(
        "HTTP/1.1 503 Service Unavailable\r\n{retry}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(res.as_bytes()).await.expect("write");
    let _ = tcp.shutdown().await;
}

#[tokio::test]
async fn a_503_with_retry_after_is_waited_out_and_one_without_it_is_backed_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let (tx, mut handshakes) = mpsc::unbounded_channel::<Instant>();
    tokio::spawn(async move {
        // 503 + Retry-After: 1, then 503 without it, then accepted
        for retry in [Some(1), None] {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            tx.send(Instant::now()).unwrap();
            refuse(&mut tcp, retry).await;
        }
        let (tcp, _) = listener.accept().await.expect("accept");
        tx.send(Instant::now()).unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("ws");
        put(&mut ws, welcome("one")).await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    let options = Options {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(100),
        ..Options::default()
    };
    let mut c = Reconnecting::start(&url, options);
    let Event::Reconnecting(first) = next(&mut c).await else {
        panic!("expected Reconnecting after the 503")
    };
    assert!(
        first >= Duration::from_secs(1) && first < Duration::from_secs(2),
        "Retry-After 1 s plus less than a second: {first:?}"
    );
    let Event::Reconnecting(second) = next(&mut c).await else {
        panic!("expected Reconnecting after the second 503")
    };
    assert!(
        second <= Duration::from_millis(100),
        "the backoff: {second:?}"
    );
    assert_eq!(next(&mut c).await, Event::Open);
    let t: Vec<Instant> = [(); 3]
        .iter()
        .map(|_| handshakes.try_recv().expect("three handshakes"))
        .collect();
    assert!(
        t[1] - t[0] >= first - Duration::from_millis(5),
        "{:?} < {first:?}",
        t[1] - t[0]
    );
    assert!(
        t[1] - t[0] < first + Duration::from_secs(3),
        "{:?}",
        t[1] - t[0]
    );
    assert!(t[2] - t[1] < Duration::from_secs(3), "{:?}", t[2] - t[1]);
}
