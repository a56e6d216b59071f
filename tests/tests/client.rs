//! The Rust client: reconnect and resume against a gateway that is killed and
//! restarted; and `wsgate-cli` against a real gateway.

use std::time::Duration;

use serde_json::json;
use wsgate_client::reconnect::{Event, Options, Reconnecting};
use wsgate_e2e::{send_message, Gateway, RedisServer, WAIT};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn the_reconnecting_client_resumes_exactly_after_a_kill_and_restart() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [
        "--redis-url",
        url.as_str(),
        "--node-id",
        "gw-a",
        "--rate-limit",
        "1000",
    ];
    let addr = free_addr();
    let mut gw = Gateway::start_at(&addr, &args);
    let other = Gateway::start(&[
        "--redis-url",
        url.as_str(),
        "--node-id",
        "gw-b",
        "--rate-limit",
        "1000",
    ]);
    let opts = Options {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(400),
        ..Options::default()
    };
    let mut client = Reconnecting::start(&format!("ws://{addr}/ws?user_id=resumer"), opts);
    client.send(json!({"type":"join","room":"r"})).unwrap();
    // Connected and joined.
    loop {
        if let Event::Frame(f) = next(&mut client).await {
            if f["type"] == "joined" {
                break;
            }
        }
    }
    let (mut publisher, _) = other.connect("pub").await;
    wsgate_e2e::join(&mut publisher, "r").await;
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(send_message(&mut publisher, "r", &format!("a{i}")).await.0["id"].clone());
    }
    gw.kill9();
    // While the node is down: more messages, and a frame the client queues.
    for i in 0..5 {
        expected.push(send_message(&mut publisher, "r", &format!("b{i}")).await.0["id"].clone());
    }
    client
        .send(json!({"type":"message","room":"r","content":"queued while offline"}))
        .unwrap();
    let _gw2 = Gateway::start_at(&addr, &args);
    for i in 0..5 {
        expected.push(send_message(&mut publisher, "r", &format!("c{i}")).await.0["id"].clone());
    }
    let mut seen = Vec::new();
    let mut states = Vec::new();
    let mut queued_arrived = false;
    while seen.len() < expected.len() + 1 {
        match next(&mut client).await {
            Event::Frame(f) if f["type"] == "message" => {
                if f["content"] == "queued while offline" {
                    queued_arrived = true;
                } else {
                    seen.push(f["id"].clone());
                }
                if seen.len() == expected.len() && queued_arrived {
                    break;
                }
            }
            Event::Frame(f) if f["type"] == "joined" => assert_eq!(f["recovered"], true, "{f}"),
            Event::Closed(why) => panic!("stopped: {why}"),
            other => states.push(other),
        }
    }
    assert_eq!(seen, expected, "every message exactly once, in order");
    assert!(
        queued_arrived,
        "the frame queued while offline was sent after reconnecting"
    );
    assert!(
        states.iter().any(|s| matches!(s, Event::Reconnecting(_))),
        "{states:?}"
    );
}

async fn next(c: &mut Reconnecting) -> Event {
    tokio::time::timeout(WAIT, c.next())
        .await
        .expect("event")
        .expect("client running")
}

fn cli() -> std::path::PathBuf {
    wsgate_e2e::binary().with_file_name("wsgate-cli")
}

#[tokio::test]
async fn wsgate_cli_sends_tails_and_directs() {
    let gw = Gateway::start(&[]);
    let url = format!("ws://{}/ws", gw.addr);
    let mut tail = tokio::process::Command::new(cli())
        .args([
            "--url",
            &url,
            "--user-id",
            "watcher",
            "tail",
            "lobby",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wsgate-cli tail");
    // Wait until the tail has joined (its presence shows).
    // The tail may have joined before the probe (then it is in `members`) or after
    // (then its presence `join` comes).
    let (mut probe, _) = gw.connect("probe").await;
    let joined = wsgate_e2e::join(&mut probe, "lobby").await;
    let already = joined["members"]
        .as_array()
        .is_some_and(|m| m.iter().any(|u| u["user_id"] == "watcher"));
    if !already {
        assert_eq!(wsgate_e2e::presence_of(&mut probe, "watcher").await, "join");
    }
    let out = tokio::process::Command::new(cli())
        .args([
            "--url",
            &url,
            "--user-id",
            "alice",
            "send",
            "lobby",
            "hello from the cli",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(id.parse::<wsgate_protocol::MessageId>().is_ok(), "{id:?}");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let f: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (f["id"].as_str(), f["content"].as_str()),
        (Some(id.as_str()), Some("hello from the cli"))
    );
    let out = tokio::process::Command::new(cli())
        .args([
            "--url",
            &url,
            "--user-id",
            "alice",
            "direct",
            "probe",
            "psst",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let d = probe.recv_type("direct", WAIT).await.unwrap();
    assert_eq!(d["content"], "psst");
    tail.kill().await.unwrap();
}

#[tokio::test]
async fn the_reconnecting_client_follows_a_draining_node_s_hint() {
    let other = Gateway::start(&["--node-id", "gw-next"]);
    let next_url = other.ws_url("user_id=follower");
    let draining = Gateway::start(&[
        "--node-id",
        "gw-old",
        "--reconnect-url",
        next_url.as_str(),
        "--reconnect-window-ms",
        "300",
    ]);
    let mut client = Reconnecting::start(&draining.ws_url("user_id=follower"), Options::default());
    client.send(json!({"type":"join","room":"h"})).unwrap();
    loop {
        if let Event::Frame(f) = next(&mut client).await {
            if f["type"] == "joined" {
                break;
            }
        }
    }
    draining.terminate();
    // The hint comes first, then the close; the wait is the hinted delay, not a backoff.
    let hinted = loop {
        match next(&mut client).await {
            Event::Frame(f) if f["type"] == "reconnect" => break f["delay_ms"].as_u64().unwrap(),
            Event::Frame(_) => {}
            other => panic!("expected the hint first, got {other:?}"),
        }
    };
    assert!(hinted <= 300, "{hinted}");
    match next(&mut client).await {
        Event::Reconnecting(d) => assert_eq!(d, Duration::from_millis(hinted)),
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    // Back on the node the hint named, and the room rejoined there.
    let mut node = None;
    loop {
        match next(&mut client).await {
            Event::Frame(f) if f["type"] == "welcome" => {
                node = f["node_id"].as_str().map(String::from)
            }
            Event::Frame(f) if f["type"] == "joined" => break,
            _ => {}
        }
    }
    assert_eq!(node.as_deref(), Some("gw-next"));
}
