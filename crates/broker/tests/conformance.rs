//! The broker contract, held against every implementation through one suite
//! parameterised by a factory (the Redis broker joins it in cluster mode).

use std::time::Duration;

use tokio::sync::mpsc;
use wsgate_broker::{Broker, BrokerEvent, Channel, MemoryBroker, SessionRef};
use wsgate_protocol::server::{frame_id, Member, StoredEntry};
use wsgate_protocol::MessageId;

type Made = (Box<dyn Broker>, mpsc::Receiver<BrokerEvent>);

fn memory(history_len: usize) -> Made {
    let (tx, rx) = mpsc::channel(1024);
    (Box::new(MemoryBroker::new(history_len, tx)), rx)
}

fn member(id: &str) -> Member {
    Member {
        user_id: id.into(),
        username: id.to_uppercase(),
    }
}

fn entry(room: &str, text: &str) -> StoredEntry {
    StoredEntry::message(room, &member("a"), text, "2026-01-01T00:00:00.000Z")
}

async fn next_frame(rx: &mut mpsc::Receiver<BrokerEvent>) -> (Channel, String) {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(BrokerEvent::Message { channel, frame })) => {
            (channel, String::from_utf8(frame.to_vec()).unwrap())
        }
        other => panic!("no frame: {other:?}"),
    }
}

async fn ids_sort_in_publish_order_and_reach_subscribers(make: fn(usize) -> Made) {
    let (b, mut rx) = make(100);
    let room = Channel::Room("r1".into());
    // Not subscribed: nothing arrives.
    b.publish_entry("r1", &entry("r1", "before")).await.unwrap();
    b.subscribe(&room).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            b.publish_entry("r1", &entry("r1", &format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        let (ch, frame) = next_frame(&mut rx).await;
        assert_eq!(ch, room);
        assert_eq!(frame_id(&frame), Some(*id));
        assert!(frame.contains(&format!("\"content\":\"m{i}\"")));
    }
    b.unsubscribe(&room).await.unwrap();
    b.publish_entry("r1", &entry("r1", "after")).await.unwrap();
    b.publish(&room, "{\"type\":\"typing\"}".into())
        .await
        .unwrap();
    assert!(rx.try_recv().is_err());
}

async fn history_pages_and_replay_is_exact(make: fn(usize) -> Made) {
    let (b, _rx) = make(5);
    let st = b.room_state("h").await.unwrap();
    assert_eq!(st.last_id, None);
    let empty = b.replay("h", MessageId::ZERO).await.unwrap();
    assert!(empty.complete && empty.entries.is_empty());
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            b.publish_entry("h", &entry("h", &format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    let r = b.replay("h", ids[0]).await.unwrap();
    assert!(r.complete);
    assert_eq!(r.entries.iter().map(|e| e.0).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(r.state.last_id, Some(ids[2]));
    // A since from the future is not vouched for.
    assert!(!b.replay("h", ids[2].next()).await.unwrap().complete);
    for i in 3..8 {
        ids.push(
            b.publish_entry("h", &entry("h", &format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    // Eight published, five kept: ids[0..3] trimmed.
    let r = b.replay("h", ids[1]).await.unwrap();
    assert!(!r.complete, "a replay across trimmed entries must say so");
    assert_eq!(r.entries.len(), 5);
    let r = b.replay("h", ids[2]).await.unwrap();
    assert!(r.complete, "nothing after ids[2] was trimmed");
    assert_eq!(r.entries.iter().map(|e| e.0).collect::<Vec<_>>(), ids[3..]);
    let page = b.history("h", None, 2).await.unwrap();
    assert_eq!(
        page.iter()
            .map(|f| frame_id(std::str::from_utf8(f).unwrap()).unwrap())
            .collect::<Vec<_>>(),
        ids[6..]
    );
    let page = b.history("h", Some(ids[6]), 10).await.unwrap();
    assert_eq!(
        page.iter()
            .map(|f| frame_id(std::str::from_utf8(f).unwrap()).unwrap())
            .collect::<Vec<_>>(),
        ids[3..6]
    );
}

async fn presence_counts_sessions(make: fn(usize) -> Made) {
    let (b, _rx) = make(5);
    let s1 = SessionRef {
        session_id: "s1".into(),
        user: member("u"),
    };
    let s2 = SessionRef {
        session_id: "s2".into(),
        user: member("u"),
    };
    let s3 = SessionRef {
        session_id: "s3".into(),
        user: member("v"),
    };
    assert!(b.presence_add("p", &s1).await.unwrap());
    assert!(!b.presence_add("p", &s2).await.unwrap());
    assert!(b.presence_add("p", &s3).await.unwrap());
    assert_eq!(
        b.presence_members("p").await.unwrap(),
        vec![member("u"), member("v")]
    );
    assert!(!b.presence_remove("p", &s1).await.unwrap());
    assert!(b.presence_remove("p", &s2).await.unwrap());
    assert!(
        !b.presence_remove("p", &s2).await.unwrap(),
        "removing twice is not a second leave"
    );
    assert_eq!(b.presence_members("p").await.unwrap(), vec![member("v")]);
}

async fn typing_expires(make: fn(usize) -> Made) {
    let (b, _rx) = make(5);
    let ttl = Duration::from_millis(200);
    assert_eq!(
        b.typing_set("t", &member("u"), true, ttl).await.unwrap(),
        vec![member("u")]
    );
    assert_eq!(
        b.typing_set("t", &member("v"), true, Duration::from_secs(60))
            .await
            .unwrap(),
        vec![member("u"), member("v")]
    );
    assert_eq!(b.typing_expire("t").await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.typing_expire("t").await.unwrap(), Some(vec![member("v")]));
    assert_eq!(
        b.typing_set("t", &member("v"), false, ttl).await.unwrap(),
        vec![]
    );
}

macro_rules! suite {
    ($make:expr, $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$name($make).await;
            }
        )*
    };
}

mod memory_broker {
    suite!(
        super::memory,
        ids_sort_in_publish_order_and_reach_subscribers,
        history_pages_and_replay_is_exact,
        presence_counts_sessions,
        typing_expires
    );
}
