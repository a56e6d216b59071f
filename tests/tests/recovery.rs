//! Recovery is exact or it says so.

use serde_json::{json, Value};
use wsgate_e2e::{ask, join, Gateway, WAIT};

async fn publish(c: &mut wsgate_client::Client, room: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let ack = ask(
            c,
            json!({"type":"message","room":room,"content":format!("m{i}"),"ref":i}),
            "ack",
        )
        .await;
        ids.push(ack["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Joins with `since`/`epoch`; returns (replayed ids, joined).
async fn rejoin(
    c: &mut wsgate_client::Client,
    room: &str,
    since: &str,
    epoch: Option<&str>,
) -> (Vec<String>, Value) {
    let mut frame = json!({"type":"join","room":room,"since":since});
    if let Some(e) = epoch {
        frame["epoch"] = json!(e);
    }
    c.send(&frame).await.unwrap();
    let mut ids = Vec::new();
    loop {
        let f = c.recv(WAIT).await.unwrap();
        match f["type"].as_str().unwrap() {
            "message" => ids.push(f["id"].as_str().unwrap().to_owned()),
            "joined" => return (ids, f),
            "presence" => {}
            other => panic!("unexpected {other}: {f}"),
        }
    }
}

#[tokio::test]
async fn since_replays_exactly_what_was_missed() {
    let gw = Gateway::start(&[]);
    let (mut writer, _) = gw.connect("w").await;
    join(&mut writer, "r").await;
    let (mut reader, _) = gw.connect("r").await;
    let first = join(&mut reader, "r").await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let ids = publish(&mut writer, "r", 3).await;
    for id in &ids {
        assert_eq!(
            reader.recv_type("message", WAIT).await.unwrap()["id"],
            json!(id)
        );
    }
    drop(reader);
    let missed = publish(&mut writer, "r", 4).await;
    let (mut back, _) = gw.connect("r").await;
    let (replayed, joined) = rejoin(&mut back, "r", &ids[2], Some(&epoch)).await;
    assert_eq!(replayed, missed);
    assert_eq!(joined["recovered"], true);
    assert_eq!(joined["epoch"], json!(epoch));
    assert_eq!(joined["last_id"], json!(missed[3]));
    // Then live, with no duplicate.
    let live = publish(&mut writer, "r", 1).await;
    assert_eq!(
        back.recv_type("message", WAIT).await.unwrap()["id"],
        json!(live[0])
    );
    // Nothing missed: nothing replayed, still recovered.
    let (mut again, _) = gw.connect("r2").await;
    let (replayed, joined) = rejoin(&mut again, "r", &live[0], Some(&epoch)).await;
    assert!(replayed.is_empty());
    assert_eq!(joined["recovered"], true);
    // From the beginning of an untrimmed room.
    let (mut fresh, _) = gw.connect("r3").await;
    let (replayed, joined) = rejoin(&mut fresh, "r", "0-0", Some(&epoch)).await;
    assert_eq!(replayed.len(), 8);
    assert_eq!(joined["recovered"], true);
    // A wrong epoch is never vouched for.
    let (mut other, _) = gw.connect("r4").await;
    let (_, joined) = rejoin(&mut other, "r", &ids[2], Some("someotherepoch")).await;
    assert_eq!(joined["recovered"], false);
}

#[tokio::test]
async fn trimmed_history_answers_recovered_false() {
    let gw = Gateway::start(&["--history-len", "5"]);
    let (mut writer, _) = gw.connect("w").await;
    let joined = join(&mut writer, "r").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let ids = publish(&mut writer, "r", 10).await;
    let (mut c, _) = gw.connect("c").await;
    let (replayed, joined) = rejoin(&mut c, "r", &ids[1], Some(&epoch)).await;
    assert_eq!(joined["recovered"], false, "ids[2..5] were trimmed");
    assert_eq!(replayed, ids[5..].to_vec(), "what history still holds");
    let (mut d, _) = gw.connect("d").await;
    let (replayed, joined) = rejoin(&mut d, "r", &ids[4], Some(&epoch)).await;
    assert_eq!(
        joined["recovered"], true,
        "nothing after ids[4] was trimmed"
    );
    assert_eq!(replayed, ids[5..].to_vec());
}

#[tokio::test]
async fn a_restarted_gateway_has_a_new_epoch() {
    let gw = Gateway::start(&[]);
    let (mut c, _) = gw.connect("c").await;
    let joined = join(&mut c, "r").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let ids = publish(&mut c, "r", 2).await;
    drop(c);
    drop(gw);
    let gw = Gateway::start(&[]);
    let (mut c, _) = gw.connect("c").await;
    let (replayed, joined) = rejoin(&mut c, "r", &ids[1], Some(&epoch)).await;
    assert!(replayed.is_empty());
    assert_eq!(joined["recovered"], false);
    assert_ne!(joined["epoch"], json!(epoch));
    assert_eq!(joined["last_id"], json!(null));
}

#[tokio::test]
async fn messages_published_during_a_rejoin_are_neither_lost_nor_duplicated() {
    let gw = Gateway::start(&["--rate-limit", "100000"]);
    let (mut writer, _) = gw.connect("w").await;
    let joined = join(&mut writer, "r").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let pre = publish(&mut writer, "r", 20).await;
    // Publish continuously while clients rejoin from the start.
    let addr = gw.addr.clone();
    let pump = tokio::spawn(async move {
        let mut c = wsgate_client::Client::connect(&format!("ws://{addr}/ws?user_id=pump"))
            .await
            .unwrap();
        c.recv(WAIT).await.unwrap();
        join(&mut c, "r").await;
        let mut ids = Vec::new();
        for i in 0..200 {
            let ack = ask(
                &mut c,
                json!({"type":"message","room":"r","content":format!("p{i}"),"ref":i}),
                "ack",
            )
            .await;
            ids.push(ack["id"].as_str().unwrap().to_owned());
        }
        ids
    });
    let mut readers = Vec::new();
    for i in 0..5 {
        let (c, _) = gw.connect(&format!("reader{i}")).await;
        readers.push(c);
    }
    let mut seen_all = Vec::new();
    for c in readers.iter_mut() {
        let (replayed, joined) = rejoin(c, "r", "0-0", Some(&epoch)).await;
        assert_eq!(joined["recovered"], true);
        seen_all.push(replayed);
    }
    let pumped = pump.await.unwrap();
    let mut expected = pre.clone();
    expected.extend(pumped);
    for (c, mut seen) in readers.iter_mut().zip(seen_all) {
        while seen.len() < expected.len() {
            let f = c.recv(WAIT).await.unwrap();
            if f["type"] == "message" {
                seen.push(f["id"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(seen, expected, "exactly every message once, in order");
    }
}
