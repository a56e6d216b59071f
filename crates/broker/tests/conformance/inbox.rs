//! [`wsgate_broker::Inbox`]: notifications (capped, listed, marked, expiring, their
//! frames byte for byte) and the saved session state.

use std::time::Duration;

use wsgate_broker::{open_envelope, Channel};
use wsgate_protocol::server::{Notification, RestoreRoom, ServerFrame};

use crate::{next_frame, Factory, Made};

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
    let Made {
        b: backend,
        mut rx,
        _redis,
    } = make(5).await;
    let b = backend.inbox;
    let ttl = Duration::from_secs(3600);
    backend
        .broker
        .subscribe(&Channel::User("u".into()))
        .await
        .unwrap();
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
        // Byte for byte the protocol's frame (the Redis script builds it by hand).
        let expected = ServerFrame::Notification {
            notification: notification("u", &format!("n{i}")),
            unread: i.min(3),
        };
        assert_eq!(frame, expected.encode());
    }
    // Capped at 3, newest first; the data field is intact.
    let page = b
        .notifications("u", 10, None, false, ttl, usize::MAX)
        .await
        .unwrap();
    let (items, unread) = (page.items, page.unread);
    assert_eq!(
        items.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n4", "n3", "n2"]
    );
    assert_eq!(items[0], notification("u", "n4"));
    assert_eq!(unread, 3);
    let items = b
        .notifications("u", 1, Some("n4"), false, ttl, usize::MAX)
        .await
        .unwrap()
        .items;
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
    let expected = ServerFrame::NotificationsRead {
        ids: vec!["n3".into()],
        unread: 2,
    };
    assert_eq!(std::str::from_utf8(body).unwrap(), expected.encode());
    let items = b
        .notifications("u", 10, None, true, ttl, usize::MAX)
        .await
        .unwrap()
        .items;
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
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.inbox;
    let ttl = Duration::from_millis(300);
    b.notify(&[notification("u", "old")], 10, ttl)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.notify(&[notification("u", "new")], 10, ttl)
        .await
        .unwrap();
    let page = b
        .notifications("u", 10, None, false, ttl, usize::MAX)
        .await
        .unwrap();
    let (items, unread) = (page.items, page.unread);
    assert_eq!(
        items.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
    assert_eq!(unread, 1);
}

async fn restore_state_is_merged_and_taken_once(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.inbox;
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

async fn notification_pages_are_bounded_in_bytes(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.inbox;
    let ttl = Duration::from_secs(3600);
    let batch: Vec<Notification> = (1..=5)
        .map(|i| {
            let mut n = notification("u", &format!("n{i}"));
            n.body = "b".repeat(2000);
            n
        })
        .collect();
    for n in &batch {
        b.notify(std::slice::from_ref(n), 10, ttl).await.unwrap();
    }
    let page = b
        .notifications("u", 10, None, false, ttl, 5000)
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["n5", "n4"],
        "the newest that fit in 5000 bytes"
    );
    assert!(page.more);
    assert_eq!(page.unread, 5);
    let page = b
        .notifications("u", 2, None, false, ttl, 1 << 20)
        .await
        .unwrap();
    assert!(!page.more);
}

crate::suite!(
    notification_pages_are_bounded_in_bytes,
    notifications_are_capped_listed_marked_and_published,
    notifications_expire,
    restore_state_is_merged_and_taken_once
);
