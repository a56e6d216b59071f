//! Cluster mode: several real `wsgate` processes on one real `redis-server`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wsgate_e2e::{ask, eventually, join, presence_of, send_message, Gateway, RedisServer, WAIT};

fn cluster(redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<Gateway> {
    (0..n)
        .map(|i| {
            let id = format!("gw-{}", i + 1);
            let url = redis.url();
            let mut args = vec![
                "--redis-url",
                url.as_str(),
                "--node-id",
                id.as_str(),
                "--rate-limit",
                "1000",
            ];
            args.extend_from_slice(extra);
            Gateway::start(&args)
        })
        .collect()
}

async fn ready(gw: &Gateway) -> bool {
    gw.get("/readyz").await.0 == 200
}

async fn all_ready(nodes: &[Gateway]) {
    for gw in nodes {
        eventually(WAIT, "node ready", || ready(gw)).await;
    }
}

async fn stats(gw: &Gateway) -> Value {
    serde_json::from_str(&gw.get("/api/stats").await.2).unwrap()
}

/// Reads `n` messages of `room`, skipping other frames; returns their ids.
async fn message_ids(c: &mut wsgate_client::Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let f = c.recv_type("message", WAIT).await.expect("message");
        ids.push(f["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn three_nodes_one_room_same_ids_same_order_and_members() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, &["--heartbeat-ms", "1000"]);
    all_ready(&nodes).await;
    let mut clients = Vec::new();
    for (i, gw) in nodes.iter().enumerate() {
        let (mut c, w) = gw.connect(&format!("user{i}")).await;
        assert_eq!(w["node_id"], format!("gw-{}", i + 1));
        join(&mut c, "r").await;
        clients.push(c);
    }
    // Member lists agree on every node.
    for c in clients.iter_mut() {
        let joined = ask(c, json!({"type":"join","room":"r"}), "joined").await;
        let members: Vec<_> = joined["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].clone())
            .collect();
        assert_eq!(
            members,
            vec![json!("user0"), json!("user1"), json!("user2")]
        );
    }
    // Every node's clients publish concurrently; messages that arrive while a client
    // waits for its ack are kept.
    let mut acked = Vec::new();
    let mut seen: Vec<Vec<String>> = vec![Vec::new(); 3];
    for round in 0..20 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(
                &json!({"type":"message","room":"r","content":format!("{i}-{round}"),"ref":round}),
            )
            .await
            .unwrap();
        }
        for (i, c) in clients.iter_mut().enumerate() {
            loop {
                let f = c.recv(WAIT).await.unwrap();
                match f["type"].as_str().unwrap() {
                    "message" => seen[i].push(f["id"].as_str().unwrap().to_owned()),
                    "ack" => {
                        acked.push(f["id"].as_str().unwrap().to_owned());
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let missing = 60 - seen[i].len();
        seen[i].extend(message_ids(c, missing).await);
    }
    assert_eq!(seen[0], seen[1], "node 1 and node 2 agree");
    assert_eq!(seen[0], seen[2], "node 1 and node 3 agree");
    let mut sorted = acked.clone();
    sorted.sort_by_key(|id| id.parse::<wsgate_protocol::MessageId>().unwrap());
    assert_eq!(seen[0], sorted, "every accepted message, in id order");
    // Cluster totals, refreshed by every node twice per heartbeat interval.
    eventually(
        WAIT,
        "cluster totals of 3 nodes and 3 connections",
        || async {
            let s = stats(&nodes[0]).await;
            s["cluster"]["nodes_alive"] == 3 && s["cluster"]["active_connections"] == 3
        },
    )
    .await;
}

#[tokio::test]
async fn direct_reaches_a_user_on_two_nodes_and_presence_is_cluster_wide() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, &[]);
    all_ready(&nodes).await;
    let (mut bob1, _) = nodes[0].connect("bob").await;
    let (mut bob2, _) = nodes[1].connect("bob").await;
    let (mut alice, _) = nodes[2].connect("alice").await;
    let ack = ask(
        &mut alice,
        json!({"type":"direct","to":"bob","content":"hi","ref":1}),
        "ack",
    )
    .await;
    for bob in [&mut bob1, &mut bob2] {
        let d = bob.recv_type("direct", WAIT).await.unwrap();
        assert_eq!(
            (d["id"].clone(), d["content"].clone()),
            (ack["id"].clone(), json!("hi"))
        );
    }
    join(&mut alice, "p").await;
    join(&mut bob1, "p").await;
    assert_eq!(presence_of(&mut alice, "bob").await, "join");
    let joined = join(&mut bob2, "p").await;
    assert_eq!(joined["members"].as_array().unwrap().len(), 2);
    // Bob's first session leaving is not a presence change; the second is.
    ask(&mut bob1, json!({"type":"leave","room":"p"}), "left").await;
    drop(bob2);
    assert_eq!(presence_of(&mut alice, "bob").await, "leave");
    // Typing crosses nodes too.
    let (mut carol, _) = nodes[0].connect("carol").await;
    join(&mut carol, "p").await;
    carol
        .send(&json!({"type":"typing","room":"p","is_typing":true}))
        .await
        .unwrap();
    let t = alice.recv_type("typing", WAIT).await.unwrap();
    assert_eq!(
        t["users"],
        json!([{"user_id":"carol","username":"carol-name"}])
    );
}

#[tokio::test]
async fn a_killed_node_leaves_presence_within_two_heartbeats() {
    let redis = RedisServer::start();
    let mut nodes = cluster(&redis, 2, &["--heartbeat-ms", "2000"]);
    all_ready(&nodes).await;
    let (mut watcher, _) = nodes[0].connect("watcher").await;
    join(&mut watcher, "r").await;
    let (mut doomed, _) = nodes[1].connect("doomed").await;
    join(&mut doomed, "r").await;
    assert_eq!(presence_of(&mut watcher, "doomed").await, "join");
    let killed = Instant::now();
    nodes[1].kill9();
    assert_eq!(presence_of(&mut watcher, "doomed").await, "leave");
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(4000 + 1000),
        "leave after {took:?} (two intervals: 4 s)"
    );
    let joined = ask(&mut watcher, json!({"type":"join","room":"r"}), "joined").await;
    assert_eq!(
        joined["members"],
        json!([{"user_id":"watcher","username":"watcher-name"}])
    );
    eventually(
        WAIT,
        "the dead node gone from the cluster totals",
        || async { stats(&nodes[0]).await["cluster"]["nodes_alive"] == 1 },
    )
    .await;
}

#[tokio::test]
async fn redis_outage_answers_unavailable_then_full_service_and_new_epochs() {
    let mut redis = RedisServer::start();
    let mut nodes = cluster(&redis, 2, &[]);
    all_ready(&nodes).await;
    let (mut a, _) = nodes[0].connect("a").await;
    let (mut b, _) = nodes[1].connect("b").await;
    let joined = join(&mut a, "r").await;
    join(&mut b, "r").await;
    let ack = ask(
        &mut a,
        json!({"type":"message","room":"r","content":"before","ref":1}),
        "ack",
    )
    .await;
    let old_since = ack["id"].as_str().unwrap().to_owned();
    let old_epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        b.recv_type("message", WAIT).await.unwrap()["content"],
        "before"
    );

    redis.stop();
    for gw in &nodes {
        eventually(WAIT, "readyz 503 during the outage", || async {
            gw.get("/readyz").await.0 == 503
        })
        .await;
    }
    let e = ask(
        &mut a,
        json!({"type":"message","room":"r","content":"lost?","ref":2}),
        "error",
    )
    .await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_i64()),
        (Some("unavailable"), Some(2))
    );
    let e = ask(
        &mut b,
        json!({"type":"direct","to":"a","content":"x","ref":3}),
        "error",
    )
    .await;
    assert_eq!(e["code"], "unavailable");
    // Clients stay connected.
    ask(&mut a, json!({"type":"ping"}), "pong").await;
    let (_, _, metrics) = nodes[0].get("/metrics").await;
    assert!(metrics.contains("wsgate_broker_up 0"), "{metrics}");

    redis.restart();
    all_ready(&nodes).await;
    for gw in nodes.iter_mut() {
        assert!(gw.is_running(), "no node exited");
    }
    // Delivery resumes across nodes (the room channel was resubscribed).
    let ack = ask(
        &mut a,
        json!({"type":"message","room":"r","content":"after","ref":4}),
        "ack",
    )
    .await;
    let after = b.recv_type("message", WAIT).await.unwrap();
    assert_eq!(
        (after["content"].as_str(), after["id"].clone()),
        (Some("after"), ack["id"].clone())
    );
    // Redis lost its data: the old (since, epoch) cannot be vouched for.
    let (mut c, _) = nodes[1].connect("c").await;
    c.send(&json!({"type":"join","room":"r","since":old_since,"epoch":old_epoch}))
        .await
        .unwrap();
    let mut replayed = Vec::new();
    let joined = loop {
        let f = c.recv(WAIT).await.unwrap();
        match f["type"].as_str().unwrap() {
            "message" => replayed.push(f["content"].clone()),
            "joined" => break f,
            _ => {}
        }
    };
    assert_eq!(joined["recovered"], false);
    assert_ne!(joined["epoch"], json!(old_epoch));
    assert_eq!(
        replayed,
        vec![json!("after")],
        "only what history holds now"
    );
    let (_, _, metrics) = nodes[0].get("/metrics").await;
    assert!(metrics.contains("wsgate_broker_up 1"), "{metrics}");
    assert!(
        metrics.contains("wsgate_broker_disconnects_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn rejoining_on_another_node_under_load_gets_exactly_what_was_missed() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, &[]);
    all_ready(&nodes).await;
    let (mut reader, _) = nodes[0].connect("reader").await;
    let joined = join(&mut reader, "r").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let url = nodes[1].ws_url("user_id=pump");
    let published = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = published.clone();
    let pump = tokio::spawn(async move {
        let mut c = wsgate_client::Client::connect(&url).await.unwrap();
        c.recv(WAIT).await.unwrap();
        join(&mut c, "r").await;
        let mut ids = Vec::new();
        for i in 0..300 {
            let ack = ask(
                &mut c,
                json!({"type":"message","room":"r","content":format!("p{i}"),"ref":i}),
                "ack",
            )
            .await;
            ids.push(ack["id"].as_str().unwrap().to_owned());
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ids
    });
    // Read a little, then leave while messages keep flowing: come back only once
    // at least 20 more were published in the meantime.
    let first = message_ids(&mut reader, 20).await;
    drop(reader);
    let at_leave = published.load(std::sync::atomic::Ordering::Relaxed);
    eventually(WAIT, "messages published while the reader is away", || {
        let published = published.clone();
        async move { published.load(std::sync::atomic::Ordering::Relaxed) >= at_leave + 20 }
    })
    .await;
    let (mut back, _) = nodes[2].connect("reader").await;
    back.send(&json!({"type":"join","room":"r","since":first[19],"epoch":epoch}))
        .await
        .unwrap();
    let mut seen = first.clone();
    let mut recovered = None;
    let all = pump.await.unwrap();
    while seen.len() < all.len() || recovered.is_none() {
        let f = back.recv(WAIT).await.unwrap();
        match f["type"].as_str().unwrap() {
            "message" => seen.push(f["id"].as_str().unwrap().to_owned()),
            "joined" => recovered = Some(f["recovered"].clone()),
            _ => {}
        }
    }
    assert_eq!(recovered, Some(json!(true)));
    assert_eq!(
        seen, all,
        "every message exactly once, in order, across the rejoin"
    );
}

#[tokio::test]
async fn a_node_starts_without_redis_and_becomes_ready_when_it_appears() {
    let mut redis = RedisServer::reserve();
    let gw = Gateway::start(&["--redis-url", &redis.url(), "--node-id", "early"]);
    let (status, _, body) = gw.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(gw.get("/healthz").await.0, 200);
    // Clients may connect; what needs Redis is refused, not lost.
    let (mut c, _) = gw.connect("early-bird").await;
    let e = ask(&mut c, json!({"type":"join","room":"r","ref":1}), "error").await;
    assert_eq!(e["code"], "unavailable");
    redis.restart();
    eventually(Duration::from_secs(20), "ready once Redis is up", || {
        ready(&gw)
    })
    .await;
    join(&mut c, "r").await;
    let (ack, msg) = send_message(&mut c, "r", "hi").await;
    assert_eq!(msg["id"], ack["id"]);
    // Logged once when Redis was missing, not on every retry.
    let unreachable = gw
        .logs()
        .iter()
        .filter(|l| l.contains("redis unreachable"))
        .count();
    assert_eq!(unreachable, 1);
}

#[tokio::test]
async fn a_room_channel_reaches_only_the_nodes_with_members() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 3, &[]);
    all_ready(&nodes).await;
    let numsub = |room: &str| redis.command(&["PUBSUB", "NUMSUB", &format!("wsgate:room:{room}")]);
    let (mut a, _) = nodes[0].connect("a").await;
    let (mut b, _) = nodes[1].connect("b").await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;
    assert!(numsub("r").ends_with(":2\r\n"), "{}", numsub("r"));
    ask(&mut b, json!({"type":"leave","room":"r"}), "left").await;
    // Unsubscribed after a short linger, since node 2 has no member left.
    eventually(WAIT, "node 2 unsubscribed", || async {
        numsub("r").ends_with(":1\r\n")
    })
    .await;
    // A message still reaches node 1's member.
    a.send(&json!({"type":"message","room":"r","content":"x"}))
        .await
        .unwrap();
    assert_eq!(a.recv_type("message", WAIT).await.unwrap()["content"], "x");
}

/// A client that sends a burst without waiting has its messages pipelined to Redis:
/// every one is stored and delivered in the order sent (to another node too), every
/// answer comes in the order of the frames (a refused message between them included),
/// and a command after the burst sees all of it.
#[tokio::test]
async fn a_pipelined_burst_keeps_its_order_and_its_answers_order() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2, &[]);
    all_ready(&nodes).await;
    pipelined_burst(&nodes[0], &nodes[1]).await;
}

/// The same on one node with the embedded broker.
#[tokio::test]
async fn a_pipelined_burst_keeps_its_order_on_the_embedded_broker() {
    let gw = Gateway::start(&["--rate-limit", "1000"]);
    pipelined_burst(&gw, &gw).await;
}

async fn pipelined_burst(node_a: &Gateway, node_b: &Gateway) {
    let (mut a, _) = node_a.connect("alice").await;
    let (mut b, _) = node_b.connect("bob").await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;
    const N: usize = 300;
    for i in 0..N {
        let room = if i == 150 { "not-joined" } else { "r" };
        a.send(&json!({"type":"message","room":room,"content":format!("m{i}"),"ref":i}))
            .await
            .unwrap();
    }
    a.send(&json!({"type":"history","room":"r","limit":1,"ref":"h"}))
        .await
        .unwrap();
    let mut last_id: Option<wsgate_protocol::MessageId> = None;
    let mut answers = 0;
    loop {
        let f = a.recv(WAIT).await.unwrap();
        match f["type"].as_str().unwrap() {
            "ack" => {
                assert_eq!(f["ref"], json!(answers), "acks in the order sent: {f}");
                let id: wsgate_protocol::MessageId = f["id"].as_str().unwrap().parse().unwrap();
                assert!(
                    last_id.is_none_or(|l| l < id),
                    "ids grow with the order sent: ack {answers} id {id} after {last_id:?}"
                );
                last_id = Some(id);
                answers += 1;
            }
            "error" => {
                assert_eq!(f["ref"], json!(150), "the refused one, in its place: {f}");
                assert_eq!(f["code"], "not_member");
                answers += 1;
            }
            "history" => {
                assert_eq!(answers, N, "history answered after every message");
                assert_eq!(f["messages"][0]["content"], format!("m{}", N - 1));
                break;
            }
            _ => {}
        }
    }
    let mut got = Vec::new();
    while got.len() < N - 1 {
        let f = b.recv_type("message", WAIT).await.unwrap();
        got.push(f["content"].as_str().unwrap().to_owned());
    }
    let want: Vec<String> = (0..N)
        .filter(|i| *i != 150)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(got, want, "delivered on the other node in the order sent");
}
