//! The broker contract, held against every implementation through one suite
//! parameterised by a factory (the Redis broker joins it in cluster mode).

use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

use wsgate_broker::{
    open_envelope, Broker, BrokerEvent, Channel, MemoryBroker, RedisBroker, RedisSettings,
    SessionRef,
};
use wsgate_e2e::RedisServer;
use wsgate_protocol::server::{frame_id, Member, Notification, RestoreRoom, StoredEntry};
use wsgate_protocol::MessageId;

/// A broker under test, its event channel, and what keeps its backing store alive.
struct Made {
    b: Box<dyn Broker>,
    rx: mpsc::Receiver<BrokerEvent>,
    _redis: Option<RedisServer>,
}

type Factory = fn(usize) -> Pin<Box<dyn Future<Output = Made>>>;

fn memory(history_len: usize) -> Pin<Box<dyn Future<Output = Made>>> {
    Box::pin(async move {
        let (tx, rx) = mpsc::channel(1024);
        Made {
            b: Box::new(MemoryBroker::new(history_len, tx)),
            rx,
            _redis: None,
        }
    })
}

fn redis(history_len: usize) -> Pin<Box<dyn Future<Output = Made>>> {
    Box::pin(async move {
        let server = RedisServer::start();
        let (tx, mut rx) = mpsc::channel(1024);
        let b = RedisBroker::connect(
            RedisSettings {
                url: server.url(),
                prefix: "conformance".into(),
                node_id: "n1".into(),
                history_len,
                history_ttl: Duration::from_secs(3600),
                heartbeat: Duration::from_secs(1),
            },
            tx,
        )
        .unwrap();
        // Wait until its Pub/Sub connection is up.
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(BrokerEvent::Up)) => {}
            other => panic!("redis broker did not come up: {other:?}"),
        }
        Made {
            b: Box::new(b),
            rx,
            _redis: Some(server),
        }
    })
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

async fn ids_sort_in_publish_order_and_reach_subscribers(make: Factory) {
    let Made { b, mut rx, _redis } = make(100).await;
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

async fn history_pages_and_replay_is_exact(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
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
    // Publish far past the history length: Redis trims approximately (`MAXLEN ~`,
    // whole stream nodes), the memory broker exactly; the contract holds either way.
    for i in 3..300 {
        ids.push(
            b.publish_entry("h", &entry("h", &format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    let all = b.replay("h", MessageId::ZERO).await.unwrap();
    assert!(
        !all.complete,
        "entries were trimmed: a replay from the start must say so"
    );
    let kept: Vec<MessageId> = all.entries.iter().map(|e| e.0).collect();
    assert!(
        kept.len() >= 5 && kept.len() < ids.len(),
        "kept {}",
        kept.len()
    );
    let k = ids.len() - kept.len();
    assert_eq!(kept, ids[k..], "what is kept is the newest, in order");
    // From the first kept id, the replay is complete and exact…
    let r = b.replay("h", ids[k]).await.unwrap();
    assert!(r.complete, "nothing after ids[k] was trimmed");
    assert_eq!(
        r.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
        ids[k + 1..]
    );
    // … from the newest trimmed id a broker may vouch (the memory broker knows that id)
    // or not (Redis does not record it), but what it replays is exact…
    let r = b.replay("h", ids[k - 1]).await.unwrap();
    assert_eq!(r.entries.iter().map(|e| e.0).collect::<Vec<_>>(), ids[k..]);
    // … and from anything older it never vouches.
    assert!(!b.replay("h", ids[k - 2]).await.unwrap().complete);
    assert!(!b.replay("h", ids[0]).await.unwrap().complete);
    let n = ids.len();
    let id_of = |f: &bytes::Bytes| frame_id(std::str::from_utf8(f).unwrap()).unwrap();
    let page = b.history("h", None, 2).await.unwrap();
    assert_eq!(page.iter().map(id_of).collect::<Vec<_>>(), ids[n - 2..]);
    let page = b.history("h", Some(ids[n - 2]), 3).await.unwrap();
    assert_eq!(
        page.iter().map(id_of).collect::<Vec<_>>(),
        ids[n - 5..n - 2]
    );
}

async fn presence_counts_sessions(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
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

async fn typing_expires(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
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

fn notification(user: &str, id: &str) -> Notification {
    Notification {
        id: id.into(),
        user_id: user.into(),
        kind: "info".into(),
        title: format!("t{id}"),
        body: "b".into(),
        action_url: None,
        // Application data that looks like the read flag must not confuse anything.
        data: Some(serde_json::json!({"read": false, "x": "|0|"})),
        ts: "2026-01-01T00:00:00.000Z".into(),
        read: false,
    }
}

async fn notifications_are_capped_listed_marked_and_published(make: Factory) {
    let Made { b, mut rx, _redis } = make(5).await;
    let ttl = Duration::from_secs(3600);
    b.subscribe(&Channel::User("u".into())).await.unwrap();
    let batch: Vec<_> = (1..=4)
        .map(|i| notification("u", &format!("n{i}")))
        .collect();
    let mut with_other = batch.clone();
    with_other.push(notification("v", "m1"));
    assert_eq!(
        b.notify(&with_other, 3, ttl).await.unwrap(),
        vec![1, 2, 3, 3, 1]
    );
    for i in 1..=4 {
        let (ch, frame) = next_frame(&mut rx).await;
        assert_eq!(ch, Channel::User("u".into()));
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "notification");
        assert_eq!(v["notification"]["id"], format!("n{i}"));
        assert_eq!(v["notification"]["read"], false);
        assert_eq!(v["unread"], i.min(3));
    }
    // Capped at 3, newest first; the data field is intact.
    let (items, unread) = b.notifications("u", 10, None, false, ttl).await.unwrap();
    assert_eq!(
        items.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n4", "n3", "n2"]
    );
    assert_eq!(items[0], notification("u", "n4"));
    assert_eq!(unread, 3);
    let (items, _) = b
        .notifications("u", 1, Some("n4"), false, ttl)
        .await
        .unwrap();
    assert_eq!(
        items.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n3"]
    );
    // Marking read publishes to the other sessions (the origin is named to be skipped).
    let (ids, unread) = b
        .mark_read("u", Some(&["n3".into(), "nope".into()]), "s1", ttl)
        .await
        .unwrap();
    assert_eq!((ids, unread), (vec!["n3".to_string()], 2));
    let (_, frame) = next_frame(&mut rx).await;
    let (skip, body) = open_envelope(frame.as_bytes());
    assert_eq!(skip, Some("s1"));
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"notifications_read","ids":["n3"],"unread":2})
    );
    let (items, _) = b.notifications("u", 10, None, true, ttl).await.unwrap();
    assert_eq!(
        items.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n4", "n2"]
    );
    let (ids, unread) = b.mark_read("u", None, "s1", ttl).await.unwrap();
    assert_eq!((ids.len(), unread), (2, 0));
    assert_eq!(b.unread("u", ttl).await.unwrap(), 0);
    assert_eq!(b.unread("v", ttl).await.unwrap(), 1);
    assert_eq!(b.unread("nobody", ttl).await.unwrap(), 0);
}

async fn notifications_expire(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
    let ttl = Duration::from_millis(300);
    b.notify(&[notification("u", "old")], 10, ttl)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.notify(&[notification("u", "new")], 10, ttl)
        .await
        .unwrap();
    let (items, unread) = b.notifications("u", 10, None, false, ttl).await.unwrap();
    assert_eq!(
        items.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
    assert_eq!(unread, 1);
}

async fn restore_state_is_merged_and_taken_once(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
    let ttl = Duration::from_secs(60);
    let room = |r: &str, id: Option<&str>| RestoreRoom {
        room: r.into(),
        last_id: id.map(String::from),
        epoch: "e1".into(),
    };
    assert_eq!(b.take_restore("u").await.unwrap(), None);
    b.save_restore("u", &[room("a", Some("1-0")), room("b", None)], ttl)
        .await
        .unwrap();
    b.save_restore("u", &[room("a", Some("2-0"))], ttl)
        .await
        .unwrap();
    let got = b.take_restore("u").await.unwrap().unwrap();
    assert_eq!(got.rooms, vec![room("a", Some("2-0")), room("b", None)]);
    assert_eq!(b.take_restore("u").await.unwrap(), None, "taken once");
    b.save_restore("u", &[room("a", None)], Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(b.take_restore("u").await.unwrap(), None, "expired");
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
        typing_expires,
        notifications_are_capped_listed_marked_and_published,
        notifications_expire,
        restore_state_is_merged_and_taken_once
    );
}

mod redis_broker {
    suite!(
        super::redis,
        ids_sort_in_publish_order_and_reach_subscribers,
        history_pages_and_replay_is_exact,
        presence_counts_sessions,
        typing_expires,
        notifications_are_capped_listed_marked_and_published,
        notifications_expire,
        restore_state_is_merged_and_taken_once
    );
}
